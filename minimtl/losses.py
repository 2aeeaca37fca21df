"""The paper's losses: masked multi-task cross-entropy (Eq. 1) and the total loss with L2 (Eq. 2).

Every training sample comes from one dataset and so carries the labels of
some tasks only (GENKI-4K: smile; IMDB-WIKI or UTKFace: gender and age).
Eq. (1) multiplies each sample's cross-entropy by ``β_i^t`` — 1 if sample
``i`` has a label for task ``t``, else 0 — so a task learns only from its own
samples, and a task absent from a batch contributes zero loss and zero
gradient:

    L_t = −(1/M) Σ_i β_i^t Σ_j X_i^t(j) · log X̂_i^t(j)                       (1)

where ``X_i^t`` is the one-hot label and ``X̂_i^t = softmax(C_i^t)`` the
predicted distribution.  ``normalize="all"`` divides by the batch size ``M``
as Eq. (1) is written; ``normalize="present"`` divides by ``Σ_i β_i^t``, the
number of samples that carry the task (clipped to at least 1), as the BKNet
reference implementation does.  The two differ when tasks are unevenly mixed:
with ``"all"`` a task whose samples are 10% of the batch gets a loss (and a
gradient) ten times smaller than if it filled the batch, so the dataset mix
silently weights the tasks; with ``"present"`` each task's loss is a true mean
over its own samples whatever the mix, and ``μ_t`` alone sets the weights.

    L_total = Σ_t μ_t L_t + λ ‖W‖²                                            (2)

with ``‖W‖²`` the sum of squares of the weights of convolutions and linear
layers (not biases, not batch-norm shifts or scales).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from minimtl import ops
from minimtl.autograd import Tensor
from minimtl.functional import check_float, log_softmax


def masked_cross_entropy(logits: Tensor, labels: np.ndarray, mask: np.ndarray | None = None,
                         normalize: str = "present", label_smoothing: float = 0.0) -> Tensor:
    """Eq. (1): cross-entropy of one task's head over the samples that carry the task.

    Args:
        logits: ``(M, N_t)`` class scores ``C_i^t`` (before softmax).
        labels: ``(M,)`` integer true classes ``S_i^t``; entries where the
            mask is 0 are ignored (any value, conventionally −1).
        mask: ``(M,)`` the ``β_i^t`` (1 = has the label, 0 = not); all ones if None.
        normalize: ``"all"`` divides by ``M`` (Eq. 1 as printed);
            ``"present"`` by ``max(Σ β, 1)`` (the BKNet reference).
        label_smoothing: ``ε`` in [0, 1): the target ``X_i^t`` of Eq. (1) becomes
            ``(1 − ε) · one-hot + ε / N_t`` (Szegedy et al., 2016, Section 7), so a confident
            right answer still costs a little and the head is not pushed to ever larger scores;
            0 is Eq. (1) as printed.

    Returns:
        A scalar tensor.
    """
    check_float(logits, "masked_cross_entropy logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (M, N_t), got {tuple(logits.shape)}")
    m, classes = logits.shape
    labels = np.asarray(labels.data if isinstance(labels, Tensor) else labels)
    if labels.shape != (m,):
        raise ValueError(f"labels must have shape ({m},) to match logits {tuple(logits.shape)}, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers (class indices), got dtype {labels.dtype}")
    mask = np.ones(m, dtype=logits.dtype) if mask is None else np.asarray(mask.data if isinstance(mask, Tensor) else mask)
    if mask.shape != (m,):
        raise ValueError(f"mask must have shape ({m},), got {mask.shape}")
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError("mask (β in Eq. 1) must contain only 0 and 1")
    present = mask == 1
    bad = present & ((labels < 0) | (labels >= classes))
    if bad.any():
        raise ValueError(f"label {labels[bad][0]} out of range for {classes} classes (at sample {int(np.argmax(bad))})")
    if not np.all(np.isfinite(logits.data)):
        raise ValueError("masked_cross_entropy got NaN or infinite logits")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if normalize == "all":
        denominator = float(m)
    elif normalize == "present":
        denominator = float(max(present.sum(), 1))
    else:
        raise ValueError(f"normalize must be 'all' or 'present', got {normalize!r}")
    # β_i · X_i(j) as one (M, N_t) array: the (smoothed) one-hot label of each present sample, zeros elsewhere.
    weights = np.zeros((m, classes), dtype=logits.dtype)
    weights[np.flatnonzero(present), labels[present]] = 1.0 - label_smoothing
    weights[present] += label_smoothing / classes
    picked = log_softmax(logits, axis=1) * Tensor(weights, _copy=False)
    return ops.sum(picked) * (-1.0 / denominator)


def l2_penalty(weights: Iterable[Tensor]) -> Tensor:
    """``‖W‖² = Σ w²`` over the given weight tensors (Eq. 2's regulariser, without λ)."""
    total = None
    for w in weights:
        term = ops.sum(w * w)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("l2_penalty needs at least one weight tensor")
    return total


def total_loss(task_losses: Mapping[str, Tensor], weights: Iterable[Tensor] = (), weight_decay: float = 0.0,
               task_weights: Mapping[str, float] | None = None) -> Tensor:
    """Eq. (2): ``Σ_t μ_t L_t + λ ‖W‖²``.

    Args:
        task_losses: ``{task: L_t}`` scalar tensors from ``masked_cross_entropy``.
        weights: the tensors regularised (``model.decay_parameters()``: conv and linear weights only).
        weight_decay: ``λ`` (0.01 in Section 4.3).
        task_weights: ``{task: μ_t}``; 1 for every task if None (Section 4.3).
    """
    if not task_losses:
        raise ValueError("total_loss needs at least one task loss")
    task_weights = task_weights or {}
    unknown = set(task_weights) - set(task_losses)
    if unknown:
        raise ValueError(f"task_weights name tasks without a loss: {sorted(unknown)}")
    total = None
    for task, loss in task_losses.items():
        term = loss * float(task_weights.get(task, 1.0))
        total = term if total is None else total + term
    if weight_decay:
        total = total + l2_penalty(weights) * float(weight_decay)
    return total
