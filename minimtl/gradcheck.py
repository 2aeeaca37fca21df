"""Numerical gradient checks: is an op's backward the derivative of its forward?

``gradcheck(function, inputs)`` runs ``function`` on float64 tensors, sends a
*random* upstream gradient ``u`` back through it, and compares every input's
analytic gradient with central differences of the scalar ``Σ u · f(x)``:

    ∂/∂x_k Σ u·f(x)  ≈  (Σ u·f(x + h e_k) − Σ u·f(x − h e_k)) / 2h

A random ``u`` (rather than back-propagating from ``f(x).sum()``) matters:
for softmax or batch-norm the gradient of a plain sum is zero or degenerate,
which would hide a wrong backward.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from minimtl.autograd import Tensor, no_grad


def numerical_gradient(function: Callable[..., Tensor], arrays: Sequence[np.ndarray], upstream: np.ndarray,
                       index: int, step: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of ``Σ upstream · function(*arrays)`` with respect to ``arrays[index]``."""
    probe = [np.array(a, dtype=np.float64, copy=True) for a in arrays]  # keeps each array's memory layout
    target = probe[index]
    grad = np.zeros(target.shape)
    with no_grad():
        # Indexed element by element: ``target.reshape(-1)`` would be a copy, not a view, for a
        # channels-last (transposed) layout, and perturbing the copy would change nothing.
        for element in np.ndindex(target.shape):
            original = target[element]
            target[element] = original + step
            plus = np.sum(upstream * function(*[Tensor(a) for a in probe]).data)
            target[element] = original - step
            minus = np.sum(upstream * function(*[Tensor(a) for a in probe]).data)
            target[element] = original
            grad[element] = (plus - minus) / (2 * step)
    return grad


def gradcheck(function: Callable[..., Tensor], arrays: Sequence[np.ndarray], *, seed: int = 0, step: float = 1e-6,
              tolerance: float = 1e-6, check: Sequence[int] | None = None) -> float:
    """Check ``function``'s backward against central differences, in float64, with a random upstream gradient.

    Args:
        function: takes one ``Tensor`` per array and returns a ``Tensor``.
        arrays: the inputs; converted to float64.
        check: indices of the inputs to check (default: all).
        tolerance: largest accepted relative error ``‖a − n‖ / max(‖a‖ + ‖n‖, 1e-12)`` per input.

    Returns:
        The largest relative error found.  Raises ``AssertionError`` naming the input if above ``tolerance``.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    tensors = [Tensor(a.copy(order="K"), requires_grad=True) for a in arrays]  # the same layout as the probes
    out = function(*tensors)
    # Salted, so the upstream gradient is never the same stream as test inputs drawn with default_rng(seed):
    # an upstream equal to the normalised input would make batch-norm's true gradient vanish.
    upstream = np.random.default_rng([seed, 0x9E3779B9]).standard_normal(out.shape)
    out.backward(upstream)
    worst = 0.0
    for index in range(len(arrays)) if check is None else check:
        analytic = tensors[index].grad if tensors[index].grad is not None else np.zeros_like(arrays[index])
        numeric = numerical_gradient(function, arrays, upstream, index, step)
        error = float(np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic) + np.linalg.norm(numeric), 1e-12))
        if error > tolerance:
            raise AssertionError(
                f"gradient of input {index} (shape {arrays[index].shape}) is wrong: relative error {error:.3g} > {tolerance:g}\n"
                f"analytic:\n{analytic}\nnumerical:\n{numeric}"
            )
        worst = max(worst, error)
    return worst
