"""One training set from several data sets, each sample labelled only for the tasks it has.

Section 3.4 of the paper merges GENKI-4K (smile) and IMDB-WIKI (gender, age)
into one training set; each sample i carries a mask β_i^t that is 1 for the
tasks t its data set labels and 0 otherwise, and the loss of task t sums only
over samples with β_i^t = 1 (Equation 1).  :class:`MultiTaskDataset` builds
that: every sample has a label for each of ``"smile"``, ``"gender"``, ``"age"``
(-1 where absent) and a float mask (1.0 present, 0.0 absent).

``MultiTaskDataset.split`` splits each member data set on its own (the paper:
1000 GENKI-4K test images) and never puts the same image in both halves.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .base import CLASS_NAMES, IMAGE_SIZE, TASKS, FaceDataset

__all__ = ["MultiTaskDataset"]


class MultiTaskDataset:
    """Samples of several :class:`FaceDataset` s with per-task labels and masks.

    Attributes:
        datasets: the member data sets, in order.
        images: (N, 48, 48) uint8, the members' images concatenated.
        labels: {task: (N,) int64}, -1 where the sample's data set lacks the task.
        masks: {task: (N,) float32}, 1.0 where the label is present (β in Equation 1).
        origin: (N,) int64, index into ``datasets`` of each sample's data set.
        synthetic: True if any member is synthetic.

    ``dataset[i]`` is ``(image (48, 48) uint8, {task: label}, {task: mask})``.
    """

    def __init__(self, datasets: Sequence[FaceDataset], tasks: Sequence[str] = TASKS):
        datasets = list(datasets)
        if not datasets:
            raise ValueError("MultiTaskDataset needs at least one data set")
        for dataset in datasets:
            if not isinstance(dataset, FaceDataset):
                raise TypeError(f"expected FaceDataset members, got {type(dataset).__name__}")
            if dataset.images is None:
                raise ValueError(f"{dataset.name} has no images (built with load_images=False)")
        unknown = [task for task in tasks if task not in TASKS]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; tasks are {TASKS}")
        self.tasks = tuple(tasks)
        self.datasets = datasets
        self.images = np.concatenate([d.images for d in datasets]) if datasets else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE),
                                                                                               np.uint8)
        self.origin = np.concatenate([np.full(len(d), i, dtype=np.int64) for i, d in enumerate(datasets)])
        self.labels = {}
        self.masks = {}
        for task in self.tasks:
            parts = [d.labels[task] if task in d.labels else np.full(len(d), -1, np.int64) for d in datasets]
            self.labels[task] = np.concatenate(parts).astype(np.int64)
            self.masks[task] = (self.labels[task] >= 0).astype(np.float32)
        self.synthetic = any(d.synthetic for d in datasets)

    @property
    def name(self) -> str:
        return " + ".join(d.name for d in self.datasets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, int], dict[str, float]]:
        return (self.images[index], {t: int(self.labels[t][index]) for t in self.tasks},
                {t: float(self.masks[t][index]) for t in self.tasks})

    def __repr__(self) -> str:
        return f"<MultiTaskDataset {self.name!r}: {len(self)} samples, tasks {self.tasks}>"

    def class_counts(self) -> dict[str, np.ndarray]:
        """``{task: (classes,) int64}`` counts over the samples labelled for that task."""
        return {task: np.bincount(self.labels[task][self.masks[task] > 0], minlength=len(CLASS_NAMES[task]))
                for task in self.tasks}

    def summary(self) -> str:
        """A small table: samples per member data set, then per-task class counts."""
        lines = [f"{len(self)} samples from {len(self.datasets)} data set(s):"]
        lines += [f"  {d.name:<24} {len(d):>7}  tasks {', '.join(d.tasks)}" for d in self.datasets]
        for task, counts in self.class_counts().items():
            cells = ", ".join(f"{name} {count}" for name, count in zip(CLASS_NAMES[task], counts))
            lines.append(f"  {task:<7} {int(counts.sum()):>7} labelled: {cells}")
        return "\n".join(lines)

    def print_class_counts(self) -> None:
        print(self.summary())

    def split(self, test_sizes: Mapping[str, int | float] | int | float | None = None,
              seed: int = 0) -> tuple["MultiTaskDataset", "MultiTaskDataset"]:
        """``(train, test)``, splitting each member data set separately.

        ``test_sizes`` maps a member's ``name`` to its test count or fraction,
        or is one value for all; a member not named uses its own
        ``default_split``: GENKI-4K the paper's 1000 test images, IMDB-WIKI
        whole people held out (folders 80–89), others a random 20%.
        Identical images stay on one side (see :meth:`FaceDataset.split`).
        """
        trains, tests = [], []
        for index, dataset in enumerate(self.datasets):
            size = test_sizes.get(dataset.name) if isinstance(test_sizes, Mapping) else test_sizes
            if size is None:
                train, test = dataset.default_split(seed=seed + index)
            else:
                train, test = dataset.split(size, seed=seed + index)
            trains.append(train)
            tests.append(test)
        return MultiTaskDataset(trains, self.tasks), MultiTaskDataset(tests, self.tasks)
