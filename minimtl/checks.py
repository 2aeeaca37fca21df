"""Argument checks shared by the layers: one clear error message for each way an input can be wrong.

``minimtl.conv``, ``minimtl.pooling``, ``minimtl.batch_norm`` and
``minimtl.functional`` all start from these, so each lives here once and none
of those modules has to import another to check its arguments.
"""
from __future__ import annotations

import numpy as np

from minimtl.autograd import Tensor

IntPair = int | tuple[int, int]


def int_pair(value: IntPair, name: str) -> tuple[int, int]:
    """``value`` as a pair of non-negative ints: ``3`` → ``(3, 3)``, ``(3, 2)`` → ``(3, 2)``.

    Args:
        value: an int or a pair of ints.
        name: the argument's name, for the error message.

    Returns:
        ``(first, second)`` as Python ints.

    Raises:
        ValueError: for a negative or non-integer value or a sequence not of length 2.
    """
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 0 for v in pair):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_float(x: Tensor, name: str) -> None:
    """Raise TypeError unless ``x`` is a Tensor holding floating-point numbers.

    Args:
        x: the argument to check.
        name: its name, for the error message.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a minimtl.Tensor, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be floating point (float32 or float64), got dtype {x.dtype}; use x.astype(np.float32)")


def check_image_batch(x: Tensor, channels: int | None, name: str = "input") -> None:
    """Raise a clear error unless ``x`` is a float (N, C, H, W) batch with ``channels`` channels.

    Args:
        x: the argument to check.
        channels: the number of channels the layer expects, or None for any.
        name: its name, for the error message.
    """
    check_float(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {x.ndim} dimensions {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} has {x.shape[1]} channels but the layer expects {channels} (shape {tuple(x.shape)})")
