"""The fast kernel backends (Cython, Numba) against the NumPy reference, and the one switch that picks them.

Every kernel of every backend must give the reference's values on generated
shapes: non-square kernels, strides 1–3, asymmetric padding, batch 1,
channels 1 and 256, and inputs that are C-contiguous, channels-last or
strided views.  float32 must agree to 1e-5 relative, float64 to 1e-12
(``im2col``, the pooling forward and its indices must agree exactly: they only
copy and compare).  A backend that is not importable here is skipped with the
reason.  Run them alone with ``python -m pytest -m kernels``.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimtl import kernels
from minimtl.kernels import numpy_backend as reference
from minimtl.kernels.compiled import PARALLEL_MIN_VALUES as SHIPPED_PARALLEL_MIN_VALUES

pytestmark = pytest.mark.kernels

FAST_BACKENDS = ["cython", "numba"]
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}
LAYOUTS = ["contiguous", "channels_last", "strided"]
EXAMPLES = settings(deadline=None, max_examples=30)


def load_backend(name: str):
    """The backend module, or skip the test saying why it is unavailable."""
    try:
        return importlib.import_module(kernels.BACKEND_MODULES[name])
    except ImportError as error:
        pytest.skip(f"kernel backend {name!r} is not importable here ({error}); "
                    "build the Cython one with `pip install -e .` or `python setup.py build_ext --inplace`")


@pytest.fixture(scope="module", params=[(name, threading) for name in FAST_BACKENDS for threading in ("auto", "threaded")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def backend(request):
    """A fast backend, with its thread cut-off as shipped ("auto": these small shapes run on one thread) or
    disabled ("threaded": every loop runs its parallel version), so both compiled paths are compared."""
    from minimtl.kernels import compiled

    name, threading = request.param
    module = load_backend(name)
    previous = compiled.PARALLEL_MIN_VALUES
    compiled.PARALLEL_MIN_VALUES = 0 if threading == "threaded" else previous
    yield module
    compiled.PARALLEL_MIN_VALUES = previous


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def in_layout(values: np.ndarray, layout: str) -> np.ndarray:
    """The same (N, C, H, W) values stored C-contiguous, channels-last, or as a strided view of a bigger array."""
    if layout == "contiguous":
        return np.ascontiguousarray(values)
    if layout == "channels_last":
        return np.ascontiguousarray(values.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    bigger = np.zeros(tuple(2 * s for s in values.shape), dtype=values.dtype)
    view = bigger[:, :, ::2, ::2][: values.shape[0], : values.shape[1]]
    view[...] = values
    return view


def assert_close(actual: np.ndarray, expected: np.ndarray, dtype) -> None:
    """Equal to ``TOLERANCE[dtype]`` relative to the size of the values (sums in another order may differ in rounding)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    tolerance = TOLERANCE[dtype]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * scale)


# ---------------------------------------------------------------- geometry
@st.composite
def conv_cases(draw):
    """(x_shape, kernel, stride, padding, seed) with at least one output pixel; channels often 1 or 256."""
    channels = draw(st.sampled_from([1, 1, 2, 3, 5, 256]))
    batch = 1 if channels == 256 else draw(st.sampled_from([1, 1, 2, 3]))
    max_side = 5 if channels == 256 else 8
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    height = draw(st.integers(max(1, kernel[0] - sum(padding[0])), max_side))
    width = draw(st.integers(max(1, kernel[1] - sum(padding[1])), max_side))
    return (batch, channels, height, width), kernel, stride, padding, draw(st.integers(0, 2**32 - 1))


@st.composite
def pool_cases(draw):
    """Like ``conv_cases`` but every window holds at least one real pixel (padding < kernel), as pooling layers ensure."""
    channels = draw(st.sampled_from([1, 1, 2, 3, 5, 256]))
    batch = 1 if channels == 256 else draw(st.sampled_from([1, 1, 2, 3]))
    max_side = 5 if channels == 256 else 8
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in kernel)
    height = draw(st.integers(kernel[0], max_side))
    width = draw(st.integers(kernel[1], max_side))
    return (batch, channels, height, width), kernel, stride, padding, draw(st.integers(0, 2**32 - 1))


