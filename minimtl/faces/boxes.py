"""Face boxes: the ``Detections`` every detector returns, and the box arithmetic of MTCNN.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the original image: ``x`` grows to
the right, ``y`` downwards, ``(x1, y1)`` is the top-left corner and
``(x2, y2)`` the bottom-right one, so a box's width is ``x2 - x1``.

The five landmarks, when a detector gives them, are in this order (as both
MTCNN and YuNet give them): the eye on the image's left, the eye on the
image's right, the nose tip, the mouth corner on the left, the mouth corner
on the right.  For a person facing the camera the "left eye" of the image is
their right eye.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class Detections:
    """The faces found in one image.

    Attributes:
        boxes: ``(K, 4)`` float32, ``x1, y1, x2, y2`` in original-image pixels.
        scores: ``(K,)`` float32 confidences in ``[0, 1]``.
        landmarks: ``(K, 5, 2)`` float32 ``(x, y)`` points in ``LANDMARK_NAMES``
            order, or None for a detector without landmarks (res10).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.scores) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2)
            if len(self.landmarks) != len(self.boxes):
                raise ValueError(f"{len(self.boxes)} boxes but {len(self.landmarks)} landmark sets")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, with_landmarks: bool = True) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)) if with_landmarks else None)

    def select(self, indices) -> "Detections":
        """The detections at ``indices`` (an index array or boolean mask)."""
        landmarks = None if self.landmarks is None else self.landmarks[indices]
        return Detections(self.boxes[indices], self.scores[indices], landmarks)

    def scaled(self, factor: float) -> "Detections":
        """Coordinates multiplied by ``factor`` (to undo a resize of the image before detection)."""
        landmarks = None if self.landmarks is None else self.landmarks * factor
        return Detections(self.boxes * factor, self.scores, landmarks)

    def areas(self) -> np.ndarray:
        """``(K,)`` box areas in square pixels."""
        return box_areas(self.boxes)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """``(K, 4)`` boxes → ``(K,)`` areas; a box with ``x2 < x1`` has area 0."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def overlap(boxes_a: np.ndarray, boxes_b: np.ndarray, method: str = "union") -> np.ndarray:
    """Pairwise overlap of ``(A, 4)`` and ``(B, 4)`` boxes → ``(A, B)``.

    ``method="union"`` is intersection over union (IoU);
    ``method="min"`` divides the intersection by the smaller of the two areas
    (MTCNN's last stage uses it, so a small box inside a big one counts as a duplicate).
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    intersection = width * height
    area_a, area_b = box_areas(a)[:, None], box_areas(b)[None, :]
    if method == "union":
        denominator = area_a + area_b - intersection
    elif method == "min":
        denominator = np.minimum(area_a, area_b)
    else:
        raise ValueError(f"overlap method must be 'union' or 'min', got {method!r}")
    return np.divide(intersection, denominator, out=np.zeros_like(intersection), where=denominator > 0)


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first.

    Repeatedly keep the highest-scoring box left and drop every remaining box
    whose ``overlap`` with it exceeds ``threshold``.

    Args:
        boxes: ``(K, 4)``.
        scores: ``(K,)``.
        threshold: overlap above which a box counts as a duplicate.
        method: ``"union"`` or ``"min"``, see ``overlap``.

    Returns:
        ``(M,)`` int64 indices into ``boxes``, ``M <= K``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept = []
    while order.size:
        best = order[0]
        kept.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[overlap(boxes[best], boxes[rest], method)[0] <= threshold]
    return np.asarray(kept, dtype=np.int64)


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """Grow each box's shorter side to its longer one, keeping the centre: ``(K, 4)`` → ``(K, 4)``."""
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    boxes[:, 0] += (width - side) / 2
    boxes[:, 1] += (height - side) / 2
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def apply_box_offsets(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """MTCNN's box regression: each corner moves by its offset times the box size.

    ``x1' = x1 + dx1·w``, ``y1' = y1 + dy1·h``, ``x2' = x2 + dx2·w``, ``y2' = y2 + dy2·h``
    with ``w = x2 - x1 + 1`` and ``h = y2 - y1 + 1`` (the ``+ 1`` is the
    convention the weights were trained with).  ``(K, 4)``, ``(K, 4)`` → ``(K, 4)``.
    """
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    width = boxes[:, 2] - boxes[:, 0] + 1
    height = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + np.asarray(offsets, dtype=np.float64).reshape(-1, 4) * np.stack([width, height, width, height], axis=1)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip ``(K, 4)`` boxes to the image ``[0, width] × [0, height]``."""
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes
