"""Synthetic faces drawn with OpenCV: offline demos and fast tests, never a stand-in for results.

:class:`SyntheticFaces` draws cartoon faces whose smile, gender and age group
show as simple visual cues, so a network can learn them in seconds:

* smile: an upward-curved mouth (smiling) or a straight one (not smiling);
* gender: long hair falling beside the face (female) or a short cap of hair (male);
* age group 0..5: children (group 0) have a smaller face with larger eyes;
  from group 2 on, the number of forehead wrinkles grows with the group, and
  the hair greys with age.

Position, size, brightness and noise vary per face.  Everything is drawn from
one seed, so the same seed gives the same images.  The data set's ``name``
says "SYNTHETIC", ``synthetic`` is True, and the loader logs a warning when it
reads one, so nobody mistakes it for real photos.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .base import IMAGE_SIZE, TASKS, FaceDataset

__all__ = ["SyntheticFaces", "draw_face"]

_CANVAS = 96  # draw at twice the size, then shrink: smoother edges


def draw_face(smile: int, gender: int, age: int, rng: np.random.Generator) -> np.ndarray:
    """One (48, 48) uint8 face with the given labels (smile 0/1, gender 0 male/1 female, age group 0..5)."""
    background = int(rng.integers(30, 110))
    canvas = np.full((_CANVAS, _CANVAS), background, dtype=np.uint8)
    centre_x = _CANVAS // 2 + int(rng.integers(-4, 5))
    centre_y = _CANVAS // 2 + int(rng.integers(-3, 4))
    scale = (0.78 if age == 0 else 1.0) * rng.uniform(0.92, 1.05)
    face_w, face_h = int(27 * scale), int(34 * scale)
    skin = int(rng.integers(150, 215))
    hair = int(np.clip(40 + 35 * max(age - 2, 0) + rng.integers(-15, 16), 0, 255))

    if gender == 1:  # long hair behind and beside the face
        cv2.ellipse(canvas, (centre_x, centre_y + 8), (face_w + 9, face_h + 12), 0, 0, 360, hair, -1)
    cv2.ellipse(canvas, (centre_x, centre_y), (face_w, face_h), 0, 0, 360, skin, -1)
    if gender == 0:  # short hair: a cap over the top of the head
        cv2.ellipse(canvas, (centre_x, centre_y - face_h // 2), (face_w + 1, face_h // 2 + 2), 0, 180, 360, hair, -1)
    else:
        cv2.ellipse(canvas, (centre_x, centre_y - face_h // 2), (face_w + 3, face_h // 2 + 1), 0, 180, 360, hair, -1)

    eye_y = centre_y - int(4 * scale)
    eye_dx = int(11 * scale)
    eye_radius = 5 if age == 0 else 3
    for side in (-1, 1):
        cv2.circle(canvas, (centre_x + side * eye_dx, eye_y), eye_radius, 25, -1)
    cv2.line(canvas, (centre_x, eye_y + 3), (centre_x - 2, centre_y + int(8 * scale)), skin - 45, 2)

    mouth_y = centre_y + int(17 * scale)
    mouth_w = int(11 * scale)
    if smile:
        cv2.ellipse(canvas, (centre_x, mouth_y - 4), (mouth_w, 7), 0, 15, 165, 35, 3)
    else:
        cv2.line(canvas, (centre_x - mouth_w, mouth_y), (centre_x + mouth_w, mouth_y), 35, 3)

    for wrinkle in range(max(age - 1, 0)):  # groups 2..5 get 1..4 forehead lines
        y = centre_y - int((13 + 4 * wrinkle) * scale)
        cv2.line(canvas, (centre_x - int(14 * scale), y), (centre_x + int(14 * scale), y), skin - 60, 1)

    face = cv2.resize(canvas, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    face = face * rng.uniform(0.8, 1.2) + rng.normal(0, 6, face.shape)
    return np.clip(face, 0, 255).astype(np.uint8)


class SyntheticFaces(FaceDataset):
    """``count`` drawn faces labelled for ``tasks`` (default all three), from ``seed``.

    Labels are drawn uniformly (smile, gender 0/1; age group 0..5).  Use
    ``tasks=("smile",)`` and ``tasks=("gender", "age")`` to imitate the
    paper's two sources (GENKI-4K and IMDB-WIKI) in a multi-task demo.
    """

    synthetic = True

    def __init__(self, count: int = 512, seed: int = 0, tasks: Sequence[str] = TASKS):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")
        tasks = tuple(tasks)
        if not tasks or any(task not in TASKS for task in tasks):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks}")
        rng = np.random.default_rng(seed)
        drawn = {"smile": rng.integers(0, 2, count), "gender": rng.integers(0, 2, count),
                 "age": rng.integers(0, 6, count)}
        images = np.stack([draw_face(int(drawn["smile"][i]), int(drawn["gender"][i]), int(drawn["age"][i]), rng)
                           for i in range(count)])
        names = [f"synthetic-{seed}-{i:06d}" for i in range(count)]
        super().__init__(names, {task: drawn[task] for task in tasks}, images,
                         name=f"SYNTHETIC drawn faces (seed {seed}, {'/'.join(tasks)})")
