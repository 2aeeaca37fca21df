"""conv2d: gradient checks, and every algorithm's forward against the direct nested-loop convolution.

``minimtl.conv.reference`` holds the definition (``direct_conv2d``) and the
readable whole-batch ``ReferenceConv2d``; the fast algorithms are held to both.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minimtl as mt
from minimtl import conv
from minimtl import functional as F
from minimtl.conv import direct_conv2d
from minimtl.gradcheck import gradcheck
from strategies import conv_geometry, random_array, settings_fast

pytestmark = pytest.mark.layers


@settings(**settings_fast)
@given(conv_geometry(), st.booleans(), st.tuples(*[st.integers(0, 1)] * 2), st.integers(0, 2**16))
def test_reference_convolution_is_the_definition_and_its_gradients_check(g, with_bias, extra, seed):
    """``ReferenceConv2d`` (whole-batch im2col → W₂ @ cols → col2im): the definition's output and gradients, and a
    float64 gradient check against a random upstream gradient; non-square kernels, strides, asymmetric padding."""
    x = random_array((g["n"], g["c"], g["h"], g["w"]), seed)
    weight = random_array((g["f"], g["c"], g["kh"], g["kw"]), seed + 1)
    bias = random_array((g["f"],), seed + 2) if with_bias else None
    stride, padding = (g["sh"], g["sw"]), ((g["ph"], g["ph"] + extra[0]), (g["pw"], g["pw"] + extra[1]))
    xt, wt = mt.Tensor(x, requires_grad=True), mt.Tensor(weight, requires_grad=True)
    bt = mt.Tensor(bias, requires_grad=True) if with_bias else None
    out = conv.reference_conv2d(xt, wt, bt, stride, padding)
    np.testing.assert_allclose(out.data, direct_conv2d(x, weight, bias, stride, padding), rtol=1e-10, atol=1e-10)
    upstream = random_array(out.shape, seed + 3)
    out.backward(upstream)
    expected_x, expected_w = conv.direct_conv2d_gradients(x, weight, stride, padding, upstream)
    np.testing.assert_allclose(xt.grad, expected_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(wt.grad, expected_w, rtol=1e-10, atol=1e-10)
    if with_bias:
        np.testing.assert_allclose(bt.grad, upstream.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-10)
        gradcheck(lambda a, b, c: conv.reference_conv2d(a, b, c, stride, padding), [x, weight, bias])
    else:
        gradcheck(lambda a, b: conv.reference_conv2d(a, b, None, stride, padding), [x, weight])


def test_the_reference_a_student_reads_first_knows_only_im2col():
    """``minimtl/conv/reference.py`` is the first page of the convolution: no fast algorithm is met there."""
    import inspect

    text = inspect.getsource(conv.reference).lower()
    assert "winograd" not in text and "shifted" not in text
    assert "im2col" in text and "col2im" in text


@pytest.fixture(params=["im2col", "shifted", "winograd", "winograd4"])
def method(request):
    """Each test with im2col, shifted products (which fall back to im2col at strides above 1) and Winograd tiles
    of 2×2 and 4×4 outputs (which fall back to im2col unless the kernel is 3×3 and the stride 1)."""
    with conv.settings(method=request.param):
        yield request.param


@settings(**settings_fast, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv_geometry(), st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_conv2d_matches_direct_convolution_and_its_gradients_check(method, g, with_bias, noncontiguous, seed):
    x = random_array((g["n"], g["c"], g["h"], g["w"]), seed, noncontiguous=noncontiguous)
    weight = random_array((g["f"], g["c"], g["kh"], g["kw"]), seed + 1)
    bias = random_array((g["f"],), seed + 2) if with_bias else None
    stride, padding = (g["sh"], g["sw"]), (g["ph"], g["pw"])
    out = F.conv2d(mt.Tensor(x), mt.Tensor(weight), mt.Tensor(bias) if with_bias else None, stride, padding)
    expected = direct_conv2d(x, weight, bias, stride, ((g["ph"],) * 2, (g["pw"],) * 2))
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-10)
    if with_bias:
        gradcheck(lambda a, b, c: F.conv2d(a, b, c, stride, padding), [x, weight, bias])
    else:
        gradcheck(lambda a, b: F.conv2d(a, b, None, stride, padding), [x, weight])


@settings(**settings_fast)
@given(method=st.sampled_from(["winograd", "winograd4"]), n=st.integers(1, 2), c=st.integers(1, 3), f=st.integers(1, 3),
       h=st.integers(1, 9), w=st.integers(1, 9), pads=st.tuples(*[st.integers(0, 2)] * 4), relu=st.booleans(),
       channels_last=st.booleans(), seed=st.integers(0, 2**16))
def test_winograd_tiles_give_the_definition_and_their_gradients_check(method, n, c, f, h, w, pads, relu, channels_last,
                                                                     seed):
    """3×3, stride 1, every padding (asymmetric too), 2×2 and 4×4 output tiles: output sizes the tile does not divide
    make the last tiles stick out of the output."""
    top, bottom, left, right = pads
    if h + top + bottom < 3 or w + left + right < 3:
        return  # the kernel does not fit: conv2d refuses such input (test_bad_inputs_name_the_problem)
    padding = ((top, bottom), (left, right))
    x = random_array((n, c, h, w), seed)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    weight, bias = random_array((f, c, 3, 3), seed + 1), random_array((f,), seed + 2)
    with conv.settings(method=method):
        assert conv.conv_method(c, (3, 3), (1, 1), padding, (h, w)) == method
        out = conv.Conv2dFunction.apply(mt.Tensor(x), mt.Tensor(weight), mt.Tensor(bias), (1, 1), padding, relu)
        expected = direct_conv2d(x, weight, bias, (1, 1), padding)
        np.testing.assert_allclose(out.data, np.maximum(expected, 0) if relu else expected, rtol=1e-10, atol=1e-10)
        gradcheck(lambda a, b, d: conv.Conv2dFunction.apply(a, b, d, (1, 1), padding, relu), [x, weight, bias])


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_filter_transform_is_g_times_filter_times_g_transposed_and_its_adjoint(tile):
    alpha = tile + 2
    rng = np.random.default_rng(7)
    weight, grad_u = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((alpha**2, 2, 3))
    g = mt.kernels.numpy_backend.winograd_matrices(tile)[1]
    u = conv.winograd_filter_transform(weight, np.float64, tile)
    assert u.shape == (alpha**2, 2, 3)
    np.testing.assert_allclose(u[:, 1, 2].reshape(alpha, alpha), g @ weight[2, 1] @ g.T, rtol=1e-12)
    np.testing.assert_allclose(np.vdot(u, grad_u), np.vdot(weight, conv.winograd_filter_transform_grad(grad_u, tile)),
                               rtol=1e-12)
    assert conv.winograd_filter_transform(weight.astype(np.float32), np.float32, tile).dtype == np.float32
    with pytest.raises(ValueError, match="positions"):
        conv.winograd_filter_transform_grad(grad_u, 6 - tile)


def test_winograd_4x4_tiles_in_float32_stay_within_a_few_parts_per_million():
    """F(4×4, 3×3)'s larger coefficients cost float32 precision.  On a BKNet layer (64 → 128, 12×12, inputs of unit
    scale, weights of 1/√(9C)) against the float64 definition, the largest error of the output and both gradients,
    relative to the largest value, measured 6–7·10⁻⁶ with 4×4 tiles and 4–5·10⁻⁷ with 2×2 tiles or im2col
    (seeds 11–13).  The bounds are three times those."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 64, 12, 12))
    weight = rng.standard_normal((128, 64, 3, 3)) / np.sqrt(9 * 64)
    upstream = rng.standard_normal((4, 128, 12, 12))

    def run(method, dtype):
        xt, wt = mt.Tensor(x.astype(dtype), requires_grad=True), mt.Tensor(weight.astype(dtype), requires_grad=True)
        with conv.settings(method=method):
            y = F.conv2d(xt, wt, None, 1, "same")
            y.backward(upstream.astype(dtype))
        return y.data, xt.grad, wt.grad

    exact = run("im2col", np.float64)
    errors = {}
    for method in ("im2col", "winograd", "winograd4"):
        errors[method] = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(run(method, np.float32), exact))
    assert errors["im2col"] < 1.5e-6 and errors["winograd"] < 1.5e-6
    assert errors["winograd4"] < 2e-5


