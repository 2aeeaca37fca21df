"""The one interface every face detector in ``minimtl.faces`` follows.

A detector takes an OpenCV-style image, ``(H, W, 3)`` uint8 in **BGR** order
(what ``cv2.imread`` returns), and gives back ``Detections`` in that image's
pixel coordinates.  Images whose longer side exceeds ``max_side`` are shrunk
before detection and the boxes scaled back, so a 10000 × 10000 photo costs
no more than a 1600 × 1600 one.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from minimtl.faces.boxes import Detections

DEFAULT_MAX_SIDE = 1600


def user_cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/minimtl/<kind>``, or ``~/.cache/minimtl/<kind>`` (``kind``: ``weights``, ``faces``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minimtl" / kind


def check_bgr_image(image: np.ndarray, name: str = "image") -> None:
    """Raise TypeError/ValueError unless ``image`` is an ``(H, W, 3)`` uint8 array with ``H, W >= 1``."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {image.dtype} (convert 16-bit or float images first)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3) in BGR order, got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {image.shape}")


def shrink_to(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``image`` (any channels) so its longer side is at most ``max_side``.

    Returns ``(image, factor)`` where ``factor >= 1`` multiplies coordinates in the
    shrunken image back to the original (1.0 when nothing was done).
    """
    longer = max(image.shape[:2])
    if longer <= max_side:
        return image, 1.0
    factor = longer / max_side
    size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


class FaceDetector:
    """Base class: subclasses set ``name`` and implement ``_detect``.

    Args:
        max_side: longer image side above which the image is shrunk before detection.
    """

    name = "detector"

    def __init__(self, max_side: int = DEFAULT_MAX_SIDE):
        if not isinstance(max_side, int) or max_side < 32:
            raise ValueError(f"max_side must be an integer of at least 32 pixels, got {max_side!r}")
        self.max_side = max_side

    @property
    def settings(self) -> str:
        """A string naming the detector and every option that changes its output (for cache keys)."""
        return f"{self.name}(max_side={self.max_side})"

    def _detect(self, image_bgr: np.ndarray) -> Detections:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Faces in ``image_bgr`` ``(H, W, 3)`` uint8 BGR, best score first, in its pixel coordinates."""
        check_bgr_image(image_bgr)
        small, factor = shrink_to(image_bgr, self.max_side)
        detections = self._detect(np.ascontiguousarray(small))
        order = np.argsort(-detections.scores, kind="stable")
        detections = detections.select(order)
        return detections.scaled(factor) if factor != 1.0 else detections

    __call__ = detect

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.settings}>"
