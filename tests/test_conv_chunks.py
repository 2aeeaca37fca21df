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
@pytest.mark.parametrize("method", ["im2col", "shifted", "winograd", "winograd4"])
def test_every_chunk_size_gives_the_definition(backend, monkeypatch, method, batch, chunk_images, channels, kernel, stride,
                                               pad, seed, channels_last):
    """Chunks of 1 … 8 images (batches 1, 3, 5, 7: the last chunk is often short) equal the direct convolution,
    by im2col, by shifted products (stride 1; at stride 2 that falls back to im2col) and by Winograd tiles of 2×2
    and 4×4 outputs (3×3 and stride 1; otherwise im2col)."""
    monkeypatch.setattr(F, "CONV_METHOD", method)
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
    grid = F.PaddedGrid((size, size), kernel, padding)
    monkeypatch.setattr(F, "SHIFTED_CHUNK_BYTES", grid.hp * grid.wp * max(channels, 2) * 8 * chunk_images)
    tiling = F.WinogradTiles((size, size), padding, 4 if method == "winograd4" else 2)
    monkeypatch.setattr(F, "WINOGRAD_CHUNK_BYTES", tiling.multiplications(1) * max(channels, 2) * 8 * chunk_images)
    upstream = random_array((batch, 2, oh, ow), seed + 3)

    y, grad_x, grad_w, grad_b = run_conv(x, weight, bias, stride, (pad, pad), upstream)
    np.testing.assert_allclose(y, direct_conv2d(x, weight, bias, stride, padding), rtol=1e-12, atol=1e-12)
    expected_x, expected_w = direct_gradients(x, weight, stride, padding, upstream)
    np.testing.assert_allclose(grad_x, expected_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_w, expected_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_b, upstream.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["im2col", "shifted", "winograd", "winograd4"])
@pytest.mark.parametrize("batch", [1, 2, 9])
def test_chunked_equals_whole_batch_in_float32(backend, monkeypatch, method, batch):
    """float32 through a BKNet-sized layer (32 → 32, 3×3 same): one image per chunk vs the whole batch at once."""
    monkeypatch.setattr(F, "CONV_METHOD", method)
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 32, 12, 12)).astype(np.float32)
    weight = (rng.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)
    upstream = rng.standard_normal((batch, 32, 12, 12)).astype(np.float32)
    for budget in ("CONV_CHUNK_BYTES", "SHIFTED_CHUNK_BYTES", "WINOGRAD_CHUNK_BYTES"):
        monkeypatch.setattr(F, budget, 2**40)
    whole = run_conv(x, weight, bias, 1, "same", upstream)
    for budget in ("CONV_CHUNK_BYTES", "SHIFTED_CHUNK_BYTES", "WINOGRAD_CHUNK_BYTES"):
        monkeypatch.setattr(F, budget, 1)
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


