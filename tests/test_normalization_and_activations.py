"""batch_norm, dropout, PReLU, softmax / log-softmax and linear: gradients, references, train/eval."""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import minimtl as mt
from minimtl import functional as F
from minimtl import batch_norm, nn, ops, parallel
from minimtl.gradcheck import gradcheck
from strategies import random_array, settings_fast

pytestmark = pytest.mark.layers


def composed_batch_norm(x, weight, bias, eps):
    """Batch-norm built from primitives (mean, subtract, power, divide) — an independent forward and backward."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = ops.mean(x, axes, keepdims=True)
    centred = x - mean
    var = ops.mean(centred * centred, axes, keepdims=True)
    out = centred / ops.power(var + eps, 0.5)
    if weight is not None:
        out = out * ops.reshape(weight, shape)
    if bias is not None:
        out = out + ops.reshape(bias, shape)
    return out


@settings(**settings_fast)
@given(st.sampled_from([(4, 3), (2, 3, 2, 3), (1, 2, 3, 1), (5, 1)]), st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_batch_norm_training_gradients_and_composed_reference(shape, scale, shift, seed):
    x = random_array(shape, seed) * 3 + 1
    params = [random_array((shape[1],), seed + 1) if scale else None, random_array((shape[1],), seed + 2) if shift else None]
    present = [p for p in params if p is not None]

    def fused(xt, *pt):
        it = iter(pt)
        w = next(it) if scale else None
        b = next(it) if shift else None
        return F.batch_norm(xt, None, None, w, b, training=True)

    def composed(xt, *pt):
        it = iter(pt)
        w = next(it) if scale else None
        b = next(it) if shift else None
        return composed_batch_norm(xt, w, b, 1e-5)

    gradcheck(fused, [x] + present)
    tensors = [mt.Tensor(a, requires_grad=True) for a in [x] + present]
    twins = [mt.Tensor(a.copy(), requires_grad=True) for a in [x] + present]
    upstream = random_array(shape, seed + 3)
    out, ref = fused(*tensors), composed(*twins)
    np.testing.assert_allclose(out.data, ref.data, rtol=1e-10, atol=1e-10)
    out.backward(upstream)
    ref.backward(upstream)
    for a, b in zip(tensors, twins):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-8, atol=1e-10)


def test_batch_norm_train_and_eval_modes_differ_and_running_stats_follow_momentum():
    rng = np.random.default_rng(0)
    layer = nn.BatchNorm2d(3, momentum=0.25)
    x = mt.Tensor((rng.standard_normal((8, 3, 4, 4)) * 2 + 5).astype(np.float32))
    trained = layer(x)
    per_channel = x.data.transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(layer.running_mean, 0.25 * per_channel.mean(1), rtol=1e-5)
    np.testing.assert_allclose(layer.running_var, 0.75 + 0.25 * per_channel.var(1, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(trained.data.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    layer.eval()
    evaluated = layer(x)
    expected = (x.data - layer.running_mean.reshape(1, 3, 1, 1)) / np.sqrt(layer.running_var.reshape(1, 3, 1, 1) + 1e-5)
    np.testing.assert_allclose(evaluated.data, expected, rtol=1e-5)
    assert not np.allclose(evaluated.data, trained.data)
    before = layer.running_mean.copy()
    layer(x)
    np.testing.assert_array_equal(layer.running_mean, before)  # evaluation never updates the statistics


def test_batch_norm_eval_gradient():
    running_mean, running_var = np.array([0.5, -1.0]), np.array([2.0, 0.5])
    x = random_array((3, 2, 2, 2), 1)
    gradcheck(lambda t, w, b: F.batch_norm(t, running_mean, running_var, w, b, training=False),
              [x, np.array([1.5, -0.5]), np.array([0.1, 0.2])])


def test_batch_norm_rejects_a_single_value_per_channel_and_wrong_shapes():
    with pytest.raises(ValueError, match="more than one value"):
        F.batch_norm(mt.Tensor(np.ones((1, 3))), None, None)
    with pytest.raises(ValueError, match="expects 2-D"):
        nn.BatchNorm1d(3)(mt.Tensor(np.ones((2, 3, 1, 1))))
    with pytest.raises(ValueError, match="got 4 channels"):
        nn.BatchNorm2d(3)(mt.Tensor(np.ones((2, 4, 1, 1))))


def test_dropout_train_eval_scaling_and_seed():
    x = mt.Tensor(np.ones((200, 50)))
    layer = nn.Dropout(0.5, generator=np.random.default_rng(7))
    out = layer(x)
    kept = out.data != 0
    assert 0.45 < kept.mean() < 0.55
    np.testing.assert_array_equal(out.data[kept], 2.0)  # inverted dropout: survivors scaled by 1/(1-p)
    again = nn.Dropout(0.5, generator=np.random.default_rng(7))(x)
    np.testing.assert_array_equal(out.data, again.data)
    layer.eval()
    assert layer(x) is x


def test_dropout_gradient_uses_the_same_mask():
    x = mt.Tensor(random_array((4, 6), 0), requires_grad=True)
    out = F.dropout(x, 0.3, True, np.random.default_rng(3))
    out.backward(np.ones((4, 6)))
    np.testing.assert_array_equal(x.grad != 0, out.data != 0)
    np.testing.assert_allclose(x.grad[x.grad != 0], 1 / 0.7)
    gradcheck(lambda t: F.dropout(t, 0.3, True, np.random.default_rng(3)), [random_array((4, 6), 1)])


@settings(**settings_fast)
@given(st.sampled_from([(2, 3), (2, 3, 4, 4), (1, 1, 2, 2)]), st.booleans(), st.integers(0, 2**16))
def test_prelu_gradient(shape, shared, seed):
    x = random_array(shape, seed)
    x = np.sign(x) * (np.abs(x) + 1e-3)
    alpha = random_array((1,) if shared else (shape[1],), seed + 1)
    gradcheck(F.prelu, [x, alpha])
    out = F.prelu(mt.Tensor(x), mt.Tensor(alpha)).data
    a = alpha.reshape((1, -1) + (1,) * (len(shape) - 2))
    np.testing.assert_allclose(out, np.maximum(x, 0) + a * np.minimum(x, 0))


@settings(**settings_fast)
@given(st.sampled_from([(1, 2), (3, 5), (2, 3, 4)]), st.integers(-1, 1), st.integers(0, 2**16))
@example((1, 2), 1, 282)  # issue 20: inputs [[4.897, −5.634]], a saturated softmax the old relative error rejected
def test_softmax_and_log_softmax(shape, axis, seed):
    x = random_array(shape, seed) * 3
    gradcheck(lambda t: F.softmax(t, axis), [x])
    gradcheck(lambda t: F.log_softmax(t, axis), [x])
    composed = ops.exp(mt.Tensor(x)) / ops.sum(ops.exp(mt.Tensor(x)), axis, keepdims=True)
    np.testing.assert_allclose(F.softmax(mt.Tensor(x), axis).data, composed.data, rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(mt.Tensor(x), axis).data, np.log(composed.data), rtol=1e-10, atol=1e-12)


def test_softmax_is_stable_for_huge_logits():
    x = mt.Tensor(np.array([[1000.0, 0.0, -1000.0]]))
    assert np.all(np.isfinite(F.log_softmax(x).data))
    np.testing.assert_allclose(F.softmax(x).data, [[1.0, 0.0, 0.0]])


@settings(**settings_fast)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**16))
def test_linear_gradient_and_value(n, fan_in, fan_out, seed):
    x, w, b = random_array((n, fan_in), seed), random_array((fan_out, fan_in), seed + 1), random_array((fan_out,), seed + 2)
    gradcheck(F.linear, [x, w, b])
    np.testing.assert_allclose(F.linear(mt.Tensor(x), mt.Tensor(w), mt.Tensor(b)).data, x @ w.T + b)


def test_linear_rejects_wrong_features_and_integers():
    layer = nn.Linear(4, 2)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        layer(mt.Tensor(np.ones((3, 5), np.float32)))
    with pytest.raises(TypeError, match="floating point"):
        layer(mt.Tensor(np.ones((3, 4), np.int64)))


@pytest.mark.parametrize("name", ["conv2d", "max_pool2d", "batch_norm", "dropout", "prelu", "softmax", "log_softmax",
                                  "linear", "concat"])
def test_layers_never_mutate_their_inputs(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5))
    arrays = {"x": x, "w": rng.standard_normal((4, 3, 3, 3)), "b": rng.standard_normal(4), "alpha": rng.standard_normal(3),
              "fc": rng.standard_normal((4, 75)), "mean": np.zeros(3), "var": np.ones(3)}
    before = {k: v.copy() for k, v in arrays.items()}
    t = {k: mt.Tensor(v, requires_grad=k not in ("mean", "var")) for k, v in arrays.items()}
    calls = {
        "conv2d": lambda: F.conv2d(t["x"], t["w"], t["b"], 2, 1),
        "max_pool2d": lambda: F.max_pool2d(t["x"], 2, ceil_mode=True),
        "batch_norm": lambda: F.batch_norm(t["x"], None, None, t["alpha"], t["alpha"]),
        "dropout": lambda: F.dropout(t["x"], 0.5, True, np.random.default_rng(1)),
        "prelu": lambda: F.prelu(t["x"], t["alpha"]),
        "softmax": lambda: F.softmax(t["x"], 1),
        "log_softmax": lambda: F.log_softmax(t["x"], 1),
        "linear": lambda: F.linear(ops.reshape(t["x"], (2, 75)), t["fc"], t["b"]),
        "concat": lambda: F.concat([t["x"], t["x"]], 1),
    }
    out = calls[name]()
    out.backward(rng.standard_normal(out.shape))
    for key, value in arrays.items():
        np.testing.assert_array_equal(value, before[key], err_msg=f"{name} changed its input {key}")


def channels_last(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if values.ndim == 4 else values


@pytest.fixture(autouse=True)
def fuse_on_every_backend():
    """The one-op batch-norm + ReLU runs wherever its input allows, the numpy backend's reference kernels included."""
    with batch_norm.settings(fuse_relu="always"):
        yield


