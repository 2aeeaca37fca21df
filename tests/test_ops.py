"""Gradient checks of the elementary ops (float64, random upstream gradient, hypothesis shapes)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minimtl as mt
from minimtl import ops
from minimtl.gradcheck import gradcheck
from minimtl.ops import unbroadcast
from strategies import random_array, settings_fast, shapes

pytestmark = pytest.mark.autograd


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast: the second drops leading axes and sets some sides to 1."""
    shape = draw(shapes(1, 3, 4))
    keep = draw(st.integers(0, len(shape)))
    other = tuple(1 if draw(st.booleans()) else s for s in shape[len(shape) - keep:])
    return (shape, other) if draw(st.booleans()) else (other, shape)


@settings(**settings_fast)
@given(broadcast_pair(), st.sampled_from(["add", "sub", "mul", "div"]), st.integers(0, 2**16), st.booleans())
def test_broadcasting_arithmetic_gradients(pair, name, seed, noncontiguous):
    a = random_array(pair[0], seed, noncontiguous=noncontiguous)
    b = random_array(pair[1], seed + 1)
    if name == "div":
        b = np.sign(b) * (np.abs(b) + 0.5)  # keep away from zero
    function = getattr(ops, name)
    gradcheck(function, [a, b])
    np.testing.assert_allclose(function(mt.Tensor(a), mt.Tensor(b)).data, {"add": np.add, "sub": np.subtract,
                               "mul": np.multiply, "div": np.divide}[name](a, b))


@settings(**settings_fast)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.booleans(), st.integers(0, 2**16))
def test_matmul_gradient(n, k, m, batched, seed):
    a = random_array((2, n, k) if batched else (n, k), seed)
    b = random_array((k, m), seed + 1)
    gradcheck(ops.matmul, [a, b])


@settings(**settings_fast)
@given(shapes(1, 4, 4), st.integers(0, 2**16))
def test_unary_gradients(shape, seed):
    x = random_array(shape, seed)
    gradcheck(ops.exp, [x])
    gradcheck(ops.log, [np.abs(x) + 0.5])
    gradcheck(ops.neg, [x])
    gradcheck(lambda t: ops.power(t, 3), [x])
    gradcheck(ops.relu, [np.sign(x) * (np.abs(x) + 1e-3)])  # away from the kink at 0


@settings(**settings_fast)
@given(shapes(1, 4, 4), st.data(), st.integers(0, 2**16))
def test_reduction_gradients(shape, data, seed):
    x = random_array(shape, seed)
    axes = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                               st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True).map(tuple)))
    keepdims = data.draw(st.booleans())
    gradcheck(lambda t: ops.sum(t, axes, keepdims), [x])
    gradcheck(lambda t: ops.mean(t, axes, keepdims), [x])
    np.testing.assert_allclose(ops.mean(mt.Tensor(x), axes, keepdims).data, x.mean(axis=axes, keepdims=keepdims))


@settings(**settings_fast)
@given(shapes(2, 4, 4), st.integers(0, 2**16))
def test_shape_gradients(shape, seed):
    x = random_array(shape, seed, noncontiguous=True)
    permutation = tuple(np.random.default_rng(seed).permutation(len(shape)))
    gradcheck(lambda t: ops.transpose(t, permutation), [x])
    gradcheck(lambda t: ops.reshape(t, (-1,)), [x])
    gradcheck(lambda t: ops.flatten(t, 1), [x])
    gradcheck(lambda t: t[..., ::2], [x])
    gradcheck(lambda t: t[np.array([0, 0, -1])], [x])  # a repeated index gathers twice and scatters back twice


@settings(**settings_fast)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(0, 2), st.integers(0, 2**16))
def test_concat_gradient_and_value(sizes, axis, seed):
    base = [2, 3, 2]
    arrays = []
    for i, size in enumerate(sizes):
        shape = list(base)
        shape[axis] = size
        arrays.append(random_array(tuple(shape), seed + i))
    gradcheck(lambda *ts: ops.concat(ts, axis), arrays)
    np.testing.assert_array_equal(ops.concat([mt.Tensor(a) for a in arrays], axis).data, np.concatenate(arrays, axis))


def test_concat_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        ops.concat([mt.Tensor(np.zeros((2, 3))), mt.Tensor(np.zeros((3, 3)))], axis=1)


def test_unbroadcast_sums_added_and_stretched_axes():
    grad = np.ones((2, 3, 4))
    np.testing.assert_array_equal(unbroadcast(grad, (3, 1)), np.full((3, 1), 8.0))
    np.testing.assert_array_equal(unbroadcast(grad, ()), np.array(24.0))


def test_matmul_rejects_vectors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ops.matmul(mt.Tensor(np.ones(3)), mt.Tensor(np.ones((3, 2))))
