"""conv2d cut into chunks of images: the same values and gradients as one whole-batch im2col.

``Conv2dFunction`` unfolds ``conv_chunk_size(...)`` images at a time and
recomputes the columns in the backward pass instead of keeping them.  These
tests force every chunk size from one image to the whole batch (through
``minimtl.conv.settings(chunk_bytes=...)``) on odd batch sizes and batch 1, in
float64, on every importable kernel backend, and compare forward and all three
gradients against the direct definition in ``minimtl/conv/reference.py``, and
every algorithm of ``minimtl.conv.ALGORITHMS`` against ``ReferenceConv2d``.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minimtl import conv
from minimtl import functional as F
from minimtl import kernels
from minimtl.autograd import Tensor
from minimtl.conv import direct_conv2d
from minimtl.conv import direct_conv2d_gradients as direct_gradients
from strategies import conv_geometry, random_array

pytestmark = pytest.mark.layers


@pytest.fixture(params=["numpy", "numba", "cython"])
def backend(request):
    if request.param not in kernels.available_backends():
        pytest.skip(f"kernel backend {request.param!r} is not importable here")
    previous = kernels.backend_name()
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend(previous)


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
@pytest.mark.parametrize("method", ["im2col", "shifted", "winograd", "winograd4"])
def test_every_chunk_size_gives_the_definition(backend, method, batch, chunk_images, channels, kernel, stride,
                                               pad, seed, channels_last):
    """Chunks of 1 … 8 images (batches 1, 3, 5, 7: the last chunk is often short) equal the direct convolution,
    by im2col, by shifted products (stride 1; at stride 2 that falls back to im2col) and by Winograd tiles of 2×2
    and 4×4 outputs (3×3 and stride 1; otherwise im2col)."""
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
    grid = conv.PaddedGrid((size, size), kernel, padding)
    tiling = conv.WinogradTiles((size, size), padding, 4 if method == "winograd4" else 2)
    winograd_bytes = tiling.multiplications(1) * max(channels, 2) * 8 * chunk_images
    budgets = {"im2col": per_image * chunk_images, "shifted": grid.hp * grid.wp * max(channels, 2) * 8 * chunk_images,
               "winograd": winograd_bytes, "winograd4": winograd_bytes}
    upstream = random_array((batch, 2, oh, ow), seed + 3)

    with conv.settings(method=method, chunk_bytes=budgets) as chosen:
        im2col_budget = chosen.chunk_bytes_for(conv.IM2COL)
        assert conv.conv_chunk_size(x.shape, kernel, (oh, ow), 8, im2col_budget) == min(batch, chunk_images)
        y, grad_x, grad_w, grad_b = run_conv(x, weight, bias, stride, (pad, pad), upstream)
    np.testing.assert_allclose(y, direct_conv2d(x, weight, bias, stride, padding), rtol=1e-12, atol=1e-12)
    expected_x, expected_w = direct_gradients(x, weight, stride, padding, upstream)
    np.testing.assert_allclose(grad_x, expected_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_w, expected_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_b, upstream.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(g=conv_geometry(), extra=st.tuples(*[st.integers(0, 1)] * 2), with_bias=st.booleans(),
       chunk_bytes=st.sampled_from([1, 2**40]), channels_last=st.booleans(), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("name", list(conv.ALGORITHMS))
def test_every_algorithm_equals_the_reference_function(backend, name, g, extra, with_bias, chunk_bytes, channels_last,
                                                       seed):
    """Each algorithm of ``minimtl.conv.ALGORITHMS`` (a new one is tested here without a new line) against
    ``ReferenceConv2d``: the output and the gradients of input, weight and bias for a random upstream gradient, in
    float64, one image per chunk or the whole batch, asymmetric padding; a geometry the algorithm does not fit is made
    to fit (a 3×3 kernel, stride 1)."""
    algorithm = conv.ALGORITHMS[name]
    kernel, stride = (g["kh"], g["kw"]), (g["sh"], g["sw"])
    if not algorithm.fits(kernel, stride):
        kernel, stride = (3, 3), (1, 1)
    padding = ((g["ph"], g["ph"] + extra[0]), (g["pw"], g["pw"] + extra[1]))
    assume(g["h"] + sum(padding[0]) >= kernel[0] and g["w"] + sum(padding[1]) >= kernel[1])
    x = random_array((g["n"], g["c"], g["h"], g["w"]), seed)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    weight = random_array((g["f"], g["c"], *kernel), seed + 1)
    bias = random_array((g["f"],), seed + 2) if with_bias else None

    def run(function):
        xt, wt = Tensor(x.copy(), requires_grad=True), Tensor(weight.copy(), requires_grad=True)
        bt = Tensor(bias.copy(), requires_grad=True) if with_bias else None
        y = function(xt, wt, bt)
        y.backward(random_array(y.shape, seed + 3))
        return y.data, xt.grad, wt.grad, None if bt is None else bt.grad

    expected = run(lambda a, b, c: conv.reference_conv2d(a, b, c, stride, padding))
    with conv.settings(method=name, chunk_bytes=chunk_bytes):
        assert conv.conv_method(g["c"], kernel, stride, padding, (g["h"], g["w"]), g["n"]) == name
        actual = run(lambda a, b, c: conv.Conv2dFunction.apply(a, b, c, stride, padding, False))
    for a, b in zip(actual, expected):
        if b is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_settings_nest_restore_and_refuse_what_they_do_not_know():
    """``conv.settings`` replaces the old module globals: it nests, the previous settings come back even after an
    error, a worker thread sees the defaults, and an unknown method, algorithm or budget is refused."""
    import threading

    default = conv.current_settings()
    assert default.method == "auto" and default.chunk_bytes_for(conv.IM2COL) == conv.IM2COL.chunk_bytes
    with conv.settings(method="winograd", chunk_bytes={"im2col": 1000}) as outer:
        assert conv.current_settings() is outer and outer.chunk_bytes_for(conv.IM2COL) == 1000
        assert outer.chunk_bytes_for(conv.SHIFTED) == conv.SHIFTED.chunk_bytes
        with conv.settings(chunk_bytes=7):
            inner = conv.current_settings()
            assert inner.method == "winograd" and all(inner.chunk_bytes_for(a) == 7 for a in conv.ALGORITHMS.values())
        seen = []
        worker = threading.Thread(target=lambda: seen.append(conv.current_settings()))
        worker.start()
        worker.join()
        assert seen == [default]
        with pytest.raises(RuntimeError):
            with conv.settings(method="im2col"):
                raise RuntimeError
        assert conv.current_settings() is outer
    assert conv.current_settings() == default
    for bad in (dict(method="fastest"), dict(chunk_bytes={"fft": 10}), dict(chunk_bytes=0), dict(chunk_bytes=2.5)):
        with pytest.raises(ValueError):
            with conv.settings(**bad):
                pass
    assert conv.current_settings() == default


@pytest.mark.parametrize("method", ["im2col", "shifted", "winograd", "winograd4"])
@pytest.mark.parametrize("batch", [1, 2, 9])
def test_chunked_equals_whole_batch_in_float32(backend, method, batch):
    """float32 through a BKNet-sized layer (32 → 32, 3×3 same): one image per chunk vs the whole batch at once."""
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 32, 12, 12)).astype(np.float32)
    weight = (rng.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)
    upstream = rng.standard_normal((batch, 32, 12, 12)).astype(np.float32)
    with conv.settings(method=method, chunk_bytes=2**40):  # every algorithm's budget
        whole = run_conv(x, weight, bias, 1, "same", upstream)
    with conv.settings(method=method, chunk_bytes=1):
        chunked = run_conv(x, weight, bias, 1, "same", upstream)
    for a, b in zip(chunked, whole):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def test_chunk_size_follows_the_column_bytes():
    # 32 channels, 3×3, 48×48 outputs in float32: 2,654,208 bytes of columns per image.
    per_image = 32 * 9 * 48 * 48 * 4
    assert conv.conv_chunk_size((128, 32, 48, 48), (3, 3), (48, 48), 4, chunk_bytes=8 * per_image) == 8
    assert conv.conv_chunk_size((128, 32, 48, 48), (3, 3), (48, 48), 4, chunk_bytes=8 * per_image - 1) == 7
    # Fewer channels or pixels: more images per chunk, never more than the batch, never fewer than one.
    assert conv.conv_chunk_size((128, 256, 6, 6), (3, 3), (6, 6), 4, chunk_bytes=8 * per_image) == 64  # 8 × 8 times smaller
    assert conv.conv_chunk_size((128, 256, 6, 6), (3, 3), (6, 6), 4, chunk_bytes=1000 * per_image) == 128
    assert conv.conv_chunk_size((5, 1, 48, 48), (3, 3), (48, 48), 4, chunk_bytes=2**30) == 5
    assert conv.conv_chunk_size((5, 512, 96, 96), (3, 3), (96, 96), 8, chunk_bytes=1) == 1
    # The default budget gives a BKNet first block a handful of images and the last block the whole batch.
    assert 2 <= conv.conv_chunk_size((128, 32, 48, 48), (3, 3), (48, 48), 4) <= 16
    assert conv.conv_chunk_size((128, 256, 6, 6), (3, 3), (6, 6), 4) >= 32


def test_backward_keeps_the_input_not_the_columns(backend):
    """What a convolution holds for its backward is its input and weight: no C·KH·KW-times-larger column matrix."""
    x = Tensor(np.random.default_rng(0).standard_normal((4, 8, 10, 10)).astype(np.float32), requires_grad=True)
    w = Tensor(np.random.default_rng(1).standard_normal((8, 8, 3, 3)).astype(np.float32), requires_grad=True)
    y = F.conv2d(x, w, None, 1, "same")
    saved = y._node.ctx.saved
    assert sum(a.nbytes for a in saved) == x.data.nbytes + w.data.nbytes
    assert any(np.shares_memory(a, x.data) for a in saved)


@pytest.mark.parametrize("method", ["im2col", "shifted", "winograd", "winograd4"])
def test_shifted_products_winograd_and_im2col_agree_on_a_bknet_layer(backend, method):
    """float32, 32 → 64 channels at 24×24 with 3×3 "same" padding: every method gives the same output and gradients."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 32, 24, 24)).astype(np.float32)
    weight = (rng.standard_normal((64, 32, 3, 3)) / 17).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    upstream = rng.standard_normal((5, 64, 24, 24)).astype(np.float32)
    with conv.settings(method="im2col"):
        expected = run_conv(x, weight, bias, 1, "same", upstream)
    with conv.settings(method=method):
        by_method = run_conv(x, weight, bias, 1, "same", upstream)
    for a, b in zip(by_method, expected):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def test_auto_method_on_compiled_backends_winograd_then_shifted_products_then_im2col(backend):
    """"auto" on a compiled backend: Winograd tiles for 3×3 stride-1 layers with C ≥ 16 and enough tiles in the
    batch, 4×4 where they need fewer multiplications than 2×2; otherwise shifted products where the padded grid
    wastes little; im2col for the rest.  The numpy backend, the baseline, takes im2col everywhere."""
    assert conv.current_settings().method == "auto"  # the default
    same = ((1, 1), (1, 1))
    fast = kernels.fast_winograd()
    assert fast == kernels.fast_shifted_matmul() == (backend != "numpy")
    # BKNet's trunk after its first layer: 4×4 tiles where 4 divides the side; at 6×6, 2×2 tiles (9 · 16 = 4 · 36)
    for channels, side, tiles in [(32, 48, "winograd4"), (64, 24, "winograd4"), (128, 12, "winograd4"), (256, 6, "winograd")]:
        assert conv.conv_method(channels, (3, 3), (1, 1), same, (side, side), images=128) == (tiles if fast else "im2col")
    assert conv.conv_method(32, (3, 3), (1, 1), same, (7, 7), images=128) == ("winograd4" if fast else "im2col")  # 4·36 < 16·16
    assert conv.conv_method(1, (3, 3), (1, 1), same, (48, 48), images=128) == "im2col"  # one channel: products with C = 1
    assert conv.conv_method(32, (3, 3), (2, 2), same, (48, 48), images=128) == "im2col"  # strided
    # Batch 1: 24×24 has 144 tiles, enough; 12×12 has 36, too few to pay for transforming the filters.
    assert conv.conv_method(64, (3, 3), (1, 1), same, (24, 24), images=1) == ("winograd4" if fast else "im2col")
    assert conv.conv_method(128, (3, 3), (1, 1), same, (12, 12), images=1) == "im2col"  # grid waste 1.36: no shifted
    # Without Winograd (a 5×5 kernel), the shifted-product rule: little waste and C ≥ 16.
    assert conv.conv_method(32, (5, 5), (1, 1), ((2, 2), (2, 2)), (48, 48)) == ("shifted" if fast else "im2col")  # 52²/48²
    assert conv.conv_method(256, (5, 5), (1, 1), ((2, 2), (2, 2)), (6, 6)) == "im2col"  # 10²/6² = 2.8
    with conv.settings(method="shifted"):
        assert conv.conv_method(256, (3, 3), (1, 1), same, (6, 6)) == "shifted"
        assert conv.conv_method(256, (3, 3), (2, 1), same, (6, 6)) == "im2col"
    with conv.settings(method="winograd"):
        assert conv.conv_method(1, (3, 3), (1, 1), same, (6, 6), images=1) == "winograd"  # asked for: taken wherever it fits
        assert conv.conv_method(32, (3, 3), (1, 1), same, (48, 48), images=128) == "winograd"
    with conv.settings(method="winograd4"):
        assert conv.conv_method(256, (3, 3), (1, 1), same, (6, 6), images=128) == "winograd4"
        assert conv.conv_method(8, (3, 3), (2, 2), same, (6, 6)) == "im2col"
    with conv.settings(method="winograd"):
        assert conv.conv_method(8, (5, 5), (1, 1), same, (6, 6)) == "im2col"
        assert conv.conv_method(8, (3, 3), (2, 2), same, (6, 6)) == "im2col"
    with pytest.raises(ValueError, match="conv method must be one of"):
        with conv.settings(method="fastest"):
            pass
    with pytest.raises(ValueError, match="conv method must be one of"):
        conv.conv_method(32, (3, 3), (1, 1), same, (48, 48), method="fastest")


