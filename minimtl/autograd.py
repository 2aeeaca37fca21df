"""The autograd engine: ``Tensor``, ``Function`` and ``backward``.

A ``Tensor`` wraps a NumPy array.  Every operation on tensors is a
``Function`` subclass with a static ``forward(ctx, ...)`` that computes the
result from NumPy arrays and a static ``backward(ctx, grad_output)`` that
returns one gradient per tensor input.  ``Function.apply`` runs the forward and,
when any input needs a gradient, records a ``Node`` linking the result to its
inputs.  ``Tensor.backward()`` then walks that graph once, in reverse
topological order, with an explicit stack (no recursion, so a chain of
10,000 operations is fine), and accumulates into ``.grad`` of the leaves
exactly as PyTorch does: calling it twice adds the gradient twice.

Gradients flow as plain NumPy arrays; only leaves see them, as ``.grad``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

DEFAULT_DTYPE = np.float32

_grad_enabled = True


def is_grad_enabled() -> bool:
    """Whether operations currently record a graph for ``backward``."""
    return _grad_enabled


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Context manager in which no graph is recorded (evaluation, optimiser steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


class Context:
    """What a ``Function`` keeps between its forward and its backward.

    ``save_for_backward(*arrays)`` stores arrays in ``saved``; any other
    attribute (``ctx.stride = 2``) may be set freely.  ``needs_grad[i]`` tells
    the backward whether input ``i`` wants a gradient, so it may skip work.
    ``records`` tells the forward whether a backward can follow at all (grad
    mode on and some input needs a gradient): a forward may then skip
    keeping what only the backward reads (``pooling.MaxPool2dFunction``).
    """

    def __init__(self, needs_grad: tuple[bool, ...] = (), records: bool = False):
        self.needs_grad = needs_grad
        self.records = records
        self.saved: tuple[Any, ...] = ()

    def save_for_backward(self, *values: Any) -> None:
        self.saved = values


class Node:
    """One recorded operation: the function, its context and its tensor inputs."""

    __slots__ = ("function", "ctx", "inputs")

    def __init__(self, function: type["Function"], ctx: Context, inputs: tuple["Tensor", ...]):
        self.function = function
        self.ctx = ctx
        self.inputs = inputs


class Function:
    """Base class of every differentiable operation.

    Subclasses define ``forward(ctx, *args)`` on NumPy arrays (tensor
    arguments arrive as their ``.data``; other arguments unchanged) and
    ``backward(ctx, grad_output)`` returning one gradient (or ``None``) per
    tensor argument, in order.  Call an operation with ``MyFunction.apply(...)``.
    """

    @staticmethod
    def forward(ctx: Context, *args: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> "Tensor":
        tensor_inputs = tuple(a for a in args if isinstance(a, Tensor))
        needs_grad = tuple(t.requires_grad for t in tensor_inputs)
        record = _grad_enabled and any(needs_grad)
        ctx = Context(needs_grad, record)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = cls.forward(ctx, *raw, **kwargs)
        result = Tensor(out, requires_grad=record, _copy=False)
        if record:
            result._node = Node(cls, ctx, tensor_inputs)
        return result


def _as_array(data: Any, dtype: Any) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    array = np.asarray(data, dtype=dtype)
    if dtype is None and array.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
        # Python floats and lists become float32, the framework's default; NumPy arrays and scalars keep theirs.
        array = array.astype(DEFAULT_DTYPE)
    return array


class Tensor:
    """An n-dimensional array that can remember how it was computed.

    Args:
        data: anything ``np.asarray`` accepts.  NumPy arrays keep their dtype
            (so float64 stays float64 for gradient checks); Python numbers and
            lists become float32.
        requires_grad: whether ``backward`` should compute ``.grad`` for it.
        dtype: force a dtype.

    Attributes:
        data: the NumPy array.
        grad: the accumulated gradient (a NumPy array of the same shape), or None.
    """

    __array_priority__ = 1000  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, _copy: bool = True):
        array = _as_array(data, dtype) if _copy else data
        if requires_grad and not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {array.dtype}")
        self.data: np.ndarray = array
        self.requires_grad = bool(requires_grad)
        self.grad: np.ndarray | None = None
        self._node: Node | None = None

    # ----------------------------------------------------------------- basics
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{grad})"

    def numpy(self) -> np.ndarray:
        """The underlying array (not a copy)."""
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        """A tensor sharing the data but cut from the graph."""
        return Tensor(self.data, requires_grad=False, _copy=False)

    def zero_grad(self) -> None:
        self.grad = None

    # --------------------------------------------------------------- backward
    def backward(self, grad: Any = None) -> None:
        """Back-propagate from this tensor, accumulating ``.grad`` into the leaves.

        Args:
            grad: the upstream gradient, same shape as this tensor.  May be
                omitted only for a tensor with one element (a loss).
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (was it computed under no_grad?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() needs an explicit gradient for a tensor of shape {self.shape}")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"gradient of shape {grad.shape} given for a tensor of shape {self.shape}")

        order = _topological_order(self)
        grads: dict[int, np.ndarray] = {id(self): grad}
        for tensor in order:  # from the output back to the leaves
            g = grads.pop(id(tensor), None)
            if g is None:
                continue
            node = tensor._node
            if node is None:
                tensor.grad = g.copy() if tensor.grad is None else tensor.grad + g
                continue
            input_grads = node.function.backward(node.ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(node.inputs):
                raise RuntimeError(
                    f"{node.function.__name__}.backward returned {len(input_grads)} gradients for {len(node.inputs)} inputs"
                )
            for parent, parent_grad in zip(node.inputs, input_grads):
                if parent_grad is None or not parent.requires_grad:
                    continue
                if parent_grad.shape != parent.shape:
                    raise RuntimeError(
                        f"{node.function.__name__}.backward gave a gradient of shape {parent_grad.shape} "
                        f"for an input of shape {parent.shape}"
                    )
                key = id(parent)
                grads[key] = parent_grad if key not in grads else grads[key] + parent_grad

    # ----------------------------------------------------- operator overloads
    # The operations themselves live in minimtl/ops.py; these are shortcuts.
    def __add__(self, other): return _ops().add(self, other)
    def __radd__(self, other): return _ops().add(other, self)
    def __sub__(self, other): return _ops().sub(self, other)
    def __rsub__(self, other): return _ops().sub(other, self)
    def __mul__(self, other): return _ops().mul(self, other)
    def __rmul__(self, other): return _ops().mul(other, self)
    def __truediv__(self, other): return _ops().div(self, other)
    def __rtruediv__(self, other): return _ops().div(other, self)
    def __neg__(self): return _ops().neg(self)
    def __pow__(self, exponent): return _ops().power(self, exponent)
    def __matmul__(self, other): return _ops().matmul(self, other)
    def __rmatmul__(self, other): return _ops().matmul(other, self)
    def __getitem__(self, index): return _ops().getitem(self, index)

    def sum(self, axis=None, keepdims=False): return _ops().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops().mean(self, axis, keepdims)
    def exp(self): return _ops().exp(self)
    def log(self): return _ops().log(self)
    def relu(self): return _ops().relu(self)
    def reshape(self, *shape): return _ops().reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list))
                                                     else shape)
    def transpose(self, *axes): return _ops().transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list))
                                                        else (axes or None))
    def flatten(self, start_axis: int = 1): return _ops().flatten(self, start_axis)

    @property
    def T(self): return _ops().transpose(self, None)


def _ops():
    from minimtl import ops  # late import: ops imports this module

    return ops


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root``, each after every tensor that uses it.

    Iterative depth-first search with an explicit stack, so deep graphs never
    hit Python's recursion limit.
    """
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        tensor, children_done = stack.pop()
        if children_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            for parent in tensor._node.inputs:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    order.reverse()
    return order


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Build a new ``Tensor`` holding a copy of ``data`` (float32 for Python numbers and lists)."""
    return Tensor(np.array(_as_array(data, dtype), copy=True), requires_grad=requires_grad, _copy=False)


def as_tensor(value: Any, like: Tensor | None = None) -> Tensor:
    """Wrap ``value`` as a constant tensor (no copy of arrays), matching ``like``'s dtype for Python numbers."""
    if isinstance(value, Tensor):
        return value
    if like is not None and not isinstance(value, np.ndarray):
        return Tensor(np.asarray(value, dtype=like.dtype), _copy=False)
    return Tensor(value)

