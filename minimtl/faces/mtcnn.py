"""MTCNN, the face detector the paper crops with (Section 3.1), written on minimtl's own layers.

MTCNN (Zhang et al., "Joint Face Detection and Alignment Using Multitask
Cascaded Convolutional Networks", 2016) is three small CNNs run one after the other:

1. **P-Net** (proposal) slides over an image pyramid as a fully convolutional
   net.  Each output pixel scores the 12×12 window under it (stride 2) and
   regresses a better box.  Windows above ``thresholds[0]`` become candidates.
2. **R-Net** (refine) rescores every candidate on a 24×24 crop and moves its box.
3. **O-Net** (output) does the same on a 48×48 crop and also gives five landmarks.

Between the stages, duplicates are removed by non-maximum suppression and boxes
are made square.  The weights come from the PyPI package ``mtcnn==1.0.0`` (MIT),
stored by ``scripts/convert_mtcnn_weights.py`` in ``weights/mtcnn.npz`` in their
Keras layout; ``keras_to_minimtl`` rearranges them for minimtl's ``(N, C, H, W)``
layers.  The conventions of those weights: RGB input scaled ``(x − 127.5) / 128``;
max-pooling pads at the end (TensorFlow "same"); the first dense layer reads the
features flattened in ``(W, H, C)`` order; box offsets are fractions of the box
size; landmarks ``x1..x5, y1..y5`` are fractions of the box.

Differences from ``mtcnn==1.0.0``, on purpose: non-maximum suppression is the
classic greedy one (1.0.0 drops a box that overlaps *any* better box, even one
that was itself dropped); the pyramid stops before an image gets smaller than
12 pixels; crops for R-Net and O-Net are cut with zero padding and resized with
``cv2.INTER_AREA`` (the original MTCNN's way) rather than sampled bilinearly.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from minimtl import nn
from minimtl import functional as F
from minimtl.autograd import Tensor, no_grad
from minimtl.faces.detector import DEFAULT_MAX_SIDE, FaceDetector
from minimtl.faces.boxes import (
    Detections,
    apply_box_offsets,
    clip_boxes,
    non_maximum_suppression,
    square_boxes,
)

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "mtcnn.npz"


# ----------------------------------------------------------------- the three networks
class PNet(nn.Module):
    """Proposal network, fully convolutional.

    Input ``(N, 3, H, W)`` float32 (normalised RGB, ``H, W >= 12``).
    Output ``(box_offsets (N, 4, OH, OW), face_probability (N, 2, OH, OW))`` with
    ``OH = ceil((H − 2) / 2) − 4``: each output pixel looks at a 12×12 window,
    the windows 2 pixels apart.  Channel 1 of ``face_probability`` is "face".
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, padding="same")
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 4, 1)  # box offsets
        self.conv4_2 = nn.Conv2d(32, 2, 1)  # face / not-face logits

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_1(x), F.softmax(self.conv4_2(x), axis=1)


class RNet(nn.Module):
    """Refinement network: ``(N, 3, 24, 24)`` → ``(box_offsets (N, 4), face_probability (N, 2))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, padding="same")
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.flatten = nn.Flatten()
        self.fc4, self.prelu4 = nn.Linear(64 * 3 * 3, 128), nn.PReLU(128)
        self.fc5_1 = nn.Linear(128, 4)
        self.fc5_2 = nn.Linear(128, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))  # (N, 28, 11, 11)
        x = self.pool2(self.prelu2(self.conv2(x)))  # (N, 48, 4, 4)
        x = self.prelu3(self.conv3(x))  # (N, 64, 3, 3)
        x = self.prelu4(self.fc4(self.flatten(x)))  # (N, 128)
        return self.fc5_1(x), F.softmax(self.fc5_2(x), axis=1)


class ONet(nn.Module):
    """Output network: ``(N, 3, 48, 48)`` →
    ``(box_offsets (N, 4), landmarks (N, 10), face_probability (N, 2))``;
    landmarks are ``x1..x5, y1..y5`` as fractions of the box."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, padding="same")
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, padding="same")
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.flatten = nn.Flatten()
        self.fc5, self.prelu5 = nn.Linear(128 * 3 * 3, 256), nn.PReLU(256)
        self.fc6_1 = nn.Linear(256, 4)
        self.fc6_2 = nn.Linear(256, 10)
        self.fc6_3 = nn.Linear(256, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))  # (N, 32, 23, 23)
        x = self.pool2(self.prelu2(self.conv2(x)))  # (N, 64, 10, 10)
        x = self.pool3(self.prelu3(self.conv3(x)))  # (N, 64, 4, 4)
        x = self.prelu4(self.conv4(x))  # (N, 128, 3, 3)
        x = self.prelu5(self.fc5(self.flatten(x)))  # (N, 256)
        return self.fc6_1(x), self.fc6_2(x), F.softmax(self.fc6_3(x), axis=1)


