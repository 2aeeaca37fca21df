"""Elementary tensor operations, each a ``Function`` with its forward and backward side by side.

These are the primitives: arithmetic with NumPy broadcasting, matrix
product, shape changes, reductions, ``exp``/``log``, ``relu``, indexing and
``concat``.  Layers (convolution, pooling, batch-norm, ...) live in
``minimtl/functional.py``; the paper's losses in ``minimtl/losses.py``.

Notation in docstrings: ``x (N, C)`` means argument ``x`` has shape (N, C);
``*`` stands for any number of dimensions.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from minimtl.autograd import Context, Function, Tensor, as_tensor


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``.

    The backward of every broadcasting operation: if ``a (3, 1)`` was
    broadcast against ``b (2, 3, 4)``, the gradient for ``a`` is the upstream
    ``(2, 3, 4)`` gradient summed over axis 0 and over the stretched axis 2.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra > 0 else grad
    stretched = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Two operands as tensors; a Python number takes the dtype of the tensor beside it."""
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a)
    return as_tensor(a, like=b), b


# ------------------------------------------------------------------ arithmetic
class Add(Function):
    """``a + b`` with broadcasting.  Backward: the upstream gradient, unbroadcast to each shape."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(grad, ctx.shapes[1])


class Sub(Function):
    """``a - b`` with broadcasting."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(-grad, ctx.shapes[1])


class Mul(Function):
    """``a * b`` elementwise with broadcasting.  d/da = b, d/db = a."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        a, b = ctx.saved
        grad_a = unbroadcast(grad * b, a.shape) if ctx.needs_grad[0] else None
        grad_b = unbroadcast(grad * a, b.shape) if ctx.needs_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    """``a / b`` elementwise with broadcasting.  d/da = 1/b, d/db = -a/b²."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        a, b = ctx.saved
        grad_a = unbroadcast(grad / b, a.shape) if ctx.needs_grad[0] else None
        grad_b = unbroadcast(-grad * a / (b * b), b.shape) if ctx.needs_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    """``-x``."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        return -x

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        return -grad


class Power(Function):
    """``x ** p`` for a constant exponent ``p``.  d/dx = p x^(p-1)."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, exponent: float) -> np.ndarray:
        ctx.save_for_backward(x)
        ctx.exponent = exponent
        return x**exponent

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (x,) = ctx.saved
        p = ctx.exponent
        return grad * p * x ** (p - 1)


class MatMul(Function):
    """Matrix product ``a @ b`` of ``a (*, n, k)`` and ``b (*, k, m)`` → ``(*, n, m)``; 2-D is the usual case.

    Backward: ``grad_a = grad @ bᵀ``, ``grad_b = aᵀ @ grad`` (summed over broadcast batch axes).
    """

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul needs operands with at least 2 dimensions, got shapes {a.shape} and {b.shape}")
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        a, b = ctx.saved
        grad_a = unbroadcast(grad @ np.swapaxes(b, -1, -2), a.shape) if ctx.needs_grad[0] else None
        grad_b = unbroadcast(np.swapaxes(a, -1, -2) @ grad, b.shape) if ctx.needs_grad[1] else None
        return grad_a, grad_b


def add(a, b) -> Tensor:
    return Add.apply(*_pair(a, b))


def sub(a, b) -> Tensor:
    return Sub.apply(*_pair(a, b))


def mul(a, b) -> Tensor:
    return Mul.apply(*_pair(a, b))


def div(a, b) -> Tensor:
    return Div.apply(*_pair(a, b))


def neg(x: Tensor) -> Tensor:
    return Neg.apply(x)


def power(x: Tensor, exponent: float) -> Tensor:
    if isinstance(exponent, Tensor):
        raise TypeError("power supports a constant (Python number) exponent only")
    return Power.apply(x, exponent)


def matmul(a, b) -> Tensor:
    return MatMul.apply(*_pair(a, b))


# --------------------------------------------------------------- elementwise
class Exp(Function):
    """``exp(x)``; its derivative is itself."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        out = np.exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (out,) = ctx.saved
        return grad * out


class Log(Function):
    """Natural logarithm ``log(x)``; d/dx = 1/x."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (x,) = ctx.saved
        return grad / x