def test_winograd_tiles_cover_odd_outputs_with_one_more_padding_row():
    """A 5×6 image with "same" padding: outputs 5×6, tiles 3×3, the padded grid 8×8 (one more zero row at the bottom)."""
    tiles = conv.WinogradTiles((5, 6), ((1, 1), (1, 1)))
    assert tiles.out_hw == (5, 6) and tiles.tiles_hw == (3, 3) and not tiles.exact
    assert (tiles.grid.hp, tiles.grid.wp) == (8, 8) and tiles.count(2) == 18
    x = np.arange(1.0, 31.0).reshape(1, 1, 5, 6)
    padded = tiles.padded(x, np.float64)
    assert padded.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(tiles.inputs(padded)[..., 0], x[:, 0])
    assert padded.sum() == x.sum()  # zeros everywhere else


def test_padded_grid_rows_and_offsets():
    """A 2×3 image padded by 1 is a 4×5 grid; tap (a, b) of a 3×3 kernel is a·5 + b rows further on."""
    grid = conv.PaddedGrid((2, 3), (3, 3), ((1, 1), (1, 1)))
    assert (grid.hp, grid.wp, grid.out_hw, grid.reach) == (4, 5, (2, 3), 12)
    assert list(grid.offsets) == [0, 1, 2, 5, 6, 7, 10, 11, 12]
    x = np.arange(1.0, 13.0).reshape(2, 1, 2, 3)  # two images, one channel, no zeros
    rows = grid.rows(x, np.float64)
    assert rows.shape == (2 * 20 + 12, 1)
    np.testing.assert_array_equal(rows[:5, 0], 0.0)  # the top padding row
    assert rows[5, 0] == 0.0 and rows[6, 0] == 1.0  # grid row 1: left padding, then x[0, 0, 0, 0]
    assert rows[20 + 6, 0] == 7.0  # the second image starts 4·5 rows later
    np.testing.assert_array_equal(grid.inputs(rows, 2)[..., 0], x[:, 0])
    np.testing.assert_array_equal(rows[40:], 0.0)


