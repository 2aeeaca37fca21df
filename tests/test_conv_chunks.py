"""conv2d cut into chunks of images: the same values and gradients as one whole-batch im2col.

``Conv2dFunction`` unfolds ``conv_chunk_size(...)`` images at a time and
recomputes the columns in the backward pass instead of keeping them.  These
tests force every chunk size from one image to the whole batch (through
``functional.CONV_CHUNK_BYTES``) on odd batch sizes and batch 1, in float64,
on every importable kernel backend, and compare forward and all three
gradients against the direct definition in ``tests/test_conv2d.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minimtl import functional as F
from minimtl import kernels
from minimtl.autograd import Tensor
from strategies import random_array
from test_conv2d import direct_conv2d

pytestmark = pytest.mark.layers


@pytest.fixture(params=["numpy", "numba", "cython"])
def backend(request):
    if request.param not in kernels.available_backends():
        pytest.skip(f"kernel backend {request.param!r} is not importable here")
    previous = kernels.backend_name()
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend(previous)


def direct_gradients(x, weight, stride, padding, upstream):
    """grad_x and grad_weight by the definition: each output value's upstream gradient times what it touched."""
    (sh, sw), ((pt, pb), (pl, pr)) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    grad_xp = np.zeros_like(xp)
    grad_w = np.zeros_like(weight)
    _, _, kh, kw = weight.shape
    n, f, oh, ow = upstream.shape
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                window = (b, slice(None), slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
                g = upstream[b, :, i, j]  # (F,)
                grad_w += g[:, None, None, None] * xp[window]
                grad_xp[window] += np.tensordot(g, weight, axes=1)
    return grad_xp[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]], grad_w


def run_conv(x_values, w_values, b_values, stride, padding, upstream):
    x, w, b = (Tensor(v.copy(), requires_grad=True) for v in (x_values, w_values, b_values))
    y = F.conv2d(x, w, b, stride, padding)
    y.backward(upstream)
    return y.data, x.grad, w.grad, b.grad


# The fixtures hold for every example: the backend stays chosen, and each example sets its own chunk budget.
@settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.sampled_from([1, 3, 5, 7]), chunk_images=st.integers(1, 8), channels=st.integers(1, 3),
       kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)), stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pad=st.integers(0, 1), seed=st.integers(0, 2**16), channels_last=st.booleans())
def test_every_chunk_size_gives_the_definition(backend, monkeypatch, batch, chunk_images, channels, kernel, stride,
                                               pad, seed, channels_last):
    """Chunks of 1 … 8 images (batches 1, 3, 5, 7: the last chunk is often short) equal the direct convolution."""
    size = 6
    x = random_array((batch, channels, size, size), seed)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    weight = random_array((2, channels, *kernel), seed + 1)
    bias = random_array((2,), seed + 2)
    padding = ((pad, pad), (pad, pad))
    oh = (size + 2 * pad - kernel[0]) // stride[0] + 1
    ow = (size + 2 * pad - kernel[1]) // stride[1] + 1
    per_image = channels * kernel[0] * kernel[1] * oh * ow * 8
    monkeypatch.setattr(F, "CONV_CHUNK_BYTES", per_image * chunk_images)
    assert F.conv_chunk_size(x.shape, kernel, (oh, ow), 8) == min(batch, chunk_images)
    upstream = random_array((batch, 2, oh, ow), seed + 3)

    y, grad_x, grad_w, grad_b = run_conv(x, weight, bias, stride, (pad, pad), upstream)
    np.testing.assert_allclose(y, direct_conv2d(x, weight, bias, stride, padding), rtol=1e-12, atol=1e-12)
    expected_x, expected_w = direct_gradients(x, weight, stride, padding, upstream)
    np.testing.assert_allclose(grad_x, expected_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_w, expected_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_b, upstream.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 2, 9])
def test_chunked_equals_whole_batch_in_float32(backend, monkeypatch, batch):
    """float32 through a BKNet-sized layer (32 → 32, 3×3 same): one image per chunk vs the whole batch at once."""
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 32, 12, 12)).astype(np.float32)
    weight = (rng.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)
    upstream = rng.standard_normal((batch, 32, 12, 12)).astype(np.float32)
    monkeypatch.setattr(F, "CONV_CHUNK_BYTES", 2**40)
    whole = run_conv(x, weight, bias, 1, "same", upstream)
    monkeypatch.setattr(F, "CONV_CHUNK_BYTES", 1)
    chunked = run_conv(x, weight, bias, 1, "same", upstream)
    for a, b in zip(chunked, whole):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def test_chunk_size_follows_the_column_bytes():
    # 32 channels, 3×3, 48×48 outputs in float32: 2,654,208 bytes of columns per image.
    per_image = 32 * 9 * 48 * 48 * 4
    assert F.conv_chunk_size((128, 32, 48, 48), (3, 3), (48, 48), 4, chunk_bytes=8 * per_image) == 8
    assert F.conv_chunk_size((128, 32, 48, 48), (3, 3), (48, 48), 4, chunk_bytes=8 * per_image - 1) == 7
    # Fewer channels or pixels: more images per chunk, never more than the batch, never fewer than one.
    assert F.conv_chunk_size((128, 256, 6, 6), (3, 3), (6, 6), 4, chunk_bytes=8 * per_image) == 64  # 8 × 8 times smaller
    assert F.conv_chunk_size((128, 256, 6, 6), (3, 3), (6, 6), 4, chunk_bytes=1000 * per_image) == 128
    assert F.conv_chunk_size((5, 1, 48, 48), (3, 3), (48, 48), 4, chunk_bytes=2**30) == 5
    assert F.conv_chunk_size((5, 512, 96, 96), (3, 3), (96, 96), 8, chunk_bytes=1) == 1
    # The default budget gives a BKNet first block a handful of images and the last block the whole batch.
    assert 2 <= F.conv_chunk_size((128, 32, 48, 48), (3, 3), (48, 48), 4) <= 16
    assert F.conv_chunk_size((128, 256, 6, 6), (3, 3), (6, 6), 4) >= 32


def test_backward_keeps_the_input_not_the_columns(backend):
    """What a convolution holds for its backward is its input and weight: no C·KH·KW-times-larger column matrix."""
    x = Tensor(np.random.default_rng(0).standard_normal((4, 8, 10, 10)).astype(np.float32), requires_grad=True)
    w = Tensor(np.random.default_rng(1).standard_normal((8, 8, 3, 3)).astype(np.float32), requires_grad=True)
    y = F.conv2d(x, w, None, 1, "same")
    saved = y._node.ctx.saved
    assert sum(a.nbytes for a in saved) == x.data.nbytes + w.data.nbytes
    assert any(np.shares_memory(a, x.data) for a in saved)