class ReLU(Function):
    """``max(x, 0)``; the gradient passes where ``x > 0``."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        out = np.maximum(x, 0)  # a ufunc keeps the memory layout of x (channels-last stays so)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (out,) = ctx.saved
        return grad * (out > 0)


def exp(x: Tensor) -> Tensor:
    return Exp.apply(x)


def log(x: Tensor) -> Tensor:
    return Log.apply(x)


def relu(x: Tensor) -> Tensor:
    return ReLU.apply(x)


# ---------------------------------------------------------------- reductions
def _normalise_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


class Sum(Function):
    """Sum over ``axis`` (all axes if None).  Backward: the gradient broadcast back to the input shape."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, axis=None, keepdims: bool = False) -> np.ndarray:
        ctx.shape = x.shape
        ctx.axes = _normalise_axes(axis, x.ndim)
        return np.asarray(x.sum(axis=ctx.axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        kept = np.expand_dims(grad, ctx.axes) if grad.ndim != len(ctx.shape) else grad
        return np.broadcast_to(kept, ctx.shape).copy()


def sum(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - mirrors numpy.sum
    return Sum.apply(x, axis, keepdims)


def mean(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis``: composed as ``sum / count`` so it needs no backward of its own."""
    count = int(np.prod([x.shape[a] for a in _normalise_axes(axis, x.ndim)]))
    return sum(x, axis, keepdims) / count


# ------------------------------------------------------------- shape changes
class Reshape(Function):
    """View ``x`` with a new shape of the same size; the gradient is reshaped back."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        return grad.reshape(ctx.shape)


class Transpose(Function):
    """Permute axes (reverse them if ``axes`` is None); the gradient is permuted back."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, axes: Sequence[int] | None) -> np.ndarray:
        ctx.axes = tuple(axes) if axes is not None else tuple(reversed(range(x.ndim)))
        return np.transpose(x, ctx.axes)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        return np.transpose(grad, np.argsort(ctx.axes))


class GetItem(Function):
    """``x[index]`` for any NumPy index; the gradient is scattered back (repeated indices add up)."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, index: Any) -> np.ndarray:
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        return np.array(x[index])

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        out = np.zeros(ctx.shape, dtype=grad.dtype)
        np.add.at(out, ctx.index, grad)
        return out


class Concat(Function):
    """Join tensors along ``axis``: ``xs[i] (*, n_i, *)`` → ``(*, sum n_i, *)``.  Backward splits the gradient.

    Config C of the paper concatenates the first block's pooled features with
    the last block's before the task heads (Section 3.2).
    """

    @staticmethod
    def forward(ctx: Context, *arrays_and_axis: Any) -> np.ndarray:
        *arrays, axis = arrays_and_axis
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        boundaries = np.cumsum(ctx.sizes)[:-1]
        return tuple(np.split(grad, boundaries, axis=ctx.axis))


def reshape(x: Tensor, shape: Sequence[int]) -> Tensor:
    return Reshape.apply(x, tuple(shape))


def transpose(x: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    return Transpose.apply(x, axes)


def flatten(x: Tensor, start_axis: int = 1) -> Tensor:
    """Merge every axis from ``start_axis`` on: ``(N, C, H, W)`` → ``(N, C·H·W)``."""
    return reshape(x, x.shape[:start_axis] + (-1,))


def getitem(x: Tensor, index: Any) -> Tensor:
    if isinstance(index, Tensor):
        index = index.data
    return GetItem.apply(x, index)


def concat(tensors: Sequence[Tensor], axis: int = 1) -> Tensor:
    """Concatenate along ``axis`` (default 1: channels of NCHW, features of (N, F))."""
    if len(tensors) == 0:
        raise ValueError("concat needs at least one tensor")
    tensors = [as_tensor(t) for t in tensors]
    ndim = tensors[0].ndim
    axis = axis % ndim
    for t in tensors[1:]:
        if t.ndim != ndim or any(t.shape[i] != tensors[0].shape[i] for i in range(ndim) if i != axis):
            raise ValueError(
                f"concat along axis {axis} needs equal shapes elsewhere, got {[tuple(t.shape) for t in tensors]}"
            )
    return Concat.apply(*tensors, axis)
