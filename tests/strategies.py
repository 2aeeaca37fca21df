"""Shared hypothesis strategies: shapes and arrays for the op and kernel tests.

Conventions: a ``conv_geometry`` is a dict with batch ``n``, channels ``c``,
filters ``f``, image ``h, w``, kernel ``kh, kw``, stride ``sh, sw`` and
padding ``ph, pw``, drawn so that at least one output pixel exists.  Kernels
are often non-square, batch is often 1, padding goes up to 2.
"""
import numpy as np
from hypothesis import strategies as st

settings_fast = dict(deadline=None, max_examples=25)


@st.composite
def shapes(draw, min_dims=1, max_dims=4, max_side=5):
    return tuple(draw(st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims)))


@st.composite
def conv_geometry(draw, max_side=8, max_channels=3):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), max_side))
    w = draw(st.integers(max(1, kw - 2 * pw), max_side))
    return dict(n=draw(st.sampled_from([1, 1, 2, 3])), c=draw(st.integers(1, max_channels)), f=draw(st.integers(1, 3)),
                h=h, w=w, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw)


@st.composite
def pool_geometry(draw, max_side=8):
    """Pooling windows: kernel 1–3 (non-square), stride 1–3, padding at most half the kernel."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h, w = draw(st.integers(kh, max_side)), draw(st.integers(kw, max_side))
    return dict(n=draw(st.sampled_from([1, 2])), c=draw(st.integers(1, 3)), h=h, w=w, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw,
                ceil_mode=draw(st.booleans()))


def random_array(shape, seed, dtype=np.float64, noncontiguous=False):
    """Standard-normal array; with ``noncontiguous`` a strided view of a larger array (same values, not C-contiguous)."""
    rng = np.random.default_rng(seed)
    if not noncontiguous:
        return rng.standard_normal(shape).astype(dtype)
    big = rng.standard_normal(tuple(s * 2 for s in shape)).astype(dtype)
    view = big[tuple(slice(None, None, 2) for _ in shape)]
    assert not view.flags.c_contiguous or view.size <= 1
    return view


def distinct_array(shape, seed, dtype=np.float64):
    """Values that differ pairwise by at least 1e-3: no ties for max-pooling, no kinks within a finite-difference step."""
    rng = np.random.default_rng(seed)
    values = rng.permutation(np.prod(shape, dtype=int)) * 1e-2 + rng.uniform(0, 1e-3)
    return (values - values.mean()).reshape(shape).astype(dtype)