# --------------------------------------------------------------------- weights
def keras_to_minimtl(keras: Mapping[str, np.ndarray], network: str) -> dict[str, np.ndarray]:
    """Rearrange one network's Keras-layout arrays into a ``state_dict`` for ``PNet``/``RNet``/``ONet``.

    Args:
        keras: arrays named ``"<network>/<layer>/<kernel|bias|alpha>"`` as in ``mtcnn.npz``.
        network: ``"pnet"``, ``"rnet"`` or ``"onet"``.

    * conv kernel ``(KH, KW, C_in, C_out)`` → ``(C_out, C_in, KH, KW)``;
    * PReLU alpha ``(1, 1, C)`` or ``(C,)`` → ``(C,)``;
    * dense kernel ``(in, out)`` → ``(out, in)``; for the first dense layer
      the ``in`` axis is also reordered from Keras's ``(W, H, C)`` flattening
      (a ``Permute((2, 1, 3))`` precedes it) to minimtl's ``(C, H, W)``.
    """
    first_dense = {"rnet": ("fc4", 64, 3, 3), "onet": ("fc5", 128, 3, 3)}.get(network)
    state = {}
    prefix = network + "/"
    for key, array in keras.items():
        if not key.startswith(prefix):
            continue
        layer, kind = key[len(prefix):].split("/")
        array = np.asarray(array, dtype=np.float32)
        if kind == "alpha":
            state[f"{layer}.weight"] = array.reshape(-1)
        elif kind == "bias":
            state[f"{layer}.bias"] = array
        elif array.ndim == 4:
            state[f"{layer}.weight"] = array.transpose(3, 2, 0, 1)
        elif first_dense and layer == first_dense[0]:
            _, channels, height, width = first_dense
            out = array.shape[1]
            state[f"{layer}.weight"] = (array.reshape(width, height, channels, out)
                                        .transpose(3, 2, 1, 0).reshape(out, channels * height * width))
        else:
            state[f"{layer}.weight"] = array.T
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def load_networks(path: Path | str = WEIGHTS_PATH) -> tuple[PNet, RNet, ONet]:
    """Build the three networks in evaluation mode with the weights from ``path`` (``mtcnn.npz``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MTCNN weights not found at {path}; rerun scripts/convert_mtcnn_weights.py")
    from minimtl import serialization

    keras = serialization.load(path)  # numbers only, never pickled code; a damaged file is a ValueError
    networks = (PNet(), RNet(), ONet())
    for name, network in zip(("pnet", "rnet", "onet"), networks):
        try:
            network.load_state_dict(keras_to_minimtl(keras, name))
        except (KeyError, ValueError, IndexError) as error:
            raise ValueError(f"{path} does not hold MTCNN's weights ({name}: {error}); give the mtcnn.npz "
                             f"that scripts/convert_mtcnn_weights.py writes, or leave out --weights") from None
        network.eval()
    return networks


# ------------------------------------------------------------------ the cascade
def normalize(image_rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB → ``(H, W, 3)`` float32 ``(x − 127.5) / 128``, the nets' input scale."""
    return (image_rgb.astype(np.float32) - 127.5) / 128.0