# ------------------------------------------------------------------ im2col
@EXAMPLES
@given(case=conv_cases(), layout=st.sampled_from(LAYOUTS))
def test_im2col_equals_reference(backend, dtype, case, layout):
    shape, kernel, stride, padding, seed = case
    x = in_layout(np.random.default_rng(seed).standard_normal(shape).astype(dtype), layout)
    before = x.copy()
    expected = reference.im2col(x, kernel, stride, padding)
    actual = backend.im2col(x, kernel, stride, padding)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)  # a pure copy: exact
    np.testing.assert_array_equal(x, before)  # input untouched


@EXAMPLES
@given(case=conv_cases(), cols_order=st.sampled_from(["C", "F", "strided"]))
def test_col2im_equals_reference(backend, dtype, case, cols_order):
    shape, kernel, stride, padding, seed = case
    n, c, h, w = shape
    oh = reference.output_size(h, kernel[0], stride[0], *padding[0])
    ow = reference.output_size(w, kernel[1], stride[1], *padding[1])
    values = np.random.default_rng(seed).standard_normal((c * kernel[0] * kernel[1], n * oh * ow)).astype(dtype)
    if cols_order == "strided":
        cols = np.zeros((values.shape[0], 2 * values.shape[1]), dtype=dtype)[:, ::2]
        cols[...] = values
    else:
        cols = np.array(values, order=cols_order)
    expected = reference.col2im(values, shape, kernel, stride, padding)
    actual = backend.col2im(cols, shape, kernel, stride, padding)
    assert_close(actual, expected, dtype)
    np.testing.assert_array_equal(cols, values)


@EXAMPLES
@given(case=conv_cases(), layout=st.sampled_from(LAYOUTS))
def test_col2im_is_the_adjoint_of_im2col(backend, case, layout):
    """<im2col(x), g> = <x, col2im(g)>: the backward really is the transpose of the forward (float64)."""
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = in_layout(rng.standard_normal(shape), layout)
    cols = backend.im2col(x, kernel, stride, padding)
    g = rng.standard_normal(cols.shape)
    left = float(np.sum(cols * g))
    right = float(np.sum(x * backend.col2im(g, shape, kernel, stride, padding)))
    assert left == pytest.approx(right, rel=1e-10, abs=1e-10)


# ------------------------------------------------------------- max-pooling
def pooling_input(shape, seed, dtype, ties: bool) -> np.ndarray:
    """Normal values, or (``ties``) small integers so that windows often hold equal maxima."""
    rng = np.random.default_rng(seed)
    values = rng.integers(-2, 3, size=shape) if ties else rng.standard_normal(shape)
    return values.astype(dtype)


@EXAMPLES
@given(case=pool_cases(), layout=st.sampled_from(LAYOUTS), ties=st.booleans())
def test_max_pool2d_forward_equals_reference(backend, dtype, case, layout, ties):
    shape, kernel, stride, padding, seed = case
    x = in_layout(pooling_input(shape, seed, dtype, ties), layout)
    before = x.copy()
    expected_out, expected_indices = reference.max_pool2d_forward(x, kernel, stride, padding)
    out, indices = backend.max_pool2d_forward(x, kernel, stride, padding)
    assert out.dtype == x.dtype and indices.dtype == np.int64
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(indices, expected_indices)  # ties: the first maximum (row-major in the window) wins
    np.testing.assert_array_equal(x, before)


@EXAMPLES
@given(case=pool_cases(), layout=st.sampled_from(LAYOUTS), grad_layout=st.sampled_from(LAYOUTS))
def test_max_pool2d_backward_equals_reference(backend, dtype, case, layout, grad_layout):
    shape, kernel, stride, padding, seed = case
    x = in_layout(pooling_input(shape, seed, dtype, ties=False), layout)
    _, indices = backend.max_pool2d_forward(x, kernel, stride, padding)  # keeps the backend's own layout
    _, reference_indices = reference.max_pool2d_forward(x, kernel, stride, padding)
    grad_out = in_layout(np.random.default_rng(seed + 1).standard_normal(indices.shape).astype(dtype), grad_layout)
    expected = reference.max_pool2d_backward(grad_out, reference_indices, shape)
    actual = backend.max_pool2d_backward(grad_out, indices, shape)
    assert_close(actual, expected, dtype)
    # The reference's own (planar) indices must work too.
    assert_close(backend.max_pool2d_backward(grad_out, reference_indices, shape), expected, dtype)