def batch_norm_relu_both_ways(x, weight, bias, upstream, fused):
    """Values, gradients and running statistics of relu(batch_norm(x)): one op, or the two ops composed."""
    tensors = [mt.Tensor(x, requires_grad=True)] + [None if v is None else mt.Tensor(v, requires_grad=True)
                                                    for v in (weight, bias)]
    running_mean, running_var = np.zeros(x.shape[1], x.dtype), np.ones(x.shape[1], x.dtype)
    if fused:
        y = F.batch_norm(tensors[0], running_mean, running_var, tensors[1], tensors[2], training=True, relu=True)
        assert y._node.function is F.BatchNormReLUFunction
    else:
        y = F.relu(F.batch_norm(tensors[0], running_mean, running_var, tensors[1], tensors[2], training=True))
    y.backward(upstream)
    return [y.data] + [t.grad for t in tensors if t is not None] + [running_mean, running_var]


@settings(**settings_fast)
@given(st.sampled_from([(6, 3), (2, 3, 4, 5), (1, 2, 3, 3), (3, 1, 2, 2)]), st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_batch_norm_relu_as_one_op_equals_the_two_ops(shape, scale, shift, seed):
    """float64, (N, C) and channels-last input, with and without γ and β: values, gradients, running statistics."""
    x = channels_last(random_array(shape, seed))
    weight = random_array((shape[1],), seed + 1) if scale else None
    bias = random_array((shape[1],), seed + 2) if shift else None
    upstream = channels_last(random_array(shape, seed + 3))
    fused = batch_norm_relu_both_ways(x, weight, bias, upstream, fused=True)
    composed = batch_norm_relu_both_ways(x, weight, bias, upstream, fused=False)
    for a, b in zip(fused, composed):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert fused[0].shape == shape and fused[1].shape == shape


def test_batch_norm_relu_gradient_checks():
    """Finite differences on channels-last input (gradcheck keeps the layout, so the fused op is what it checks)."""
    x = channels_last(random_array((2, 3, 3, 4), 11))
    gradcheck(lambda t, w, b: F.batch_norm(t, None, None, w, b, training=True, relu=True),
              [x, random_array((3,), 12), random_array((3,), 13)])


def test_batch_norm_relu_in_float32_on_every_core(monkeypatch):
    """A BKNet-sized activation split over the workers, against the two ops (float32, 1e-5)."""
    rng = np.random.default_rng(4)
    x = channels_last(rng.standard_normal((16, 32, 12, 12)).astype(np.float32))
    upstream = channels_last(rng.standard_normal(x.shape).astype(np.float32))
    bias = rng.standard_normal(32).astype(np.float32)
    monkeypatch.setattr(parallel, "SPLIT_MIN_VALUES", 1)
    fused = batch_norm_relu_both_ways(x, None, bias, upstream, fused=True)
    composed = batch_norm_relu_both_ways(x, None, bias, upstream, fused=False)
    for a, b in zip(fused, composed):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_mean_var_equals_numpy_on_every_backend_even_far_from_zero(backend, dtype, monkeypatch):
    """Statistics of a channels-last float32/float64 activation whose mean (1000) dwarfs its spread (0.01): the
    compiled one-pass sums around a shift must not cancel; split over the workers too."""
    from minimtl import kernels

    if backend not in kernels.available_backends():
        pytest.skip(f"kernel backend {backend!r} is not importable here")
    previous = kernels.backend_name()
    kernels.set_backend(backend)
    monkeypatch.setattr(parallel, "SPLIT_MIN_VALUES", 1)
    try:
        rng = np.random.default_rng(8)
        x = channels_last((1000 + 0.01 * rng.standard_normal((6, 5, 7, 3))).astype(dtype))
        mean, var = F.channel_mean_var(x)
        assert mean.dtype == var.dtype == dtype
        exact = x.astype(np.float64)
        tolerance = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(mean, exact.mean(axis=(0, 2, 3)), rtol=tolerance)
        np.testing.assert_allclose(var, exact.var(axis=(0, 2, 3)), rtol=1e-3 if dtype == np.float32 else 1e-9)
        assert kernels.fast_channel_sums() == (backend != "numpy")
    finally:
        kernels.set_backend(previous)


def test_planar_input_and_evaluation_mode_compose_the_two_ops():
    x = random_array((2, 3, 4, 4), 5)  # planar memory: no pixel rows
    out = F.batch_norm(mt.Tensor(x, requires_grad=True), np.zeros(3), np.ones(3), None, None, training=True, relu=True)
    assert out._node.function is not F.BatchNormReLUFunction and out.data.min() >= 0
    evaluation = F.batch_norm(mt.Tensor(x), np.zeros(3), np.ones(3), None, None, training=False, relu=True)
    np.testing.assert_allclose(evaluation.data, np.maximum(x / np.sqrt(1 + 1e-5), 0), rtol=1e-12)


def fuses_relu(x):
    """Whether training-mode ``batch_norm(x, relu=True)`` runs as ``BatchNormReLUFunction``."""
    return batch_norm.choose_path(x, training=True, relu=True) == batch_norm.FUSED_RELU


def test_auto_fuses_on_compiled_backends_only():
    from minimtl import kernels

    x = channels_last(random_array((2, 3, 4, 4), 1))
    with batch_norm.settings(fuse_relu="auto"):
        assert fuses_relu(x) == (kernels.backend_name() != "numpy")
        assert not fuses_relu(np.ascontiguousarray(x))  # planar: never
    with batch_norm.settings(fuse_relu="never"):
        assert not fuses_relu(x)
    with pytest.raises(ValueError, match="fuse_relu"):
        with batch_norm.settings(fuse_relu="sometimes"):
            pass
    assert fuses_relu(x)  # the fixture's "always" is back after each block, the failed one included


def test_evaluation_mode_is_one_affine_op_whatever_the_grad_mode():
    x = random_array((3, 2, 4, 4), 6)
    mean, var, bias = np.array([0.5, -1.0]), np.array([2.0, 0.5]), mt.Tensor(np.array([0.1, 0.2]), requires_grad=True)
    recorded = F.batch_norm(mt.Tensor(x, requires_grad=True), mean, var, None, bias, training=False)
    assert recorded._node.function is batch_norm.BatchNormAffineFunction
    with mt.no_grad():
        plain = F.batch_norm(mt.Tensor(x), mean, var, None, bias, training=False)
    np.testing.assert_array_equal(plain.data, recorded.data)
    assert batch_norm.choose_path(x, training=False, relu=True) == batch_norm.EVALUATION_AFFINE
