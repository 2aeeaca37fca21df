"""gradcheck itself: a correct backward passes where finite differences are imprecise, a wrong one still fails.

Issue 20: ``softmax([[4.897, −5.634]])`` has a gradient of 3.3e-5 and central
differences that are off by 1e-10, so a plain relative error (2e-6 > 1e-6)
rejected its correct backward.  Each wrong backward below is checked on that
same input, and on a few other ops: a 1% error or a sign error must still fail.
"""
import numpy as np
import pytest

import minimtl as mt
import minimtl.batch_norm
from minimtl import conv
from minimtl import functional as F
from minimtl import ops
from minimtl.autograd import Function
from minimtl.gradcheck import finite_differences, gradcheck
from minimtl.losses import masked_cross_entropy
from strategies import random_array

pytestmark = pytest.mark.autograd

SATURATED = random_array((1, 2), 282) * 3  # the falsifying example of issue 20: shape (1, 2), axis 1, seed 282


def plain_relative_error(function, x):
    """The measure gradcheck used before issue 20: ‖a − n‖ / (‖a‖ + ‖n‖) over the whole input."""
    tensor = mt.Tensor(x.copy(), requires_grad=True)
    out = function(tensor)
    upstream = np.random.default_rng([0, 0x9E3779B9]).standard_normal(out.shape)
    out.backward(upstream)
    numeric, _ = finite_differences(function, [x], upstream, 0)
    return np.linalg.norm(tensor.grad - numeric) / (np.linalg.norm(tensor.grad) + np.linalg.norm(numeric))


def test_the_saturated_softmax_of_issue_20_passes_where_the_plain_relative_error_did_not():
    np.testing.assert_allclose(SATURATED, [[4.897, -5.634]], atol=1e-3)
    assert plain_relative_error(lambda t: F.softmax(t, 1), SATURATED) > 1e-6  # what failed the README's test command
    assert gradcheck(lambda t: F.softmax(t, 1), [SATURATED]) < 1e-6
    assert gradcheck(lambda t: F.log_softmax(t, 1), [SATURATED]) < 1e-6


class SoftmaxScaledBackward(F.SoftmaxFunction):
    """Softmax whose backward is 1% too large."""

    @staticmethod
    def backward(ctx, grad):
        return 1.01 * F.SoftmaxFunction.backward(ctx, grad)


class SoftmaxSignError(F.SoftmaxFunction):
    """Softmax whose backward adds ``Σ grad · s`` instead of subtracting it."""

    @staticmethod
    def backward(ctx, grad):
        (s,) = ctx.saved
        return s * (grad + (grad * s).sum(axis=ctx.axis, keepdims=True))


class SoftmaxSumsTheWrongAxis(F.SoftmaxFunction):
    """Softmax whose backward sums ``grad · s`` over axis 0, not the softmax's axis."""

    @staticmethod
    def backward(ctx, grad):
        (s,) = ctx.saved
        return s * (grad - (grad * s).sum(axis=0, keepdims=True))


class LogSoftmaxScaledBackward(F.LogSoftmaxFunction):
    """Log-softmax whose backward is 1% too large."""

    @staticmethod
    def backward(ctx, grad):
        return 1.01 * F.LogSoftmaxFunction.backward(ctx, grad)


class LogSoftmaxSignError(F.LogSoftmaxFunction):
    """Log-softmax whose backward adds ``softmax · Σ grad`` instead of subtracting it."""

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad + np.exp(out) * grad.sum(axis=ctx.axis, keepdims=True)


@pytest.mark.parametrize("wrong", [SoftmaxScaledBackward, SoftmaxSignError, SoftmaxSumsTheWrongAxis,
                                   LogSoftmaxScaledBackward, LogSoftmaxSignError], ids=lambda f: f.__name__)
def test_a_wrong_backward_fails_on_the_same_saturated_input(wrong):
    with pytest.raises(AssertionError, match="gradient of input 0 .* is wrong"):
        gradcheck(lambda t: wrong.apply(t, 1), [SATURATED])


def test_a_backward_one_percent_off_fails_by_a_wide_margin_on_the_saturated_input():
    """Not only just: the bound is about 3e-9 there, the 1% error 3.3e-7."""
    upstream = np.random.default_rng([0, 0x9E3779B9]).standard_normal((1, 2))
    numeric, bound = finite_differences(lambda t: F.softmax(t, 1), [SATURATED], upstream, 0)
    assert np.all(0.01 * np.abs(numeric) > 30 * bound)


class ConvOneWeightGradientOff(conv.Conv2dFunction):
    """conv2d whose weight gradient is 1% too large in one tap of one filter."""

    @staticmethod
    def backward(ctx, grad):
        grad_x, grad_w, grad_b = conv.Conv2dFunction.backward(ctx, grad)
        grad_w = grad_w.copy()
        grad_w[0, 0, 1, 0] *= 1.01
        return grad_x, grad_w, grad_b