def test_max_pool2d_with_minus_infinity_and_nan_follows_reference(backend):
    """-inf inputs and NaN (never a maximum under ``>``) give the reference's values and indices."""
    x = np.array([[[[-np.inf, -np.inf, 1.0], [np.nan, 2.0, np.nan], [-np.inf, 0.5, -np.inf]]]], dtype=np.float32)
    for layout in LAYOUTS:
        expected = reference.max_pool2d_forward(x, (2, 2), (1, 1), ((0, 0), (0, 0)))
        actual = backend.max_pool2d_forward(in_layout(x, layout), (2, 2), (1, 1), ((0, 0), (0, 0)))
        np.testing.assert_array_equal(actual[0], expected[0])
        np.testing.assert_array_equal(actual[1], expected[1])


# ------------------------------------------------------- shifted products
@st.composite
def shifted_cases(draw):
    """(rows, columns C, features F, offsets, count, seed): up to 9 taps reaching up to 40 rows, C often 1 or 256."""
    channels = draw(st.sampled_from([1, 2, 3, 16, 256]))
    features = draw(st.sampled_from([1, 2, 5, 32]))
    offsets = draw(st.lists(st.integers(0, 40), min_size=1, max_size=9))
    count = draw(st.integers(0, 1100))  # blocks of 2¹⁹ / (C·F) rows, 64 for C = 256 and F = 32: one block or many
    rows = count + max(offsets) + draw(st.integers(0, 3))
    return rows, channels, features, offsets, count, draw(st.integers(0, 2**32 - 1))


@EXAMPLES
@given(case=shifted_cases())
def test_shifted_matmul_and_its_weight_gradient_equal_reference(backend, dtype, case):
    rows_count, channels, features, offsets, count, seed = case
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((rows_count, channels)).astype(dtype)
    weights = rng.standard_normal((len(offsets), channels, features)).astype(dtype)
    grad = rng.standard_normal((count, features)).astype(dtype)
    assert_close(backend.shifted_matmul(rows, weights, offsets, count), reference.shifted_matmul(rows, weights, offsets, count),
                 dtype)
    assert_close(backend.shifted_matmul_grad_weights(rows, grad, offsets),
                 reference.shifted_matmul_grad_weights(rows, grad, offsets), dtype)


@pytest.mark.parametrize("name", FAST_BACKENDS)
def test_shifted_matmul_in_many_small_blocks_with_a_short_last_one(name, monkeypatch):
    """The smallest blocks (32 rows), 1001 rows: 31 whole blocks and a short one, all adding every tap."""
    module = load_backend(name)
    from minimtl.kernels import compiled

    monkeypatch.setattr(compiled, "SHIFTED_BLOCK_MULTIPLY_ADDS", 1)
    assert compiled.shifted_tile_rows(3, 4) == 32
    rng = np.random.default_rng(2)
    rows, weights, grad = rng.standard_normal((1030, 3)), rng.standard_normal((4, 3, 4)), rng.standard_normal((1001, 4))
    offsets = [0, 1, 28, 29]
    assert_close(module.shifted_matmul(rows, weights, offsets, 1001), reference.shifted_matmul(rows, weights, offsets, 1001),
                 np.float64)
    assert_close(module.shifted_matmul_grad_weights(rows, grad, offsets),
                 reference.shifted_matmul_grad_weights(rows, grad, offsets), np.float64)


@EXAMPLES
@given(rows=st.integers(0, 300), channels=st.sampled_from([1, 2, 3, 16, 256]), seed=st.integers(0, 2**32 - 1))
def test_batch_norm_relu_kernels_equal_reference(backend, dtype, rows, channels, seed):
    """Forward, the two channel sums and the input gradient; about half the pixels pass the ReLU."""
    rng = np.random.default_rng(seed)
    x, grad = (rng.standard_normal((rows, channels)).astype(dtype) for _ in range(2))
    mean, shift, mean_g, mean_gx = (rng.standard_normal(channels).astype(dtype) for _ in range(4))
    scale, inv_std = (rng.uniform(0.5, 2.0, channels).astype(dtype) for _ in range(2))
    y = reference.batch_norm_relu_forward(x, mean, scale, shift)
    assert_close(backend.batch_norm_relu_forward(x, mean, scale, shift), y, dtype)
    for fast, slow in zip(backend.batch_norm_relu_sums(grad, x, y, mean, inv_std),
                          reference.batch_norm_relu_sums(grad, x, y, mean, inv_std)):
        assert fast.dtype == np.float64
        assert_close(fast, slow, np.float32 if dtype == np.float32 else np.float64)
    assert_close(backend.batch_norm_relu_backward(grad, x, y, mean, inv_std, mean_g, mean_gx, scale),
                 reference.batch_norm_relu_backward(grad, x, y, mean, inv_std, mean_g, mean_gx, scale), dtype)


