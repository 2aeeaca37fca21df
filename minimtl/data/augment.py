"""Training-time augmentation of face batches: random crop, random flip, random rotation (Section 3.1).

The paper enlarges its training data "using the Random Crop, Random Flip, and
Random Rotate techniques".  Each is one function here, acting on a whole batch
``images (B, H, W)`` of uint8 or float and drawing from a
:class:`numpy.random.Generator`, so a seed reproduces the batch exactly.  All
three keep the shape, the dtype and the value range, and none changes a label:
a flipped smiling face is still smiling, a rotated woman is still a woman.
:class:`Augment` chains them; the loader applies it to training batches only.

* :func:`random_crop` — pad by ``padding`` pixels (mirrored border) and cut a
  random H×W window: shifts the face by up to ``padding`` pixels.
* :func:`random_flip` — mirror left-right with probability ``probability``.
* :func:`random_rotation` — rotate about the centre by an angle drawn
  uniformly from ±``max_degrees`` (bilinear, mirrored border, via OpenCV).
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["Augment", "random_crop", "random_flip", "random_rotation"]


def _check_batch(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 3:
        raise ValueError(f"images must be a (B, H, W) array, got {getattr(images, 'shape', type(images))}")
    if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise TypeError(f"images must be uint8 or float, got {images.dtype}")


def random_flip(images: np.ndarray, rng: np.random.Generator, probability: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with ``probability``.  (B, H, W) -> new (B, H, W), same dtype."""
    _check_batch(images)
    flip = rng.random(len(images)) < probability
    result = images.copy()
    result[flip] = images[flip, :, ::-1]
    return result


def random_crop(images: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """Pad each image by ``padding`` (mirrored) and cut a random window of the original size.

    (B, H, W) -> new (B, H, W), same dtype; the window's offset is drawn per image
    from 0..2·padding in each direction.
    """
    _check_batch(images)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    count, height, width = images.shape
    if padding == 0:
        return images.copy()
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding)), mode="reflect")
    top = rng.integers(0, 2 * padding + 1, size=count)
    left = rng.integers(0, 2 * padding + 1, size=count)
    rows = top[:, None] + np.arange(height)[None, :]  # (B, H)
    columns = left[:, None] + np.arange(width)[None, :]  # (B, W)
    return padded[np.arange(count)[:, None, None], rows[:, :, None], columns[:, None, :]]


def random_rotation(images: np.ndarray, rng: np.random.Generator, max_degrees: float = 15.0) -> np.ndarray:
    """Rotate each image about its centre by a uniform angle in [-max_degrees, max_degrees].

    (B, H, W) -> new (B, H, W), same dtype.  Bilinear interpolation is a convex
    combination of pixels, so values stay within the input's range.
    """
    _check_batch(images)
    if max_degrees < 0:
        raise ValueError(f"max_degrees must be >= 0, got {max_degrees}")
    angles = rng.uniform(-max_degrees, max_degrees, size=len(images))
    height, width = images.shape[1:]
    centre = ((width - 1) / 2, (height - 1) / 2)
    source = images if images.dtype in (np.uint8, np.float32) else images.astype(np.float32)
    result = np.empty_like(source)
    for index, angle in enumerate(angles):
        matrix = cv2.getRotationMatrix2D(centre, float(angle), 1.0)
        result[index] = cv2.warpAffine(source[index], matrix, (width, height), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT_101)
    return result.astype(images.dtype, copy=False)


class Augment:
    """Random crop, then random flip, then random rotation, with one seeded generator.

    ``Augment(seed=0)(images (B, H, W))`` -> augmented (B, H, W), same dtype.
    Set any of ``padding``, ``flip_probability``, ``max_degrees`` to 0 to skip that step.
    """

    def __init__(self, padding: int = 4, flip_probability: float = 0.5, max_degrees: float = 15.0,
                 seed: int | np.random.Generator | None = 0):
        if not 0 <= flip_probability <= 1:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
        if padding < 0 or max_degrees < 0:
            raise ValueError(f"padding and max_degrees must be >= 0, got {padding}, {max_degrees}")
        self.padding, self.flip_probability, self.max_degrees = int(padding), float(flip_probability), float(max_degrees)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def __repr__(self) -> str:
        return (f"Augment(padding={self.padding}, flip_probability={self.flip_probability:g}, "
                f"max_degrees={self.max_degrees:g})")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        _check_batch(images)
        if self.padding:
            images = random_crop(images, self.rng, self.padding)
        if self.flip_probability:
            images = random_flip(images, self.rng, self.flip_probability)
        if self.max_degrees:
            images = random_rotation(images, self.rng, self.max_degrees)
        return images