def test_conv2d_with_one_weight_gradient_one_percent_off_fails():
    x, weight, bias = random_array((2, 3, 5, 4), 0), random_array((2, 3, 3, 2), 1), random_array((2,), 2)
    gradcheck(lambda a, b, c: conv.Conv2dFunction.apply(a, b, c, (1, 1), ((1, 1), (0, 1)), False), [x, weight, bias])
    with pytest.raises(AssertionError, match=r"(?s)gradient of input 1 .*\nworst element \(0, 0, 1, 0\)"):
        gradcheck(lambda a, b, c: ConvOneWeightGradientOff.apply(a, b, c, (1, 1), ((1, 1), (0, 1)), False),
                  [x, weight, bias])


class MatMulWithoutTranspose(ops.MatMul):
    """The classic slip: ``grad_a = grad @ b`` instead of ``grad @ bᵀ`` (same shape when b is square)."""

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return grad @ b, np.swapaxes(a, -1, -2) @ grad


def test_matmul_backward_without_the_transpose_fails():
    a, b = random_array((2, 3), 0), random_array((3, 3), 1)
    gradcheck(ops.matmul, [a, b])
    with pytest.raises(AssertionError, match="gradient of input 0"):
        gradcheck(MatMulWithoutTranspose.apply, [a, b])


CORRECT_BATCH_NORM = F.BatchNormFunction


class BatchNormScaledInputGradient(CORRECT_BATCH_NORM):
    """Training batch-norm whose input gradient is 1% too large (its γ and β gradients are right)."""

    @staticmethod
    def backward(ctx, grad):
        grads = list(CORRECT_BATCH_NORM.backward(ctx, grad))
        grads[0] = 1.01 * grads[0]
        return tuple(grads)


def test_batch_norm_with_an_input_gradient_one_percent_off_fails(monkeypatch):
    x, weight, bias = random_array((4, 3, 2, 2), 0) * 3 + 1, random_array((3,), 1), random_array((3,), 2)
    batch_norm = lambda t, w, b: F.batch_norm(t, None, None, w, b, training=True)  # noqa: E731
    gradcheck(batch_norm, [x, weight, bias])
    monkeypatch.setattr(minimtl.batch_norm, "BatchNormFunction", BatchNormScaledInputGradient)
    with minimtl.batch_norm.settings(fuse_relu="never"), pytest.raises(AssertionError, match="gradient of input 0"):
        gradcheck(batch_norm, [x, weight, bias])


class ReluWithNaNGradient(Function):
    @staticmethod
    def forward(ctx, x):
        return np.maximum(x, 0)

    @staticmethod
    def backward(ctx, grad):
        return np.full_like(grad, np.nan)


def test_a_nan_gradient_fails():
    with pytest.raises(AssertionError, match="is wrong"):
        gradcheck(ReluWithNaNGradient.apply, [np.array([0.5, -0.5])])


def test_the_bound_covers_the_actual_error_of_the_central_difference():
    """exp, whose derivative is known exactly: |D(h) − u·exp(x)| ≤ bound, and the bound is 1e-7 of the gradient."""
    x = np.array([-1.0, 0.5, 2.0, -0.3])
    upstream = np.random.default_rng(5).standard_normal(x.shape)
    numeric, bound = finite_differences(ops.exp, [x], upstream, 0)
    exact = upstream * np.exp(x)
    assert np.all(np.abs(numeric - exact) <= bound)
    assert np.all(bound < 1e-7 * np.abs(exact))


def test_a_gradient_drowned_by_a_larger_term_gets_a_bound_as_large_as_its_error():
    """g = u₀ e^0.001 + u₁ e^30: rounding e^30 (1e13) hides the first gradient entirely, and the bound says so."""
    x = np.array([1e-3, 30.0])
    upstream = np.random.default_rng(5).standard_normal(x.shape)
    numeric, bound = finite_differences(ops.exp, [x], upstream, 0)
    error = np.abs(numeric - upstream * np.exp(x))
    assert error[0] > 0.1 * abs(upstream[0])  # D(h) is useless for the small term ...
    assert np.all(error <= bound)  # ... and the bound covers it, so the check passes it as "small", not as "right"


def test_a_confident_cross_entropy_of_a_single_sample_passes():
    """Loss 9e-4 (logit margin 7): the sum of exponentials the forward rounds is about 1, the gradient 1e-3."""
    gradcheck(lambda t: masked_cross_entropy(t, np.array([0]), np.ones(1), "all"), [np.array([[3.5, -3.5]])])


@pytest.mark.xfail(strict=True, reason="the limit of any check from values of g: see the gradcheck module docstring")
def test_a_near_certain_cross_entropy_of_a_single_sample_is_beyond_finite_differences():
    """Loss 8e-6 (margin 11.7): the forward rounds 1 + 8e-6 to ε, an error of 3e-6 of the gradient that changes
    smoothly with the logits, so no difference of g's values shows it.  Test inputs keep margins below about 10."""
    gradcheck(lambda t: masked_cross_entropy(t, np.array([0]), np.ones(1), "all"), [np.array([[5.5, -6.2]])])


def test_an_output_that_is_exactly_zero_around_x_checks_that_the_gradient_is_zero():
    labels, absent = np.array([0, 1]), np.zeros(2)  # no sample carries the task: the loss is 0 for every logit
    assert gradcheck(lambda t: masked_cross_entropy(t, labels, absent, "present"), [random_array((2, 3), 0)]) == 0
