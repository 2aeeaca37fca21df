"""Shuffled mini-batches of a :class:`MultiTaskDataset` as NumPy arrays, ready for the network.

Each batch is a :class:`Batch` (a named tuple, so ``images, labels, masks =
batch`` works):

* ``images``: (B, 1, 48, 48) float32, pixel values scaled to [0, 1] — the
  paper's normalisation into a fixed range (Section 3.1);
* ``labels``: {task: (B,) int64}, -1 where a sample lacks the task;
* ``masks``:  {task: (B,) float32}, 1.0 where the label is present (β in Equation 1).

With ``augment`` (e.g. :class:`~minimtl.data.augment.Augment`) the uint8 faces
are augmented before scaling; pass it for the training loader only.  With
``balance_datasets=True`` every batch takes an equal share from each member
data set, repeating the smaller ones within an epoch (the BKNet reference
repeats the small smile set the same way); an epoch then lasts until the
largest member has been seen once.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, NamedTuple

import numpy as np

from .multitask import MultiTaskDataset

__all__ = ["Batch", "DataLoader", "batches", "normalize"]

log = logging.getLogger("minimtl.data")


class Batch(NamedTuple):
    images: np.ndarray  # (B, 1, 48, 48) float32 in [0, 1]
    labels: dict  # {task: (B,) int64}, -1 = absent
    masks: dict  # {task: (B,) float32}, 1 = present


def normalize(images: np.ndarray) -> np.ndarray:
    """(B, H, W) uint8 -> (B, 1, H, W) float32 in [0, 1]."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected (B, H, W) uint8 images, got {images.shape} {images.dtype}")
    return (images.astype(np.float32) * np.float32(1 / 255))[:, None]


class DataLoader:
    """Iterate over ``dataset`` in batches; a new shuffle (and augmentation) every epoch.

    Args:
        dataset: the :class:`MultiTaskDataset` to read.
        batch_size: samples per batch (the paper uses 128).
        shuffle: reshuffle each epoch (training) or keep order (evaluation).
        augment: callable ``(B, 48, 48) uint8 -> (B, 48, 48) uint8`` applied to each batch, or None.
        balance_datasets: equal share of each member data set per batch (see the module docstring).
        drop_last: skip a final batch smaller than ``batch_size``.
        epoch_samples: an epoch of exactly this many samples, the usual order repeated (reshuffled); None: one pass.
        seed: seed of the shuffling generator.

    ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(self, dataset: MultiTaskDataset, batch_size: int = 128, *, shuffle: bool = True,
                 augment: Callable[[np.ndarray], np.ndarray] | None = None, balance_datasets: bool = False,
                 drop_last: bool = False, epoch_samples: int | None = None, seed: int = 0):
        if not isinstance(dataset, MultiTaskDataset):
            raise TypeError(f"dataset must be a MultiTaskDataset, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if len(dataset) == 0:
            raise ValueError("dataset is empty")
        if epoch_samples is not None and (isinstance(epoch_samples, bool) or int(epoch_samples) < 1):
            raise ValueError(f"epoch_samples must be a positive int or None, got {epoch_samples!r}")
        self.epoch_samples = None if epoch_samples is None else int(epoch_samples)
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.balance_datasets = balance_datasets
        self.rng = np.random.default_rng(seed)
        if dataset.synthetic:
            log.warning("DataLoader is reading SYNTHETIC drawn faces (%s), not real photos", dataset.name)

    def _epoch_order(self) -> np.ndarray:
        if self.epoch_samples is None:
            return self._one_pass()
        passes, total = [], 0
        while total < self.epoch_samples:
            passes.append(self._one_pass())
            total += len(passes[-1])
        return np.concatenate(passes)[:self.epoch_samples]

    def _one_pass(self) -> np.ndarray:
        count = len(self.dataset)
        if not self.balance_datasets or len(self.dataset.datasets) == 1:
            return self.rng.permutation(count) if self.shuffle else np.arange(count)
        members = [np.flatnonzero(self.dataset.origin == i) for i in range(len(self.dataset.datasets))]
        longest = max(len(m) for m in members)
        streams = []
        for member in members:  # repeat each member (reshuffled each pass) up to the longest one's length
            passes = -(-longest // len(member))
            stream = np.concatenate([self.rng.permutation(member) if self.shuffle else member for _ in range(passes)])
            streams.append(stream[:longest])
        # interleave sample by sample, so every batch holds an equal share of each member
        return np.stack(streams, axis=1).reshape(-1)

    def __len__(self) -> int:
        count = len(self.dataset)
        if self.epoch_samples is not None:
            count = self.epoch_samples
        elif self.balance_datasets and len(self.dataset.datasets) > 1:
            count = max(len(d) for d in self.dataset.datasets) * len(self.dataset.datasets)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self._epoch_order()
        for start in range(0, len(order), self.batch_size):
            indices = order[start:start + self.batch_size]
            if self.drop_last and len(indices) < self.batch_size:
                break
            images = self.dataset.images[indices]
            if self.augment is not None:
                images = self.augment(images)
            yield Batch(normalize(images),
                        {task: values[indices] for task, values in self.dataset.labels.items()},
                        {task: values[indices] for task, values in self.dataset.masks.items()})


def batches(dataset: MultiTaskDataset, batch_size: int = 128, **options) -> Iterator[Batch]:
    """One epoch of :class:`DataLoader` batches: ``for images, labels, masks in batches(train): ...``."""
    return iter(DataLoader(dataset, batch_size, **options))
