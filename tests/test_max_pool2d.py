"""max_pool2d: gradient checks, a loop reference, ceil mode and TensorFlow's "same"."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minimtl as mt
from minimtl import functional as F
from minimtl.gradcheck import gradcheck
from strategies import distinct_array, pool_geometry, settings_fast

pytestmark = pytest.mark.layers


def loop_max_pool(x, kernel, stride, pads):
    (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = kernel, stride, pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-np.inf)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.empty(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].max(axis=(2, 3))
    return out


def torch_output_size(size, k, s, p, ceil_mode):
    """PyTorch's documented formula for MaxPool2d output size."""
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


@settings(**settings_fast)
@given(pool_geometry(), st.integers(0, 2**16))
def test_max_pool_matches_loops_and_gradients_check(g, seed):
    x = distinct_array((g["n"], g["c"], g["h"], g["w"]), seed)
    kernel, stride, padding = (g["kh"], g["kw"]), (g["sh"], g["sw"]), (g["ph"], g["pw"])
    out = F.max_pool2d(mt.Tensor(x), kernel, stride, padding, g["ceil_mode"])
    assert out.shape[2:] == (torch_output_size(g["h"], g["kh"], g["sh"], g["ph"], g["ceil_mode"]),
                             torch_output_size(g["w"], g["kw"], g["sw"], g["pw"], g["ceil_mode"]))
    pads = F.pool_padding(x.shape[2:], kernel, stride, padding, g["ceil_mode"])
    np.testing.assert_array_equal(out.data, loop_max_pool(x, kernel, stride, pads))
    gradcheck(lambda t: F.max_pool2d(t, kernel, stride, padding, g["ceil_mode"]), [x])


@pytest.mark.parametrize("size", [5, 6, 11, 12])
def test_same_padding_pads_at_the_end_like_tensorflow(size):
    x = distinct_array((1, 1, size, size), 0)
    out = F.max_pool2d(mt.Tensor(x), 3, 2, padding="same")
    assert out.shape[2:] == (-(-size // 2),) * 2
    total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
    pads = ((total // 2, total - total // 2),) * 2
    np.testing.assert_array_equal(out.data, loop_max_pool(x, (3, 3), (2, 2), pads))


def test_gradient_goes_only_to_the_winner():
    x = mt.Tensor(np.array([[[[1.0, 5.0], [2.0, 3.0]]]]), requires_grad=True)
    F.max_pool2d(x, 2).backward(np.array([[[[7.0]]]]))
    np.testing.assert_array_equal(x.grad, [[[[0.0, 7.0], [0.0, 0.0]]]])


def test_bad_pool_arguments():
    x = mt.Tensor(np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="at most half"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        F.max_pool2d(mt.Tensor(np.ones((4, 4))), 2)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        F.max_pool2d(mt.Tensor(np.ones((1, 1, 1, 4))), 2)


@settings(**settings_fast)
@given(pool_geometry(), st.integers(0, 2**16), st.booleans(), st.booleans())
def test_pooling_without_indices_equals_the_kernels(g, seed, channels_last, special):
    """When no backward can follow, ``MaxPool2dFunction`` takes ``max_pool2d_values`` (no winners' indices): the
    same values as the kernel path, NaN and ±inf included, and the layout of its input."""
    x = distinct_array((g["n"], g["c"], g["h"], g["w"]), seed)
    if special:
        flat = x.reshape(-1)
        flat[:: 3] = np.nan
        flat[1:: 5] = -np.inf
        flat[2:: 7] = np.inf
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    args = ((g["kh"], g["kw"]), (g["sh"], g["sw"]), (g["ph"], g["pw"]), g["ceil_mode"])
    with mt.no_grad():
        values = F.max_pool2d(mt.Tensor(x), *args)
    recorded = F.max_pool2d(mt.Tensor(x, requires_grad=True), *args)  # the kernels, which also keep the winners
    assert recorded.requires_grad and not values.requires_grad
    np.testing.assert_array_equal(values.data, recorded.data)
    if channels_last:  # (degenerate shapes, a single pixel or channel, are both layouts at once)
        assert values.data.transpose(0, 2, 3, 1).flags.c_contiguous
    else:
        assert values.data.flags.c_contiguous
