"""The paper's six age groups, in one place.

Section 4.1 of Rohani et al. (2023) sorts ages into six classes:
0–15, 16–25, 26–35, 36–45, 46–60 and 61+ years (the paper writes "60-100"
for the last; 60 itself already belongs to 46–60).  :func:`age_group` maps an
age in years to the class index 0..5 used as the "age" task's label.

An age is read as completed years: 15 is in group 0, 16 in group 1; a
fractional age such as 15.5 is past 15 and so falls in group 1.
"""
from __future__ import annotations

import numpy as np

__all__ = ["AGE_GROUP_NAMES", "AGE_GROUP_UPPER_BOUNDS", "age_group"]

#: Inclusive upper bound (years) of every group but the last, which is open-ended.
AGE_GROUP_UPPER_BOUNDS = np.array([15, 25, 35, 45, 60])

#: Human-readable name of each group, indexed by the label :func:`age_group` returns.
AGE_GROUP_NAMES = ("0-15", "16-25", "26-35", "36-45", "46-60", "61+")


def age_group(age):
    """Return the age-group label (0..5) of ``age`` in years.

    Args:
        age: A number, or an array-like of any shape, of ages in years (>= 0).

    Returns:
        ``int`` for a scalar input, else an ``int64`` array of the input's shape.

    Raises:
        TypeError: non-numeric input.
        ValueError: negative or NaN ages.
    """
    ages = np.asarray(age)
    if ages.dtype == bool or not np.issubdtype(ages.dtype, np.number):
        raise TypeError(f"age must be a number or an array of numbers, got dtype {ages.dtype}")
    if np.issubdtype(ages.dtype, np.floating) and np.isnan(ages).any():
        raise ValueError("age contains NaN")
    if (ages < 0).any():
        raise ValueError(f"age must be >= 0, got minimum {ages.min()}")
    # searchsorted(side="left") counts the bounds strictly below the age: 15 -> 0, 16 -> 1, 61 -> 5.
    groups = np.searchsorted(AGE_GROUP_UPPER_BOUNDS, ages, side="left").astype(np.int64)
    return int(groups) if groups.ndim == 0 else groups