# ---------------------------------------------------------- Winograd tiles
@st.composite
def winograd_cases(draw):
    """(tile m, images, tiles TH, TW, channels C, features F, seed); C and F around the compiled loops' 64-channel blocks."""
    widths = st.sampled_from([1, 2, 3, 16, 63, 64, 65, 256])
    return (draw(st.sampled_from(reference.WINOGRAD_TILES)), draw(st.integers(1, 3)), draw(st.integers(1, 4)),
            draw(st.integers(1, 4)), draw(widths), draw(widths), draw(st.integers(0, 2**32 - 1)))


@EXAMPLES
@given(case=winograd_cases())
def test_winograd_transforms_equal_reference(backend, dtype, case):
    """The four tile transforms of F(2×2, 3×3) and F(4×4, 3×3), from padded images to the tile domain and back,
    and their gradients."""
    tile, m, th, tw, channels, features, seed = case
    positions = (tile + 2) ** 2
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, tile * th + 2, tile * tw + 2, channels)).astype(dtype)
    products = rng.standard_normal((positions, m * th * tw, features)).astype(dtype)
    grad = rng.standard_normal((m, tile * th, tile * tw, features)).astype(dtype)
    grad_tiles = rng.standard_normal((positions, m * th * tw, channels)).astype(dtype)
    assert_close(backend.winograd_input_transform(x, tile), reference.winograd_input_transform(x, tile), dtype)
    assert_close(backend.winograd_output_transform(products, (th, tw), tile=tile),
                 reference.winograd_output_transform(products, (th, tw), tile=tile), dtype)
    assert_close(backend.winograd_output_transform_grad(grad, tile), reference.winograd_output_transform_grad(grad, tile),
                 dtype)
    assert_close(backend.winograd_input_transform_grad(grad_tiles, (th, tw), tile),
                 reference.winograd_input_transform_grad(grad_tiles, (th, tw), tile), dtype)


@pytest.mark.parametrize("tile", reference.WINOGRAD_TILES)
@pytest.mark.parametrize("name", ["numpy"] + FAST_BACKENDS)
def test_winograd_output_transform_writes_into_a_given_array(name, tile):
    module = reference if name == "numpy" else load_backend(name)
    products = np.random.default_rng(4).standard_normal(((tile + 2) ** 2, 2 * 3 * 2, 5))
    target = np.full((4, 3 * tile, 2 * tile, 5), -7.0)
    module.winograd_output_transform(products, (3, 2), out=target[1:3], tile=tile)
    np.testing.assert_allclose(target[1:3], reference.winograd_output_transform(products, (3, 2), tile=tile), rtol=1e-12)
    assert (target[0] == -7).all() and (target[3] == -7).all()


@pytest.mark.parametrize("tile", reference.WINOGRAD_TILES)
def test_winograd_reference_gradients_are_the_adjoints_of_the_transforms(tile):
    """⟨T x, y⟩ = ⟨x, Tᵀ y⟩ for the input and the output transform: what makes them each other's backward."""
    rng = np.random.default_rng(5)
    positions = (tile + 2) ** 2
    x, v = rng.standard_normal((2, 3 * tile + 2, 2 * tile + 2, 3)), rng.standard_normal((positions, 2 * 3 * 2, 3))
    np.testing.assert_allclose(np.vdot(reference.winograd_input_transform(x, tile), v),
                               np.vdot(x, reference.winograd_input_transform_grad(v, (3, 2), tile)), rtol=1e-12)
    products, y = rng.standard_normal((positions, 2 * 3 * 2, 4)), rng.standard_normal((2, 3 * tile, 2 * tile, 4))
    np.testing.assert_allclose(np.vdot(reference.winograd_output_transform(products, (3, 2), tile=tile), y),
                               np.vdot(products, reference.winograd_output_transform_grad(y, tile)), rtol=1e-12)