@pytest.mark.parametrize("size,stride", [(7, 1), (7, 2), (8, 2), (5, 3)])
def test_same_padding_gives_ceil_of_size_over_stride(size, stride):
    x = mt.Tensor(np.random.default_rng(0).standard_normal((1, 2, size, size)))
    w = mt.Tensor(np.random.default_rng(1).standard_normal((3, 2, 3, 3)))
    out = F.conv2d(x, w, None, stride, "same")
    assert out.shape == (1, 3, -(-size // stride), -(-size // stride))
    pads = conv.conv_padding("same", (3, 3), (stride, stride), (size, size))
    np.testing.assert_allclose(out.data, direct_conv2d(x.data, w.data, None, (stride, stride), pads), atol=1e-12)


def test_float32_stays_float32():
    x = mt.Tensor(np.ones((1, 1, 4, 4), np.float32))
    w = mt.Tensor(np.ones((2, 1, 3, 3), np.float32))
    assert F.conv2d(x, w, padding=1).dtype == np.float32


def test_bad_inputs_name_the_problem():
    w = mt.Tensor(np.ones((2, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        F.conv2d(mt.Tensor(np.ones((3, 8, 8))), w)
    with pytest.raises(ValueError, match="1 channels but the layer expects 3"):
        F.conv2d(mt.Tensor(np.ones((1, 1, 8, 8))), w)
    with pytest.raises(TypeError, match="floating point"):
        F.conv2d(mt.Tensor(np.ones((1, 3, 8, 8), dtype=np.uint8)), w)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        F.conv2d(mt.Tensor(np.ones((1, 3, 2, 8))), w)
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(mt.Tensor(np.ones((1, 3, 8, 8))), w, stride=0)
    with pytest.raises(ValueError, match="padding"):
        F.conv2d(mt.Tensor(np.ones((1, 3, 8, 8))), w, padding="valid-ish")


@settings(**settings_fast, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv_geometry(), st.integers(0, 2**16))
def test_conv2d_with_relu_is_relu_of_conv2d_and_its_gradients_check(method, g, seed):
    """``conv2d(..., relu=True)`` (ReLU applied inside the convolution's chunks) against the two ops composed."""
    x = random_array((g["n"], g["c"], g["h"], g["w"]), seed)
    weight = random_array((g["f"], g["c"], g["kh"], g["kw"]), seed + 1)
    bias = random_array((g["f"],), seed + 2)
    stride, padding = (g["sh"], g["sw"]), (g["ph"], g["pw"])
    fused = F.conv2d(mt.Tensor(x), mt.Tensor(weight), mt.Tensor(bias), stride, padding, relu=True)
    composed = F.relu(F.conv2d(mt.Tensor(x), mt.Tensor(weight), mt.Tensor(bias), stride, padding))
    np.testing.assert_array_equal(fused.data, composed.data)
    gradcheck(lambda a, b, c: F.conv2d(a, b, c, stride, padding, relu=True), [x, weight, bias])


@pytest.mark.parametrize("scale,shift,conv_bias", [(False, True, False), (True, True, True), (True, False, False)])
def test_folding_batch_norm_into_the_convolution_gives_conv_then_batch_norm(scale, shift, conv_bias):
    """Evaluation mode: ``batch_norm(conv(x))`` equals one convolution with the folded weight and bias (float64)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 7, 6))
    conv = mt.nn.Conv2d(4, 5, 3, padding=1, bias=conv_bias)
    norm = mt.nn.BatchNorm2d(5, scale=scale, shift=shift)
    for parameter in [conv.weight, conv.bias, norm.weight, norm.bias]:
        if parameter is not None:
            parameter.data = rng.standard_normal(parameter.shape)
    norm.running_mean[...] = rng.standard_normal(5)
    norm.running_var[...] = rng.uniform(0.1, 3.0, 5)
    norm.eval()
    conv.weight.data = conv.weight.data.astype(np.float64)
    expected = norm(conv(mt.Tensor(x))).data
    weight, bias = F.fold_batch_norm(conv.weight.data, None if conv.bias is None else conv.bias.data, norm.running_mean,
                                     norm.running_var, norm.weight, norm.bias, norm.eps)
    assert weight.shape == conv.weight.shape and bias.shape == (5,)
    folded = F.conv2d(mt.Tensor(x), mt.Tensor(weight), mt.Tensor(bias), 1, 1)
    np.testing.assert_allclose(folded.data, expected, rtol=1e-12, atol=1e-12)
