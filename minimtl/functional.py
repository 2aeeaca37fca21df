"""Layers as functions: pooling, batch-norm, dropout, linear, PReLU, softmax (convolution: ``minimtl/conv/``).

Each is a ``Function`` with forward and backward side by side (or, where
that is simpler and just as fast, a composition of primitives from
``minimtl/ops.py``).  The modules in ``minimtl/nn.py`` hold the parameters
and call these.  Image tensors are NCHW: ``(batch, channels, height, width)``.
Max-pooling lives in ``minimtl/pooling.py`` and batch-norm in
``minimtl/batch_norm.py``; this module re-exports them (``F.max_pool2d``,
``F.batch_norm``, ``F.fold_batch_norm``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from minimtl import ops
from minimtl.autograd import Context, Function, Tensor, as_tensor
from minimtl.batch_norm import (BatchNormAffineFunction, BatchNormFunction, BatchNormReLUFunction,  # noqa: F401
                                batch_norm, batch_norm_affine, channel_mean_var, fold_batch_norm)
from minimtl.checks import IntPair, check_float, check_image_batch  # noqa: F401
from minimtl.checks import int_pair as _pair  # noqa: F401
from minimtl.conv import conv2d, conv_padding  # noqa: F401  the convolution lives in minimtl/conv/
from minimtl.pooling import MaxPool2dFunction, max_pool2d, max_pool2d_values, pool_padding  # noqa: F401


# ------------------------------------------------------------------ linear
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Fully connected layer ``y = x @ weightᵀ + bias``.

    Shapes: ``x (N, in)``, ``weight (out, in)``, ``bias (out,)`` → ``y (N, out)``.
    Composed from ``matmul`` and ``add``, whose backwards give
    ``grad_x = grad @ weight``, ``grad_weight = gradᵀ @ x``, ``grad_bias = Σ_N grad``.
    """
    check_float(x, "linear input")
    if x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear expects input (N, {weight.shape[1]}), got {tuple(x.shape)}")
    y = ops.matmul(x, ops.transpose(weight))
    return y + bias if bias is not None else y


# ------------------------------------------------------------------ dropout
class DropoutFunction(Function):
    """Multiply by a fixed 0/(1/(1−p)) mask: the gradient goes through the same mask."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (mask,) = ctx.saved
        return grad * mask


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator: np.random.Generator | None = None) -> Tensor:
    """Inverted dropout: in training, zero each value with probability ``p`` and scale the rest by ``1/(1−p)``,
    so evaluation (which returns ``x`` unchanged) needs no rescaling.  ``x`` any shape.
    """
    check_float(x, "dropout input")
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    generator = generator if generator is not None else np.random.default_rng()
    keep = generator.random(x.shape) >= p
    mask = keep.astype(x.dtype) / x.dtype.type(1 - p)
    return DropoutFunction.apply(x, mask)


# ----------------------------------------------------------- activations
class PReLUFunction(Function):
    """Parametric ReLU: ``y = x`` where ``x > 0``, else ``alpha · x``; one ``alpha`` per channel (axis 1).

    Shapes: ``x (N, C, *)``, ``alpha (C,)`` or ``(1,)``.  MTCNN uses it after every convolution.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        a = alpha.reshape(shape)
        ctx.save_for_backward(x, a)
        ctx.alpha_shape = alpha.shape
        return np.where(x > 0, x, a * x)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        x, a = ctx.saved
        positive = x > 0
        grad_x = np.where(positive, grad, a * grad)
        axes = (0,) + tuple(range(2, x.ndim))
        grad_a = np.where(positive, 0, grad * x).sum(axis=axes)
        if ctx.alpha_shape == (1,):
            grad_a = grad_a.sum(keepdims=True)
        return grad_x, grad_a.reshape(ctx.alpha_shape)


def prelu(x: Tensor, alpha: Tensor) -> Tensor:
    """PReLU with per-channel slopes ``alpha (C,)`` (or one shared slope ``(1,)``) on ``x (N, C, *)``."""
    check_float(x, "prelu input")
    if x.ndim < 2 or alpha.shape not in ((x.shape[1],), (1,)):
        raise ValueError(f"prelu alpha of shape {tuple(alpha.shape)} does not fit input {tuple(x.shape)} (channels on axis 1)")
    return PReLUFunction.apply(x, as_tensor(alpha))


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)``."""
    return ops.relu(x)


class LogSoftmaxFunction(Function):
    """``log_softmax(x)_j = x_j − log Σ_k exp(x_k)``, computed after subtracting the max (never overflows).

    Backward: ``grad − softmax · Σ grad``.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, axis: int) -> np.ndarray:
        shifted = x - x.max(axis=axis, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (out,) = ctx.saved
        return grad - np.exp(out) * grad.sum(axis=ctx.axis, keepdims=True)


class SoftmaxFunction(Function):
    """``softmax(x)_j = exp(x_j) / Σ_k exp(x_k)`` (max-shifted).  Backward: ``s · (grad − Σ grad · s)``."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, axis: int) -> np.ndarray:
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        out = e / e.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (s,) = ctx.saved
        return s * (grad - (grad * s).sum(axis=ctx.axis, keepdims=True))


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Log of the softmax along ``axis``, numerically stable."""
    check_float(x, "log_softmax input")
    return LogSoftmaxFunction.apply(x, axis)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Softmax along ``axis`` (probabilities summing to one), numerically stable."""
    check_float(x, "softmax input")
    return SoftmaxFunction.apply(x, axis)


def concat(tensors: Sequence[Tensor], axis: int = 1) -> Tensor:
    """Concatenate along ``axis``; see ``minimtl.ops.concat``."""
    return ops.concat(tensors, axis)


def flatten(x: Tensor, start_axis: int = 1) -> Tensor:
    """``(N, C, H, W)`` → ``(N, C·H·W)``."""
    return ops.flatten(x, start_axis)


def standardize_images(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Each image shifted to mean 0 and scaled to standard deviation 1: ``(x − μ) / √(σ² + eps)``.

    ``x`` ``(N, C, H, W)`` → the same shape; μ and σ² are taken over each image's
    own ``C·H·W`` values, so a dark and a bright photo of one face give the same
    input.  ``eps`` keeps a flat image (σ = 0) finite; it is small beside the
    variance of any real face (about 0.01–0.05 for pixels in [0, 1]), so contrast
    does not change the result.  Composed of primitive ops, so autograd gives
    its backward.
    """
    axes = (1, 2, 3)
    centred = x - ops.mean(x, axis=axes, keepdims=True)
    variance = ops.mean(centred * centred, axis=axes, keepdims=True)
    return centred / ops.power(variance + eps, 0.5)