@pytest.mark.parametrize("tile", reference.WINOGRAD_TILES)
def test_winograd_reference_is_a_3_tap_filter_on_one_tile(tile):
    """One α×α tile of one channel, one filter: Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A is the m×m cross-correlation of d with g.

    This is what checks the matrices Bᵀ, G and Aᵀ themselves (for F(4×4, 3×3) their entries are easy to mistype).
    """
    rng = np.random.default_rng(6)
    alpha = tile + 2
    d, g = rng.standard_normal((alpha, alpha)), rng.standard_normal((3, 3))
    big_g = reference.winograd_matrices(tile)[1]
    u = big_g @ g @ big_g.T
    v = reference.winograd_input_transform(d.reshape(1, alpha, alpha, 1), tile)  # (α², 1, 1)
    y = reference.winograd_output_transform(v * u.reshape(alpha**2, 1, 1), (1, 1), tile=tile)[0, :, :, 0]
    direct = [[np.sum(d[i : i + 3, j : j + 3] * g) for j in range(tile)] for i in range(tile)]
    np.testing.assert_allclose(y, direct, rtol=1e-12, atol=1e-13)


@EXAMPLES
@given(rows=st.integers(0, 300), channels=st.sampled_from([1, 2, 3, 16, 256]), seed=st.integers(0, 2**32 - 1))
def test_channel_sums_equal_reference(backend, dtype, rows, channels, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, channels)) * 3 + 5).astype(dtype)
    shift = rng.standard_normal(channels).astype(dtype)
    for fast, slow in zip(backend.channel_sums(x, shift), reference.channel_sums(x, shift)):
        assert fast.dtype == np.float64 and fast.shape == (channels,)
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(slow).max(initial=0))))


@pytest.mark.parametrize("name", ["numpy"] + FAST_BACKENDS)
def test_batch_norm_relu_kernels_write_into_a_given_array(name):
    """``out=``: the forward and the input gradient land in the caller's rows (a slice of a bigger array here)."""
    module = reference if name == "numpy" else load_backend(name)
    rng = np.random.default_rng(3)
    x, grad = rng.standard_normal((10, 4)), rng.standard_normal((10, 4))
    mean, shift, scale, inv_std = rng.standard_normal(4), rng.standard_normal(4), np.full(4, 2.0), np.full(4, 0.5)
    y = reference.batch_norm_relu_forward(x, mean, scale, shift)
    target = np.full((14, 4), -7.0)
    assert module.batch_norm_relu_forward(x, mean, scale, shift, out=target[2:12]) is not None
    np.testing.assert_allclose(target[2:12], y, rtol=1e-12)
    assert (target[:2] == -7).all() and (target[12:] == -7).all()
    expected = reference.batch_norm_relu_backward(grad, x, y, mean, inv_std, shift, mean, scale)
    module.batch_norm_relu_backward(grad, x, y, mean, inv_std, shift, mean, scale, out=target[4:14])
    np.testing.assert_allclose(target[4:14], expected, rtol=1e-12)
    if name != "numpy":
        with pytest.raises(ValueError, match="out must be"):
            module.batch_norm_relu_forward(x, mean, scale, shift, out=np.empty((10, 4), np.float32))


def test_shifted_matmul_reference_is_the_sum_of_shifted_products():
    """The reference itself, on numbers small enough to check by hand."""
    rows = np.arange(8.0).reshape(4, 2)  # rows [0 1], [2 3], [4 5], [6 7]
    weights = np.stack([np.eye(2), 2 * np.eye(2)])  # tap 0 reads row p, tap 1 reads row p + 2, twice
    out = reference.shifted_matmul(rows, weights, [0, 2], 2)
    np.testing.assert_array_equal(out, [[0 + 8, 1 + 10], [2 + 12, 3 + 14]])
    grad = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(reference.shifted_matmul_grad_weights(rows, grad, [0, 2]),
                                  [rows[0:2].T @ grad, rows[2:4].T @ grad])


# ------------------------------------------------------------ the contract
@pytest.mark.parametrize("name", ["numpy"] + FAST_BACKENDS)
def test_every_backend_offers_the_whole_contract_and_its_flags(name):
    """Each backend module has every function of ``compiled.CONTRACT`` and every ``FAST_*`` flag: the reference with
    its own functions and the flags False, the compiled ones with ``CompiledBackend``'s methods and the flags True."""
    from minimtl.kernels import compiled

    module = reference if name == "numpy" else load_backend(name)
    for function in compiled.CONTRACT:
        assert callable(getattr(module, function, None)), f"{name} backend has no {function}"
    for flag in compiled.FAST_FLAGS:
        assert getattr(module, flag) is (name != "numpy"), f"{name} backend: {flag}"
    if name != "numpy":
        assert sorted(module.__all__) == sorted(compiled.CONTRACT + compiled.FAST_FLAGS)
        assert module.im2col.__self__.__class__ is compiled.CompiledBackend


