"""Layers as modules that own their parameters, in the manner of ``torch.nn``.

A ``Module`` registers every ``Parameter`` and sub-module assigned to it as
an attribute, so ``parameters()``, ``named_parameters()``, ``state_dict()``,
``train()`` and ``eval()`` reach the whole tree.  The arithmetic lives in
``minimtl/functional.py``; a module only stores weights and calls it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Mapping

import numpy as np

from minimtl import functional as F
from minimtl.autograd import Tensor


class Parameter(Tensor):
    """A tensor a module learns.  ``decay`` marks the weights that Eq. (2)'s L2 term ``λ‖W‖²`` covers."""

    def __init__(self, data: Any, decay: bool = False):
        super().__init__(np.array(data), requires_grad=True, _copy=False)
        self.decay = decay


def initial_weight(shape: tuple[int, ...], fan_in: int, init: str, generator: np.random.Generator,
                   dtype=np.float32) -> np.ndarray:
    """Draw initial weights.

    ``init="paper"``: Gaussian with zero mean and variance 0.01 (Section 4.3).
    ``init="he"``: Gaussian with variance ``2 / fan_in`` (He et al., 2015), which
    keeps activations at a steady scale through a deep ReLU network.
    """
    if init == "paper":
        std = 0.1
    elif init == "he":
        std = np.sqrt(2.0 / fan_in)
    else:
        raise ValueError(f"init must be 'paper' or 'he', got {init!r}")
    return (generator.standard_normal(shape) * std).astype(dtype)


class Module:
    """Base class of every layer and model.

    Subclasses set parameters and sub-modules as attributes in ``__init__``
    and define ``forward``.  Calling the module calls ``forward``.  Buffers
    (state that is saved but not learned, like batch-norm's running mean)
    are NumPy arrays registered with ``register_buffer``.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting attributes")
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array: np.ndarray) -> None:
        """Keep ``array`` as saved state (in ``state_dict``) that gradients do not touch."""
        self.__setattr__(name, array)
        self._buffers[name] = array

    def forward(self, *args: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ----------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for prefix, module in self.named_modules():
            for name, parameter in module._parameters.items():
                yield (f"{prefix}.{name}" if prefix else name), parameter

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def decay_parameters(self) -> list[Parameter]:
        """The weights of convolutions and linear layers: what Eq. (2)'s ``λ‖W‖²`` regularises."""
        return [p for p in self.parameters() if p.decay]

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for prefix, module in self.named_modules():
            for name, buffer in module._buffers.items():
                yield (f"{prefix}.{name}" if prefix else name), buffer

    def num_parameters(self) -> int:
        """Number of trainable scalars (Table 3's "Parameters")."""
        return int(sum(p.size for p in self.parameters()))

    # ---------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> "Module":
        """Training mode: dropout drops, batch-norm uses and updates batch statistics."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode: dropout is the identity, batch-norm uses its running statistics."""
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # ---------------------------------------------------------------- state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and buffer, by dotted name."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, parameter in self.named_parameters():
            state[name] = parameter.data.copy()
        for name, buffer in self.named_buffers():
            state[name] = buffer.copy()
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers, in place.

        Raises ``ValueError`` naming every missing, unexpected or mis-shaped
        entry (all of them, not just the first) before changing anything.
        """
        targets: dict[str, np.ndarray] = {name: p.data for name, p in self.named_parameters()}
        targets.update(dict(self.named_buffers()))
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        misshaped = [f"{name}: file {np.shape(state[name])}, model {targets[name].shape}"
                     for name in targets if name in state and np.shape(state[name]) != targets[name].shape]
        problems = []
        if missing and strict:
            problems.append(f"missing: {', '.join(missing)}")
        if unexpected and strict:
            problems.append(f"unexpected: {', '.join(unexpected)}")
        if misshaped:
            problems.append(f"wrong shape: {'; '.join(misshaped)}")
        if problems:
            raise ValueError(f"state does not fit {type(self).__name__} — " + " | ".join(problems))
        for name, target in targets.items():
            if name in state:
                target[...] = state[name]

    # --------------------------------------------------------------- display
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        lines.append(")")
        return "\n".join(lines)


class Sequential(Module):
    """Modules applied one after another: ``Sequential(a, b, c)(x) == c(b(a(x)))``."""

    def __init__(self, *modules: Module):
        super().__init__()
        for index, module in enumerate(modules):
            setattr(self, str(index), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, x: Tensor) -> Tensor:
        for module in self._modules.values():
            x = module(x)
        return x


class Conv2d(Module):
    """2-D convolution layer: ``(N, in_channels, H, W)`` → ``(N, out_channels, OH, OW)``.

    Parameters: ``weight (out_channels, in_channels, KH, KW)`` (regularised by
    Eq. 2) and ``bias (out_channels,)`` unless ``bias=False``.  ``relu=True``
    returns ``relu(conv2d(x))``, computed in one op (``conv2d(..., relu=True)``):
    the layers of ``BKNet.fuse_for_inference``, batch-norm folded in.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: F.IntPair, stride: F.IntPair = 1,
                 padding: F.IntPair | str = 0, bias: bool = True, init: str = "he",
                 generator: np.random.Generator | None = None, relu: bool = False):
        super().__init__()
        self.relu = bool(relu)
        kh, kw = F._pair(kernel_size, "kernel_size")
        generator = generator if generator is not None else np.random.default_rng()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        fan_in = in_channels * kh * kw
        self.weight = Parameter(initial_weight((out_channels, in_channels, kh, kw), fan_in, init, generator), decay=True)
        self.bias = Parameter(np.zeros(out_channels, dtype=np.float32)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, relu=self.relu)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, bias={self.bias is not None}" + (", relu=True" if self.relu else ""))


