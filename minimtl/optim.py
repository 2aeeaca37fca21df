"""Optimisers (SGD with momentum, Adam) and the paper's exponential learning-rate decay, Eq. (4).

An optimiser updates parameters in place from their ``.grad`` on ``step()``.
The learning rate is a number or a schedule — any callable from the step
number (0, 1, 2, ...) to a rate, such as ``ExponentialDecay``.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from minimtl.nn import Parameter


class ExponentialDecay:
    """Eq. (4): ``lr = initial_lr · decay_rate ^ (step / decay_steps)``.

    With ``staircase=True`` the exponent is ``floor(step / decay_steps)``, so
    the rate drops in steps every ``decay_steps``.  Defaults are Section 4.3's:
    0.01, 0.8 and 2000.
    """

    def __init__(self, initial_lr: float = 0.01, decay_rate: float = 0.8, decay_steps: int = 2000, staircase: bool = False):
        if initial_lr <= 0 or not 0 < decay_rate <= 1 or decay_steps <= 0:
            raise ValueError("need initial_lr > 0, 0 < decay_rate <= 1, decay_steps > 0; "
                             f"got {initial_lr}, {decay_rate}, {decay_steps}")
        self.initial_lr, self.decay_rate, self.decay_steps, self.staircase = initial_lr, decay_rate, decay_steps, staircase

    def __call__(self, step: int) -> float:
        exponent = step // self.decay_steps if self.staircase else step / self.decay_steps
        return self.initial_lr * self.decay_rate**exponent

    def __repr__(self) -> str:
        return (f"ExponentialDecay(initial_lr={self.initial_lr}, decay_rate={self.decay_rate}, "
                f"decay_steps={self.decay_steps}, staircase={self.staircase})")


class Optimizer:
    """Base class: holds the parameters, the step count and the learning rate (number or schedule)."""

    def __init__(self, parameters: Iterable[Parameter], lr: float | Callable[[int], float]):
        self.parameters = list(parameters)
        if not self.parameters:
            raise ValueError("optimizer got an empty parameter list")
        self.lr = lr
        self.step_count = 0

    @property
    def current_lr(self) -> float:
        """The learning rate the next ``step()`` will use."""
        return float(self.lr(self.step_count)) if callable(self.lr) else float(self.lr)

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.grad = None

    def step(self) -> None:
        lr = self.current_lr
        for index, p in enumerate(self.parameters):
            if p.grad is not None:
                self.update(index, p, p.grad, lr)
        self.step_count += 1

    def update(self, index: int, parameter: Parameter, grad: np.ndarray, lr: float) -> None:  # pragma: no cover
        raise NotImplementedError

    # State for checkpoints: the step count and per-parameter buffers, as arrays.
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"step_count": np.array(self.step_count)}
        for name, buffers in self._buffers().items():
            for index, buffer in buffers.items():
                state[f"{name}.{index}"] = buffer.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.step_count = int(state["step_count"])
        for name, buffers in self._buffers().items():
            buffers.clear()
            for key, value in state.items():
                if key.startswith(name + "."):
                    buffers[int(key[len(name) + 1:])] = np.array(value)

    def _buffers(self) -> dict[str, dict[int, np.ndarray]]:
        return {}


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    With gradient ``g`` (plus ``weight_decay · w`` if set) and velocity ``v``:
    ``v ← momentum · v + g``; ``w ← w − lr · v`` (or, Nesterov,
    ``w ← w − lr · (g + momentum · v)``) — PyTorch's formulation.
    Weight decay here is the plain ``λ w`` on every parameter; the paper's
    Eq. (2) instead puts ``λ‖W‖²`` in the loss on weights only (``minimtl.losses.total_loss``).
    """

    def __init__(self, parameters: Iterable[Parameter], lr: float | Callable[[int], float] = 0.01,
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(parameters, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.velocity: dict[int, np.ndarray] = {}

    def update(self, index: int, parameter: Parameter, grad: np.ndarray, lr: float) -> None:
        if self.weight_decay:
            grad = grad + self.weight_decay * parameter.data
        if self.momentum:
            v = self.velocity.get(index)
            v = grad.copy() if v is None else self.momentum * v + grad
            self.velocity[index] = v
            grad = grad + self.momentum * v if self.nesterov else v
        parameter.data -= (lr * grad).astype(parameter.dtype, copy=False)

    def _buffers(self) -> dict[str, dict[int, np.ndarray]]:
        return {"velocity": self.velocity}


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias correction and optional (L2-style) weight decay."""

    def __init__(self, parameters: Iterable[Parameter], lr: float | Callable[[int], float] = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(parameters, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.first_moment: dict[int, np.ndarray] = {}
        self.second_moment: dict[int, np.ndarray] = {}

    def update(self, index: int, parameter: Parameter, grad: np.ndarray, lr: float) -> None:
        if self.weight_decay:
            grad = grad + self.weight_decay * parameter.data
        m = self.first_moment.get(index, np.zeros_like(grad))
        v = self.second_moment.get(index, np.zeros_like(grad))
        m = self.beta1 * m + (1 - self.beta1) * grad
        v = self.beta2 * v + (1 - self.beta2) * grad * grad
        self.first_moment[index], self.second_moment[index] = m, v
        t = self.step_count + 1
        m_hat = m / (1 - self.beta1**t)
        v_hat = v / (1 - self.beta2**t)
        parameter.data -= (lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(parameter.dtype, copy=False)

    def _buffers(self) -> dict[str, dict[int, np.ndarray]]:
        return {"first_moment": self.first_moment, "second_moment": self.second_moment}


class WeightAverage:
    """An exponential moving average of the parameters (Polyak averaging), to evaluate with.

    After every optimiser step ``update()`` sets, for each parameter ``w`` and its average ``a``,

        a ← d_t · a + (1 − d_t) · w,   d_t = min(decay, (1 + t) / (10 + t)),

    where ``t`` counts the updates: early on ``d_t`` is small, so the random
    initial weights are soon forgotten.  SGD's last weights jitter around a
    minimum with the noise of the last batches; their average sits nearer its
    centre.  ``swap()`` exchanges the averaged and the live weights in place
    (a second ``swap()`` undoes it), so the same model evaluates either.

    Args:
        parameters: the parameters to average (``model.parameters()``).
        decay: ``decay`` above, in (0, 1); 0.999 averages over roughly the last 1,000 steps.
    """

    def __init__(self, parameters: Iterable[Parameter], decay: float = 0.999):
        if not 0 < decay < 1:
            raise ValueError(f"decay must be between 0 and 1, got {decay}")
        self.parameters = list(parameters)
        self.decay = float(decay)
        self.updates = 0
        self.averages = [p.data.copy() for p in self.parameters]

    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, parameter in zip(self.averages, self.parameters):
            average *= decay
            average += (1 - decay) * parameter.data
        self.updates += 1

    def swap(self) -> None:
        for index, parameter in enumerate(self.parameters):
            live = parameter.data.copy()
            parameter.data[...] = self.averages[index]
            self.averages[index] = live

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"updates": np.array(self.updates)}
        state.update({str(index): average.copy() for index, average in enumerate(self.averages)})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if len(state) - 1 != len(self.averages):
            raise ValueError(f"weight average: the state holds {len(state) - 1} arrays, the model {len(self.averages)}")
        self.updates = int(state["updates"])
        self.averages = [np.array(state[str(index)], dtype=a.dtype) for index, a in enumerate(self.averages)]
