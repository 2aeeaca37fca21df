"""Evaluation measures: Eq. (3) accuracy over the samples that carry a task, and confusion matrices."""
from __future__ import annotations

import numpy as np


def accuracy(predicted: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Eq. (3): number of accurate predictions / total number of predictions.

    Args:
        predicted: ``(M,)`` predicted classes.
        labels: ``(M,)`` true classes.
        mask: ``(M,)`` 1 where the sample carries the task (β of Eq. 1); only those count.

    Returns:
        A fraction in [0, 1]; NaN when no sample carries the task.
    """
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted {predicted.shape} and labels {labels.shape} must have the same shape")
    present = np.ones(labels.shape, dtype=bool) if mask is None else np.asarray(mask) == 1
    if not present.any():
        return float("nan")
    return float(np.mean(predicted[present] == labels[present]))


def majority_share(labels: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Accuracy of always answering the most frequent class of ``labels`` (the best constant answer).

    Args:
        labels: ``(M,)`` true classes.
        mask: ``(M,)`` 1 where the sample carries the task; only those count.

    Returns:
        A fraction in [0, 1]; NaN when no sample carries the task.
    """
    labels = np.asarray(labels)
    present = np.ones(labels.shape, dtype=bool) if mask is None else np.asarray(mask) == 1
    if not present.any():
        return float("nan")
    return float(np.bincount(labels[present]).max() / present.sum())


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, classes: int, mask: np.ndarray | None = None) -> np.ndarray:
    """``(classes, classes)`` counts: row = true class, column = predicted class."""
    present = np.ones(np.shape(labels), dtype=bool) if mask is None else np.asarray(mask) == 1
    truth, guess = np.asarray(labels)[present], np.asarray(predicted)[present]
    return np.bincount(truth * classes + guess, minlength=classes * classes).reshape(classes, classes)