def test_winograd_4x4_tiles_cover_outputs_four_does_not_divide():
    """A 5×6 image with "same" padding and 4×4 output tiles: tiles 2×2 cover 8×8 outputs, so the padded grid is
    10×10 (three more zero rows at the bottom, two more columns on the right); a 12×12 image's tiles fit exactly."""
    tiles = conv.WinogradTiles((5, 6), ((1, 1), (1, 1)), tile=4)
    assert tiles.alpha == 6 and tiles.tiles_hw == (2, 2) and not tiles.exact
    assert (tiles.grid.hp, tiles.grid.wp) == (10, 10) and tiles.multiplications(3) == 3 * 4 * 36
    x = np.arange(1.0, 31.0).reshape(1, 1, 5, 6)
    padded = tiles.padded(x, np.float64)
    assert padded.shape == (1, 10, 10, 1)
    np.testing.assert_array_equal(tiles.inputs(padded)[..., 0], x[:, 0])
    assert padded.sum() == x.sum()
    exact = conv.WinogradTiles((12, 12), ((1, 1), (1, 1)), tile=4)
    assert exact.exact and exact.tiles_hw == (3, 3) and (exact.grid.hp, exact.grid.wp) == (14, 14)
    assert conv.winograd_tile((12, 12), ((1, 1), (1, 1))) == 4 and conv.winograd_tile((6, 6), ((1, 1), (1, 1))) == 2
    with pytest.raises(ValueError, match="tile must be one of"):
        conv.WinogradTiles((12, 12), ((1, 1), (1, 1)), tile=3)
