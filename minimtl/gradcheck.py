"""Numerical gradient checks: is an op's backward the derivative of its forward?

``gradcheck(function, inputs)`` runs ``function`` on float64 tensors, sends a
*random* upstream gradient ``u`` back through it, and compares every input's
analytic gradient ``a`` with central differences ``n`` of the scalar
``g(x) = Σ u · f(x)``, one element ``x_k`` at a time:

    n_k = D(h) = (g(x + h e_k) − g(x − h e_k)) / 2h  ≈  ∂g/∂x_k

A random ``u`` (rather than back-propagating from ``f(x).sum()``) matters:
for softmax or batch-norm the gradient of a plain sum is zero or degenerate,
which would hide a wrong backward.

**The error measure.**  ``D(h)`` is not the derivative.  Its error has two
parts, and both are measured from the values of ``g`` the check computes
anyway:

* **truncation**, ``h² g'''/6``.  Richardson's trick: ``D(2h) − D(h) ≈
  3 · h² g'''/6``, so ``|D(h) − D(2h)|`` is three times the truncation error
  of ``D(h)``.
* **rounding**.  Each value of ``g`` carries a rounding noise ``σ``, and
  ``D(h)`` divides a difference of two values by ``2h``, which makes a noise
  of about ``0.7 σ / h``.  The fourth difference ``g(x − 2h) − 4 g(x − h) +
  6 g(x) − 4 g(x + h) + g(x + 2h)`` cancels every smooth part of ``g`` up to
  ``h⁴ g''''`` (1e-24) and leaves noise, 70 ``σ²`` in mean square
  (``1 + 16 + 36 + 16 + 1``); over the elements of the input (at least
  ``NOISE_SAMPLES`` of them, more spacings for small inputs) it gives ``σ``.
  ``σ`` is at least ``ε · Σ |u · f(x)|``: one rounding (``ε = 2.2e-16``) of
  the size of what ``g`` adds up.

The bound of element ``k`` is ``b_k = |D(h) − D(2h)| + NOISE_MULTIPLE · σ / h``
and the element passes when::

    |a_k − n_k|  ≤  tolerance · |n_k|  +  b_k

which is ``numpy.allclose(a, n, rtol=tolerance, atol=b)`` with an ``atol``
measured for each element.  The ``tolerance · |n_k|`` part covers what no
difference of values can see: a rounded intermediate that acts like a
slightly different step, an error proportional to the gradient (about
``ε |x| / h``, 1e-9 of it).  The error reported is the relative error with
the bound counted in the gradient's size, ``|a_k − n_k| / (|n_k| + b_k /
tolerance)``, at most ``tolerance`` exactly when the element passes.

Why the bound: for a saturated softmax, ``softmax([4.897, −5.634])``, the
gradient is 3.3e-5 while ``g`` is about 1, so ``D(h)`` is off by about 1e-10,
two parts per million of the gradient.  A plain relative error rejects that
correct backward.  Here the bound is 3e-9, and a backward that is 1% off
there (a difference of 3.3e-7) still fails, by a factor of 100.

Where finite differences cannot tell, the check cannot either:

* a kink (ReLU, max-pooling) within ``2h`` of an input makes ``|D(h) −
  D(2h)|`` large and the check lenient there, so tests keep inputs 1e-3 from
  kinks;
* a gradient smaller than ``b`` is only checked to be small;
* the noise is measured from values of ``g``, and the floor assumes that
  ``g``'s intermediates are no larger than the terms it adds up.  A
  cross-entropy of one sample predicted with certainty ``1 − 1e-5`` breaks
  both: its forward rounds a sum of exponentials near 1 while the loss is
  1e-5, and that rounding changes smoothly with the logits, so no
  difference of values shows it.  Such a check can fail a correct backward
  (``tests/test_gradcheck.py`` keeps one as an expected failure); test
  inputs keep logit margins below about 10.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from minimtl.autograd import Tensor, no_grad

EPSILON = float(np.finfo(np.float64).eps)  # 2.2e-16: the spacing of float64 numbers near 1
NOISE_SAMPLES = 16  # fourth differences per input at least, for a steady estimate of the rounding noise σ
NOISE_MULTIPLE = 10  # the rounding part of the bound is 10 σ / h; D(h)'s own rounding noise is about 0.7 σ / h


def finite_differences(function: Callable[..., Tensor], arrays: Sequence[np.ndarray], upstream: np.ndarray,
                       index: int, step: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of ``g = Σ upstream · function(*arrays)`` with respect to ``arrays[index]``, with error bounds.

    Args:
        function: takes one ``Tensor`` per array and returns a ``Tensor`` shaped like ``upstream``.
        arrays: the inputs, any shapes; evaluated in float64, each in its own memory layout.
        upstream: the weights ``u`` of the outputs in ``g``.
        index: which input to perturb, one element at a time.
        step: ``h``.

    Returns:
        ``(gradient, bound)``, both shaped like ``arrays[index]``: ``gradient = D(h)`` and
        ``bound = |D(h) − D(2h)| + NOISE_MULTIPLE · σ / h``, how far ``D(h)`` may be from ``∂g/∂x``
        (see the module docstring).  Four evaluations of ``function`` per element, more for inputs with
        fewer than ``NOISE_SAMPLES`` elements.
    """
    probe = [np.array(a, dtype=np.float64, copy=True) for a in arrays]  # keeps each array's memory layout
    target = probe[index]

    def weighted_outputs() -> np.ndarray:
        return upstream * function(*[Tensor(a) for a in probe]).data

    # Small inputs repeat the fourth difference with spacings h, 1.125 h, 1.25 h, ... to reach NOISE_SAMPLES.
    spacings = [step * (1 + i / 8) for i in range(-(-NOISE_SAMPLES // max(target.size, 1)))]
    gradient, truncation, fourth_differences = np.zeros(target.shape), np.zeros(target.shape), []
    with no_grad():
        at_x = weighted_outputs()
        centre, size = np.sum(at_x), np.sum(np.abs(at_x))
        # Indexed element by element: ``target.reshape(-1)`` would be a copy, not a view, for a
        # channels-last (transposed) layout, and perturbing the copy would change nothing.
        for element in np.ndindex(target.shape):
            original = target[element]
            for spacing in spacings:
                position, value = {}, {}
                for multiple in (1, -1, 2, -2):
                    target[element] = original + multiple * spacing
                    position[multiple] = target[element]  # x + h, rounded: the step actually taken
                    value[multiple] = np.sum(weighted_outputs())
                fourth_differences.append(value[-2] - 4 * value[-1] + 6 * centre - 4 * value[1] + value[2])
                if spacing == step:
                    d_h = (value[1] - value[-1]) / (position[1] - position[-1])
                    d_2h = (value[2] - value[-2]) / (position[2] - position[-2])
                    gradient[element], truncation[element] = d_h, abs(d_h - d_2h)
            target[element] = original
    mean_square = float(np.mean(np.square(fourth_differences))) if fourth_differences else 0.0
    noise = max(np.sqrt(mean_square / 70), EPSILON * float(size))
    return gradient, truncation + NOISE_MULTIPLE * noise / step


def numerical_gradient(function: Callable[..., Tensor], arrays: Sequence[np.ndarray], upstream: np.ndarray,
                       index: int, step: float = 1e-6) -> np.ndarray:
    """Central-difference gradient ``D(h)`` of ``Σ upstream · function(*arrays)`` with respect to ``arrays[index]``."""
    return finite_differences(function, arrays, upstream, index, step)[0]


def gradcheck(function: Callable[..., Tensor], arrays: Sequence[np.ndarray], *, seed: int = 0, step: float = 1e-6,
              tolerance: float = 1e-6, check: Sequence[int] | None = None) -> float:
    """Check ``function``'s backward against central differences, in float64, with a random upstream gradient.

    Args:
        function: takes one ``Tensor`` per array and returns a ``Tensor``.
        arrays: the inputs; converted to float64.
        seed: picks the random upstream gradient.
        step: the finite-difference step ``h``.
        tolerance: largest accepted relative error per element beyond the finite-difference error bound ``b``:
            element ``k`` passes when ``|a_k − n_k| ≤ tolerance · |n_k| + b_k`` (see the module docstring).
        check: indices of the inputs to check (default: all).

    Returns:
        The largest error ``|a_k − n_k| / (|n_k| + b_k / tolerance)`` over the checked inputs.  Raises
        ``AssertionError`` naming the input and its worst element if that is above ``tolerance`` (or NaN).
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
        numeric, bound = finite_differences(function, arrays, upstream, index, step)
        difference = np.abs(analytic - numeric)
        allowed = np.abs(numeric) + bound / tolerance
        # 0 / 0 (g is exactly 0 around x) is no error; any difference where nothing is allowed is an infinite one.
        errors = np.divide(difference, allowed, out=np.where(difference > 0, np.inf, 0.0), where=allowed > 0)
        error = float(errors.max(initial=0.0))
        if not error <= tolerance:  # also a NaN in either gradient
            k = np.unravel_index(np.argmax(errors), errors.shape)
            raise AssertionError(
                f"gradient of input {index} (shape {arrays[index].shape}) is wrong: relative error {error:.3g} > "
                f"{tolerance:g} beyond the finite-difference error\n"
                f"worst element {tuple(int(i) for i in k)}: analytic {analytic[k]:.9g}, numerical {numeric[k]:.9g}, "
                f"|difference| {difference[k]:.3g} > {tolerance:g}·|numerical| + bound {bound[k]:.3g}\n"
                f"analytic:\n{analytic}\nnumerical:\n{numeric}"
            )
        worst = max(worst, error)
    return worst
