"""The engine: graph recording, backward order and accumulation, no_grad, detach."""
import numpy as np
import pytest

import minimtl as mt
from minimtl import ops

pytestmark = pytest.mark.autograd


def test_python_numbers_default_to_float32_and_arrays_keep_their_dtype():
    assert mt.tensor([1.0, 2.0]).dtype == np.float32
    assert mt.Tensor(np.zeros(3)).dtype == np.float64
    assert (mt.tensor([1.0]) * 2.5).dtype == np.float32
    assert mt.Tensor(np.float64(1.5)).dtype == np.float64  # a NumPy scalar keeps its dtype, like an array


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        mt.Tensor(np.arange(3), requires_grad=True)


def test_shared_input_gets_the_sum_of_both_paths():
    x = mt.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = x * x + x * 3.0  # dy/dx = 2x + 3
    y.backward(np.ones(3))
    np.testing.assert_allclose(x.grad, 2 * x.data + 3)


def test_backward_twice_accumulates_exactly_twice():
    x = mt.Tensor(np.array([0.5, -1.5]), requires_grad=True)
    w = mt.Tensor(np.array([2.0, 3.0]), requires_grad=True)
    loss = ops.sum(ops.exp(x * w))
    loss.backward()
    first_x, first_w = x.grad.copy(), w.grad.copy()
    loss.backward()
    np.testing.assert_array_equal(x.grad, 2 * first_x)
    np.testing.assert_array_equal(w.grad, 2 * first_w)


def test_ten_thousand_op_chain_backpropagates_without_recursion_error():
    x = mt.Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward(np.ones(1))
    np.testing.assert_allclose(x.grad, [1.0001**10_000], rtol=1e-9)


def test_no_grad_records_nothing_and_detach_cuts_the_graph():
    x = mt.Tensor(np.ones(2), requires_grad=True)
    with mt.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf
    assert mt.is_grad_enabled()
    z = x.detach() * 2.0
    assert not z.requires_grad
    assert np.shares_memory(x.detach().data, x.data)


def test_backward_errors_are_clear():
    x = mt.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="explicit gradient"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2.0).backward(np.ones(4))
    with pytest.raises(RuntimeError, match="does not require grad"):
        mt.Tensor(np.ones(1)).backward()


def test_operations_do_not_mutate_their_inputs():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    a0, b0 = a.copy(), b.copy()
    ta, tb = mt.Tensor(a, requires_grad=True), mt.Tensor(b, requires_grad=True)
    out = ops.sum(ops.exp(ta * tb) / (tb * tb + 1.0) - ta)
    out.backward()
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def test_gradient_of_a_leaf_is_not_aliased_to_the_upstream_array():
    x = mt.Tensor(np.ones(3), requires_grad=True)
    upstream = np.full(3, 2.0)
    (x + 0.0).backward(upstream)
    upstream[:] = 99
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_gradcheck_sees_inputs_in_channels_last_memory():
    """A transposed (channels-last) input must be perturbed in place: reshaping it would perturb a copy."""
    from minimtl.gradcheck import numerical_gradient

    x = (np.arange(48.0) / 48).reshape(2, 3, 4, 2).transpose(0, 3, 1, 2)  # (2, 2, 3, 4) in (2, 3, 4, 2) memory
    assert not x.flags.c_contiguous
    upstream = np.ones(x.shape)
    numeric = numerical_gradient(lambda t: t * t, [x], upstream, 0)
    np.testing.assert_allclose(numeric, 2 * x, atol=1e-6)