def pyramid_scales(height: int, width: int, min_face_size: float, scale_factor: float) -> list[float]:
    """Scales of the image pyramid.

    The first scale maps a face of ``min_face_size`` pixels onto P-Net's 12-pixel
    window; each next one is ``scale_factor`` times smaller, until the shorter
    side of the scaled image would drop below 12 pixels.
    """
    scale = 12.0 / min_face_size
    shorter = min(height, width) * scale
    scales = []
    while shorter >= 12:
        scales.append(scale)
        scale *= scale_factor
        shorter *= scale_factor
    return scales


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut each box out of ``image`` and resize it to ``size × size``, as a batch for R-Net or O-Net.

    Args:
        image: ``(H, W, 3)`` float32, normalised.
        boxes: ``(K, 4)`` boxes in pixels; parts outside the image read as 0
            (mid-grey after normalisation).
        size: 24 for R-Net, 48 for O-Net.

    Returns:
        ``(K, 3, size, size)`` float32.
    """
    height, width = image.shape[:2]
    patches = np.zeros((len(boxes), 3, size, size), dtype=np.float32)
    for index, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(np.int64)):
        box_width, box_height = max(int(x2 - x1), 1), max(int(y2 - y1), 1)
        canvas = np.zeros((box_height, box_width, 3), dtype=np.float32)
        sx1, sy1 = max(x1, 0), max(y1, 0)
        sx2, sy2 = min(x1 + box_width, width), min(y1 + box_height, height)
        if sx2 > sx1 and sy2 > sy1:
            canvas[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        shrinking = box_width > size or box_height > size
        resized = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        patches[index] = resized.transpose(2, 0, 1)
    return patches


class MTCNN(FaceDetector):
    """The P-Net → R-Net → O-Net cascade.

    Args:
        min_face_size: smallest face looked for, in pixels (sets the first pyramid scale).
        scale_factor: ratio between pyramid levels.
        thresholds: face-probability thresholds of P-Net, R-Net and O-Net.
        nms_thresholds: overlap thresholds of the non-maximum suppressions:
            P-Net within a scale, P-Net across scales, R-Net, O-Net (the last one
            measured against the smaller box, ``method="min"``).
        weights: path of ``mtcnn.npz``.
        batch_size: crops per R-Net/O-Net forward pass (bounds memory on busy images).
        max_side: see ``FaceDetector``.

    ``detect(image_bgr)`` is the common detector interface (BGR, as ``cv2.imread``
    gives); ``detect_rgb(image_rgb)`` runs the cascade on an RGB image as it is.
    """

    name = "mtcnn"

    def __init__(self, min_face_size: float = 20, scale_factor: float = 0.709,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8),
                 nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7),
                 weights: Path | str = WEIGHTS_PATH, batch_size: int = 256,
                 max_side: int = DEFAULT_MAX_SIDE):
        super().__init__(max_side)
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be at least 12 pixels (P-Net's window), got {min_face_size}")
        if not 0 < scale_factor < 1:
            raise ValueError(f"scale_factor must be between 0 and 1, got {scale_factor}")
        if len(thresholds) != 3 or len(nms_thresholds) != 4:
            raise ValueError("thresholds needs 3 values (P, R, O-Net) and nms_thresholds 4")
        self.min_face_size, self.scale_factor = float(min_face_size), float(scale_factor)
        self.thresholds, self.nms_thresholds = tuple(thresholds), tuple(nms_thresholds)
        self.batch_size = int(batch_size)
        self.pnet, self.rnet, self.onet = load_networks(weights)

    @property
    def settings(self) -> str:
        return (f"mtcnn(min_face={self.min_face_size:g},factor={self.scale_factor:g},"
                f"thresholds={','.join(f'{t:g}' for t in self.thresholds)},"
                f"nms={','.join(f'{t:g}' for t in self.nms_thresholds)},max_side={self.max_side})")

    # -------------------------------------------------------------- stage 1
    def propose(self, image: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid: ``(H, W, 3)`` normalised → ``(K, 5)`` square boxes + score."""
        height, width = image.shape[:2]
        candidates = []
        for scale in pyramid_scales(height, width, self.min_face_size, self.scale_factor):
            scaled_height, scaled_width = int(math.ceil(height * scale)), int(math.ceil(width * scale))
            scaled = cv2.resize(image, (scaled_width, scaled_height), interpolation=cv2.INTER_AREA)
            with no_grad():
                offsets, probability = self.pnet(Tensor(scaled.transpose(2, 0, 1)[None].copy()))
            face = probability.data[0, 1]  # (OH, OW)
            ys, xs = np.nonzero(face > self.thresholds[0])
            if len(ys) == 0:
                continue
            # The window of output pixel (y, x) is [2x, 2x + 12) × [2y, 2y + 12) in the scaled image.
            windows = np.stack([2 * xs, 2 * ys, 2 * xs + 12, 2 * ys + 12], axis=1).astype(np.float64)
            boxes = (windows + 12.0 * offsets.data[0][:, ys, xs].T) / scale
            scores = face[ys, xs]
            keep = non_maximum_suppression(boxes, scores, self.nms_thresholds[0])
            candidates.append(np.column_stack([boxes[keep], scores[keep]]))
        if not candidates:
            return np.zeros((0, 5))
        candidates = np.concatenate(candidates)
        candidates = candidates[non_maximum_suppression(candidates[:, :4], candidates[:, 4], self.nms_thresholds[1])]
        candidates[:, :4] = square_boxes(candidates[:, :4])
        return candidates

    def _run_batched(self, network: nn.Module, patches: np.ndarray) -> list[np.ndarray]:
        outputs = []
        with no_grad():
            for start in range(0, len(patches), self.batch_size):
                outputs.append([t.data for t in network(Tensor(patches[start:start + self.batch_size]))])
        return [np.concatenate(parts) for parts in zip(*outputs)]

    # -------------------------------------------------------------- stage 2
    def refine(self, image: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """R-Net: ``(K, 5)`` candidates → ``(M, 5)`` rescored, moved, square boxes."""
        if len(candidates) == 0:
            return candidates
        offsets, probability = self._run_batched(self.rnet, crop_patches(image, candidates[:, :4], 24))
        scores = probability[:, 1]
        boxes = apply_box_offsets(candidates[:, :4], offsets)
        keep = scores > self.thresholds[1]
        boxes, scores = boxes[keep], scores[keep]
        keep = non_maximum_suppression(boxes, scores, self.nms_thresholds[2])
        return np.column_stack([square_boxes(boxes[keep]), scores[keep]])

    # -------------------------------------------------------------- stage 3
    def output(self, image: np.ndarray, candidates: np.ndarray) -> Detections:
        """O-Net: ``(K, 5)`` candidates → final boxes, scores and five landmarks each."""
        if len(candidates) == 0:
            return Detections.empty()
        offsets, landmark_fractions, probability = self._run_batched(self.onet, crop_patches(image, candidates[:, :4], 48))
        scores = probability[:, 1]
        boxes = candidates[:, :4]
        width = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        height = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = boxes[:, 0:1] + width * landmark_fractions[:, 0:5] - 1
        ys = boxes[:, 1:2] + height * landmark_fractions[:, 5:10] - 1
        landmarks = np.stack([xs, ys], axis=2)  # (K, 5, 2)
        boxes = apply_box_offsets(boxes, offsets)
        keep = np.nonzero(scores > self.thresholds[2])[0]
        keep = keep[non_maximum_suppression(boxes[keep], scores[keep], self.nms_thresholds[3], method="min")]
        return Detections(boxes[keep], scores[keep], landmarks[keep])

    def _detect(self, image_bgr: np.ndarray) -> Detections:
        return self.detect_rgb(np.ascontiguousarray(image_bgr[:, :, ::-1]))

    def detect_rgb(self, image_rgb: np.ndarray) -> Detections:
        """Faces in one ``(H, W, 3)`` uint8 RGB image (no shrinking), boxes clipped to the image."""
        if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError("MTCNN.detect_rgb expects an (H, W, 3) RGB array, "
                             f"got {getattr(image_rgb, 'shape', type(image_rgb))}")
        if image_rgb.dtype != np.uint8:
            raise TypeError(f"MTCNN.detect_rgb expects uint8 pixels, got {image_rgb.dtype}")
        height, width = image_rgb.shape[:2]
        image = normalize(image_rgb)
        detections = self.output(image, self.refine(image, self.propose(image)))
        detections.boxes = clip_boxes(detections.boxes, height, width).astype(np.float32)
        return detections