@pytest.mark.parametrize("method", ["im2col", "shifted", "winograd", "winograd4"])
def test_shifted_products_winograd_and_im2col_agree_on_a_bknet_layer(backend, monkeypatch, method):
    """float32, 32 → 64 channels at 24×24 with 3×3 "same" padding: every method gives the same output and gradients."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 32, 24, 24)).astype(np.float32)
    weight = (rng.standard_normal((64, 32, 3, 3)) / 17).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    upstream = rng.standard_normal((5, 64, 24, 24)).astype(np.float32)
    monkeypatch.setattr(F, "CONV_METHOD", "im2col")
    expected = run_conv(x, weight, bias, 1, "same", upstream)
    monkeypatch.setattr(F, "CONV_METHOD", method)
    for a, b in zip(run_conv(x, weight, bias, 1, "same", upstream), expected):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def test_auto_method_on_compiled_backends_winograd_then_shifted_products_then_im2col(backend, monkeypatch):
    """"auto" on a compiled backend: Winograd tiles for 3×3 stride-1 layers with C ≥ 16 and enough tiles in the
    batch, 4×4 where they need fewer multiplications than 2×2; otherwise shifted products where the padded grid
    wastes little; im2col for the rest.  The numpy backend, the baseline, takes im2col everywhere."""
    monkeypatch.setattr(F, "CONV_METHOD", "auto")
    same = ((1, 1), (1, 1))
    fast = kernels.fast_winograd()
    assert fast == kernels.fast_shifted_matmul() == (backend != "numpy")
    # BKNet's trunk after its first layer: 4×4 tiles where 4 divides the side; at 6×6, 2×2 tiles (9 · 16 = 4 · 36)
    for channels, side, tiles in [(32, 48, "winograd4"), (64, 24, "winograd4"), (128, 12, "winograd4"), (256, 6, "winograd")]:
        assert F.conv_method(channels, (3, 3), (1, 1), same, (side, side), images=128) == (tiles if fast else "im2col")
    assert F.conv_method(32, (3, 3), (1, 1), same, (7, 7), images=128) == ("winograd4" if fast else "im2col")  # 4·36 < 16·16
    assert F.conv_method(1, (3, 3), (1, 1), same, (48, 48), images=128) == "im2col"  # one channel: products with C = 1
    assert F.conv_method(32, (3, 3), (2, 2), same, (48, 48), images=128) == "im2col"  # strided
    # Batch 1: 24×24 has 144 tiles, enough; 12×12 has 36, too few to pay for transforming the filters.
    assert F.conv_method(64, (3, 3), (1, 1), same, (24, 24), images=1) == ("winograd4" if fast else "im2col")
    assert F.conv_method(128, (3, 3), (1, 1), same, (12, 12), images=1) == "im2col"  # grid waste 1.36: no shifted
    # Without Winograd (a 5×5 kernel), the shifted-product rule: little waste and C ≥ 16.
    assert F.conv_method(32, (5, 5), (1, 1), ((2, 2), (2, 2)), (48, 48)) == ("shifted" if fast else "im2col")  # 52²/48²
    assert F.conv_method(256, (5, 5), (1, 1), ((2, 2), (2, 2)), (6, 6)) == "im2col"  # 10²/6² = 2.8
    monkeypatch.setattr(F, "CONV_METHOD", "shifted")
    assert F.conv_method(256, (3, 3), (1, 1), same, (6, 6)) == "shifted"
    assert F.conv_method(256, (3, 3), (2, 1), same, (6, 6)) == "im2col"
    monkeypatch.setattr(F, "CONV_METHOD", "winograd")
    assert F.conv_method(1, (3, 3), (1, 1), same, (6, 6), images=1) == "winograd"  # asked for: taken wherever it fits
    assert F.conv_method(32, (3, 3), (1, 1), same, (48, 48), images=128) == "winograd"
    monkeypatch.setattr(F, "CONV_METHOD", "winograd4")
    assert F.conv_method(256, (3, 3), (1, 1), same, (6, 6), images=128) == "winograd4"
    assert F.conv_method(8, (3, 3), (2, 2), same, (6, 6)) == "im2col"
    monkeypatch.setattr(F, "CONV_METHOD", "winograd")
    assert F.conv_method(8, (5, 5), (1, 1), same, (6, 6)) == "im2col"
    assert F.conv_method(8, (3, 3), (2, 2), same, (6, 6)) == "im2col"
    monkeypatch.setattr(F, "CONV_METHOD", "fastest")
    with pytest.raises(ValueError, match="CONV_METHOD"):
        F.conv_method(32, (3, 3), (1, 1), same, (48, 48))


def test_winograd_tiles_cover_odd_outputs_with_one_more_padding_row():
    """A 5×6 image with "same" padding: outputs 5×6, tiles 3×3, the padded grid 8×8 (one more zero row at the bottom)."""
    tiles = F.WinogradTiles((5, 6), ((1, 1), (1, 1)))
    assert tiles.out_hw == (5, 6) and tiles.tiles_hw == (3, 3) and not tiles.exact
    assert (tiles.grid.hp, tiles.grid.wp) == (8, 8) and tiles.count(2) == 18
    x = np.arange(1.0, 31.0).reshape(1, 1, 5, 6)
    padded = tiles.padded(x, np.float64)
    assert padded.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(tiles.inputs(padded)[..., 0], x[:, 0])
    assert padded.sum() == x.sum()  # zeros everywhere else


def test_padded_grid_rows_and_offsets():
    """A 2×3 image padded by 1 is a 4×5 grid; tap (a, b) of a 3×3 kernel is a·5 + b rows further on."""
    grid = F.PaddedGrid((2, 3), (3, 3), ((1, 1), (1, 1)))
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
    tiles = F.WinogradTiles((5, 6), ((1, 1), (1, 1)), tile=4)
    assert tiles.alpha == 6 and tiles.tiles_hw == (2, 2) and not tiles.exact
    assert (tiles.grid.hp, tiles.grid.wp) == (10, 10) and tiles.multiplications(3) == 3 * 4 * 36
    x = np.arange(1.0, 31.0).reshape(1, 1, 5, 6)
    padded = tiles.padded(x, np.float64)
    assert padded.shape == (1, 10, 10, 1)
    np.testing.assert_array_equal(tiles.inputs(padded)[..., 0], x[:, 0])
    assert padded.sum() == x.sum()
    exact = F.WinogradTiles((12, 12), ((1, 1), (1, 1)), tile=4)
    assert exact.exact and exact.tiles_hw == (3, 3) and (exact.grid.hp, exact.grid.wp) == (14, 14)
    assert F.winograd_tile((12, 12), ((1, 1), (1, 1))) == 4 and F.winograd_tile((6, 6), ((1, 1), (1, 1))) == 2
    with pytest.raises(ValueError, match="tile must be one of"):
        F.WinogradTiles((12, 12), ((1, 1), (1, 1)), tile=3)