class Linear(Module):
    """Fully connected layer: ``(N, in_features)`` → ``(N, out_features)``.

    Parameters: ``weight (out_features, in_features)`` (regularised by Eq. 2)
    and ``bias (out_features,)`` unless ``bias=False``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: str = "he",
                 generator: np.random.Generator | None = None):
        super().__init__()
        generator = generator if generator is not None else np.random.default_rng()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(initial_weight((out_features, in_features), in_features, init, generator), decay=True)
        self.bias = Parameter(np.zeros(out_features, dtype=np.float32)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class MaxPool2d(Module):
    """Max pooling: ``(N, C, H, W)`` → ``(N, C, OH, OW)``; see ``pooling.max_pool2d``."""

    def __init__(self, kernel_size: F.IntPair, stride: F.IntPair | None = None, padding: F.IntPair | str = 0,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}, ceil_mode={self.ceil_mode}"


class _BatchNorm(Module):
    """Shared code of ``BatchNorm1d`` and ``BatchNorm2d``.

    ``scale`` and ``shift`` choose which of γ (``weight``) and β (``bias``)
    are learned.  The paper's parameter counts (Table 3) hold with
    ``scale=False``: one additive term per channel.  ``relu=True`` makes the
    layer return ``relu(batch_norm(x))``, which ``minimtl.batch_norm`` may
    compute as one op in training (BKNet's blocks: convolution, then this).
    """

    expected_ndim = 0

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, scale: bool = True, shift: bool = True,
                 relu: bool = False):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.relu = num_features, eps, momentum, bool(relu)
        self.weight = Parameter(np.ones(num_features, dtype=np.float32)) if scale else None
        self.bias = Parameter(np.zeros(num_features, dtype=np.float32)) if shift else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
        self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        """Batch-norm of ``x`` (``F.batch_norm``), and its ReLU if the layer has ``relu=True``."""
        if x.ndim != self.expected_ndim:
            raise ValueError(f"{type(self).__name__} expects {self.expected_ndim}-D input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) got {x.shape[1]} channels (shape {tuple(x.shape)})")
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=self.training, momentum=self.momentum, eps=self.eps, relu=self.relu)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, scale={self.weight is not None}, shift={self.bias is not None}"
                + (", relu=True" if self.relu else ""))


class BatchNorm1d(_BatchNorm):
    """Batch-norm over the features of ``(N, C)``."""

    expected_ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch-norm over the channels of ``(N, C, H, W)`` (statistics over N, H and W)."""

    expected_ndim = 4


class Dropout(Module):
    """Inverted dropout with probability ``p`` in training, the identity in evaluation.

    ``generator`` (a ``np.random.Generator``) makes the masks reproducible.
    """

    def __init__(self, p: float = 0.5, generator: np.random.Generator | None = None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.generator = generator if generator is not None else np.random.default_rng()

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ReLU(Module):
    """``max(x, 0)``, any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class PReLU(Module):
    """Parametric ReLU with ``num_parameters`` learned slopes (1, or one per channel), initialised to ``init``."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        super().__init__()
        self.weight = Parameter(np.full(num_parameters, init, dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(x, self.weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.weight.size}"


class Flatten(Module):
    """``(N, C, H, W)`` → ``(N, C·H·W)``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x)


class Softmax(Module):
    """Softmax over ``axis`` (default the last)."""

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = axis

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.axis)