# ------------------------------------------------------------ bad arguments
def test_fast_kernels_reject_bad_input_clearly(backend):
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.im2col(x.astype(np.int32), (3, 3), (1, 1), ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        backend.im2col(x[0], (3, 3), (1, 1), ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="does not fit"):
        backend.im2col(x, (6, 3), (1, 1), ((0, 0), (0, 0)))
    with pytest.raises(ValueError, match="at least 1"):
        backend.max_pool2d_forward(x, (2, 2), (0, 1), ((0, 0), (0, 0)))
    with pytest.raises(ValueError, match="expected"):
        backend.col2im(np.zeros((18, 15), dtype=np.float32), x.shape, (3, 3), (1, 1), ((1, 1), (1, 1)))
    out, indices = backend.max_pool2d_forward(x, (2, 2), (2, 2), ((0, 0), (0, 0)))
    with pytest.raises(ValueError, match=r"lie in \[0, 16\)"):
        backend.max_pool2d_backward(out, indices + 100, x.shape)
    with pytest.raises(TypeError, match="int64"):
        backend.max_pool2d_backward(out, indices.astype(np.int32), x.shape)
    rows, weights = np.zeros((10, 3), np.float32), np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        backend.shifted_matmul(rows, weights, [0, 5], 6)
    with pytest.raises(ValueError, match="one offset per weight"):
        backend.shifted_matmul(rows, weights, [0], 6)
    with pytest.raises(ValueError, match=r"\(K, C, F\)"):
        backend.shifted_matmul(rows, weights[:, :2], [0, 1], 6)
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.shifted_matmul(rows.astype(np.int64), weights.astype(np.int64), [0, 1], 6)
    with pytest.raises(ValueError, match="non-negative"):
        backend.shifted_matmul_grad_weights(rows, np.zeros((6, 4), np.float32), [-1, 1])
    with pytest.raises(ValueError, match=r"2·TH \+ 2"):
        backend.winograd_input_transform(np.zeros((1, 5, 6, 2), np.float32))  # 5 rows: no whole number of tiles
    with pytest.raises(ValueError, match=r"4·TH \+ 2"):
        backend.winograd_input_transform(np.zeros((1, 8, 6, 2), np.float32), 4)  # 8 rows: 2·3 + 2, but not 4·TH + 2
    with pytest.raises(ValueError, match="tile must be one of"):
        backend.winograd_output_transform_grad(np.zeros((1, 6, 6, 2), np.float32), 3)
    with pytest.raises(ValueError, match=r"\(16, m·TH·TW, K\)"):
        backend.winograd_output_transform(np.zeros((16, 7, 2), np.float32), (2, 2))  # 7 tiles are not m·2·2
    with pytest.raises(ValueError, match=r"\(36, m·TH·TW, K\)"):
        backend.winograd_input_transform_grad(np.zeros((16, 4, 2), np.float32), (2, 2), 4)  # F(2×2)'s 16 positions
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.winograd_output_transform_grad(np.zeros((1, 2, 2, 3), np.int32))
    with pytest.raises(ValueError, match="out must be"):
        backend.winograd_output_transform(np.zeros((16, 4, 2), np.float32), (2, 2), out=np.zeros((1, 4, 4, 2)))
    pixels, channel = np.zeros((5, 3), np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="pixel rows"):
        backend.batch_norm_relu_sums(pixels, pixels[:4], pixels, channel, channel)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        backend.batch_norm_relu_forward(pixels, channel, channel[:2], channel)
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.batch_norm_relu_forward(pixels.astype(np.int32), channel, channel, channel)


# ------------------------------------------------------------ threading
def test_small_work_runs_on_one_thread_and_big_work_on_the_default():
    from minimtl.kernels.compiled import PARALLEL_MIN_VALUES, thread_count

    assert thread_count(images=1, values=10**9) == 1  # one image: nothing to split
    assert thread_count(images=64, values=64 * 3 * 24 * 24) == 1  # an MTCNN R-Net batch's first im2col: tiny
    assert thread_count(images=8, values=PARALLEL_MIN_VALUES) == 0
    assert thread_count(images=128, values=128 * 2304 * 288) == 0  # a BKNet first-block im2col


@pytest.mark.parametrize("name", FAST_BACKENDS)
def test_the_cut_off_picks_the_serial_or_parallel_loop(name, monkeypatch):
    """Each compiled loop receives ``threads=1`` below the cut-off and ``threads=0`` above it."""
    module = load_backend(name)
    from minimtl.kernels import compiled

    # The module-scoped ``backend`` fixture may still hold its "threaded" cut-off of 0 when this test runs after it
    # (pytest keeps a module-scoped fixture until its parameter changes): start from the cut-off as shipped.
    monkeypatch.setattr(compiled, "PARALLEL_MIN_VALUES", SHIPPED_PARALLEL_MIN_VALUES)
    seen = []
    loops = module.im2col.__self__.loops  # the CompiledBackend behind the module's functions
    original = loops.im2col_channels_last

    def spy(*args, threads):
        seen.append(threads)
        return original(*args, threads=threads)

    monkeypatch.setattr(loops, "im2col_channels_last", spy, raising=False)
    x = np.zeros((4, 2, 6, 6), dtype=np.float32).transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)
    module.im2col(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    monkeypatch.setattr(compiled, "PARALLEL_MIN_VALUES", 0)
    module.im2col(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    assert seen == [1, 0]


# ------------------------------------------------------ through the layers
@pytest.mark.parametrize("name", FAST_BACKENDS)
def test_conv_and_pool_layers_give_the_same_gradients_on_every_backend(name):
    """conv2d → relu → max_pool2d, forward and backward in float64, equal under the fast backend and the reference."""
    load_backend(name)
    from minimtl import functional as F
    from minimtl.autograd import Tensor

    rng = np.random.default_rng(7)
    x_values, w_values, b_values = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    upstream = rng.standard_normal((2, 4, 5, 4))

    def run(backend_name):
        previous = kernels.backend_name()
        kernels.set_backend(backend_name)
        try:
            x, w, b = (Tensor(v.copy(), requires_grad=True) for v in (x_values, w_values, b_values))
            y = F.max_pool2d(F.relu(F.conv2d(x, w, b, stride=1, padding="same")), 2, ceil_mode=True)
            y.backward(upstream)
            return y.data, x.grad, w.grad, b.grad
        finally:
            kernels.set_backend(previous)

    for fast, slow in zip(run(name), run("numpy")):
        assert_close(np.asarray(fast), np.asarray(slow), np.float64)


# --------------------------------------------------------- choosing backends
@pytest.fixture
def restore_backend():
    previous = kernels.backend_name()
    yield
    kernels.set_backend(previous)


def test_set_backend_switches_the_module_in_use(restore_backend):
    assert kernels.set_backend("numpy") == "numpy"
    assert kernels.get_backend() is reference and kernels.backend_name() == "numpy"
    for name in kernels.available_backends():
        assert kernels.set_backend(name) == name
        assert kernels.get_backend().__name__ == kernels.BACKEND_MODULES[name]


def test_unknown_backend_name_is_a_value_error(restore_backend):
    with pytest.raises(ValueError, match="unknown kernel backend 'torch'"):
        kernels.set_backend("torch")


def test_missing_backend_falls_back_with_one_warning(restore_backend, monkeypatch):
    monkeypatch.setitem(kernels.BACKEND_MODULES, "cython", "minimtl.kernels.no_such_extension")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = kernels.set_backend("cython")
    assert chosen == kernels.PREFERENCE[kernels.PREFERENCE.index("cython") + 1] or chosen == "numpy"
    assert len(caught) == 1 and "'cython' unavailable" in str(caught[0].message)
    assert "\n" not in str(caught[0].message)


def test_preference_lists_every_backend_fastest_first_with_numpy_last():
    assert sorted(kernels.PREFERENCE) == sorted(kernels.BACKEND_MODULES)
    assert kernels.PREFERENCE[-1] == "numpy"


def test_environment_variable_chooses_the_backend_at_import():
    environment = dict(os.environ, MINIMTL_BACKEND="numpy")
    result = subprocess.run([sys.executable, "-c", "import minimtl.kernels as k; print(k.backend_name())"],
                            env=environment, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "numpy"
