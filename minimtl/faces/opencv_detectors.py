"""OpenCV's DNN face detectors, YuNet and res10, behind minimtl's detector interface.

* **YuNet** (``cv2.FaceDetectorYN``, ONNX, Apache-2.0, opencv_zoo): small and
  fast, gives five landmarks; runs on OpenCV 4.8+ and 5.
* **res10** (a ResNet-10 SSD in Caffe format, ``cv2.dnn.readNetFromCaffe``):
  the classic OpenCV face detector, boxes only.  OpenCV 5 removed the Caffe
  importer, so res10 needs OpenCV 4.x.

Model files are found by ``model_path`` in this order: an explicit path given
by the caller; the folder named by the environment variable ``MINIMTL_WEIGHTS``;
the per-user cache ``~/.cache/minimtl/weights`` (``$XDG_CACHE_HOME`` if set);
and, failing those, a download from upstream into that cache through
``minimtl.download.download`` (progress bar, checksum verified before the file
takes its final name).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from minimtl.download import DownloadError, download, sha1_of, sha256_of
from minimtl.faces.boxes import Detections, clip_boxes
from minimtl.faces.detector import DEFAULT_MAX_SIDE, FaceDetector, user_cache_dir

WEIGHTS_ENVIRONMENT_VARIABLE = "MINIMTL_WEIGHTS"


@dataclass(frozen=True)
class ModelFile:
    """A detector model file: its name, where upstream keeps it, and its checksum (sha256 or sha1)."""

    filename: str
    url: str
    sha256: str | None = None
    sha1: str | None = None

    def verify(self, path: Path) -> bool:
        """Whether the file at ``path`` has the expected digest."""
        if self.sha256:
            return sha256_of(path) == self.sha256
        if self.sha1:
            return sha1_of(path) == self.sha1
        return True


YUNET = ModelFile(
    "face_detection_yunet_2023mar.onnx",
    "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
)
RES10_WEIGHTS = ModelFile(
    "res10_300x300_ssd_iter_140000.caffemodel",
    "https://raw.githubusercontent.com/opencv/opencv_3rdparty/dnn_samples_face_detector_20170830/"
    "res10_300x300_ssd_iter_140000.caffemodel",
    sha1="15aa726b4d46d9f023526d85537db81cbc8dd566",  # the value OpenCV publishes
)
RES10_PROTOTXT = ModelFile(
    "deploy.prototxt",
    "https://raw.githubusercontent.com/opencv/opencv/4.x/samples/dnn/face_detector/deploy.prototxt",
    sha256="34d850436faf158ca4e690533ba27c1decf29653559299d80db9274146332ca7",
)


_verified: set[tuple[str, int, float]] = set()  # (path, size, mtime) of cached files already checked


def model_path(model: ModelFile, path: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
               allow_download: bool = True, progress: bool = True) -> Path:
    """Locate (or fetch) ``model`` and return its path.

    Args:
        model: which file.
        path: an explicit file path; used as given, without a checksum (it may be a newer release).
        cache_dir: the per-user cache; default ``user_cache_dir("weights")``.
        allow_download: fetch from ``model.url`` when the file is nowhere local.
        progress: progress bar while downloading.

    Raises:
        FileNotFoundError: ``path`` does not exist, or the file is nowhere and downloading is off.
        minimtl.download.ChecksumError / DownloadError: the download failed; nothing is left in the cache.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{model.filename}: no file at the given path {path}")
        return path
    folder = os.environ.get(WEIGHTS_ENVIRONMENT_VARIABLE)
    if folder:
        candidate = Path(folder) / model.filename
        if candidate.is_file():
            return candidate
    cache = Path(cache_dir) if cache_dir is not None else user_cache_dir("weights")
    cached = cache / model.filename
    if cached.is_file():
        stat = cached.stat()
        key = (str(cached), stat.st_size, stat.st_mtime)
        if key in _verified or model.verify(cached):
            _verified.add(key)
            return cached
        # a damaged cached copy falls through to a fresh download, which replaces it only once verified
    if not allow_download:
        raise FileNotFoundError(
            f"{model.filename} not found: pass its path, put it in ${WEIGHTS_ENVIRONMENT_VARIABLE}, "
            f"or allow the download from {model.url} into {cache}")
    try:
        return download(model.url, cached, sha256=model.sha256, sha1=model.sha1, progress=progress)
    except DownloadError as error:  # offline, most often: say where the file can come from instead
        raise DownloadError(f"{model.filename} is not on this machine and could not be downloaded ({error}): "
                            f"pass its path (--weights), or put it in the folder ${WEIGHTS_ENVIRONMENT_VARIABLE} "
                            f"names, or in {cache}") from error


def _load_net(what: str, path: Path, load):
    """``load()``, with OpenCV's error for a file that is not the model turned into a ValueError naming the file."""
    try:
        return load()
    except cv2.error as error:
        raise ValueError(f"{path} cannot be loaded as {what} ({' '.join(str(error).split())[-120:]}): "
                         f"give the right file, or remove it to have it downloaded again") from None


class YuNetDetector(FaceDetector):
    """YuNet through ``cv2.FaceDetectorYN``: boxes, scores and five landmarks.

    Args:
        model: explicit path of the ``.onnx`` file (else see ``model_path``).
        score_threshold: minimum face score.
        nms_threshold: IoU above which YuNet merges overlapping boxes.
        cache_dir, allow_download: passed to ``model_path``.
        max_side: see ``FaceDetector``.
    """

    name = "yunet"

    def __init__(self, model: str | os.PathLike | None = None, score_threshold: float = 0.9, nms_threshold: float = 0.3,
                 cache_dir: str | os.PathLike | None = None, allow_download: bool = True,
                 max_side: int = DEFAULT_MAX_SIDE):
        super().__init__(max_side)
        if not 0 <= score_threshold <= 1 or not 0 <= nms_threshold <= 1:
            raise ValueError(f"thresholds must be in [0, 1], got score {score_threshold}, nms {nms_threshold}")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise RuntimeError(f"OpenCV {cv2.__version__} has no cv2.FaceDetectorYN: YuNet needs OpenCV 4.8 or later")
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.model = model_path(YUNET, model, cache_dir=cache_dir, allow_download=allow_download)
        self._net = _load_net("YuNet's ONNX model", self.model, lambda: cv2.FaceDetectorYN.create(
            str(self.model), "", (320, 320), score_threshold, nms_threshold, 5000))

    @property
    def settings(self) -> str:
        return f"yunet(2023mar,score={self.score_threshold:g},nms={self.nms_threshold:g},max_side={self.max_side})"

    def _detect(self, image_bgr: np.ndarray) -> Detections:
        height, width = image_bgr.shape[:2]
        self._net.setInputSize((width, height))
        _, faces = self._net.detect(image_bgr)
        if faces is None or len(faces) == 0:
            return Detections.empty()
        faces = faces.astype(np.float64)
        boxes = np.column_stack([faces[:, 0], faces[:, 1], faces[:, 0] + faces[:, 2], faces[:, 1] + faces[:, 3]])
        # YuNet's points: right eye, left eye (the person's), nose, right and left mouth corners —
        # for a face towards the camera that is image-left first, the order of LANDMARK_NAMES.
        return Detections(clip_boxes(boxes, height, width), faces[:, 14], faces[:, 4:14].reshape(-1, 5, 2))


def require_caffe_importer(dnn_module=None) -> None:
    """Raise RuntimeError, saying what to do, when OpenCV lacks ``cv2.dnn.readNetFromCaffe`` (OpenCV 5)."""
    dnn_module = cv2.dnn if dnn_module is None else dnn_module
    if not hasattr(dnn_module, "readNetFromCaffe"):
        raise RuntimeError(
            f"the res10 face detector needs OpenCV 4.x: OpenCV {cv2.__version__} has no cv2.dnn.readNetFromCaffe "
            "(OpenCV 5 removed the Caffe importer). Install 'opencv-python-headless>=4.8,<5', "
            "or use detector='yunet' or 'mtcnn'.")


class Res10Detector(FaceDetector):
    """OpenCV's ResNet-10 SSD face detector (Caffe): boxes and scores, no landmarks.

    The net sees the image resized to 300 × 300 with the BGR means (104, 177, 123)
    subtracted, and returns boxes as fractions of the image.

    Args:
        model, prototxt: explicit paths of the ``.caffemodel`` and ``deploy.prototxt``.
        score_threshold: minimum face score.
        cache_dir, allow_download, max_side: as for ``YuNetDetector``.
    """

    name = "res10"

    def __init__(self, model: str | os.PathLike | None = None, prototxt: str | os.PathLike | None = None,
                 score_threshold: float = 0.5, cache_dir: str | os.PathLike | None = None,
                 allow_download: bool = True, max_side: int = DEFAULT_MAX_SIDE):
        super().__init__(max_side)
        require_caffe_importer()
        if not 0 <= score_threshold <= 1:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.score_threshold = score_threshold
        self.model = model_path(RES10_WEIGHTS, model, cache_dir=cache_dir, allow_download=allow_download)
        self.prototxt = model_path(RES10_PROTOTXT, prototxt, cache_dir=cache_dir, allow_download=allow_download)
        self._net = _load_net("the res10 Caffe model", self.model,
                              lambda: cv2.dnn.readNetFromCaffe(str(self.prototxt), str(self.model)))

    @property
    def settings(self) -> str:
        return f"res10(score={self.score_threshold:g},max_side={self.max_side})"

    def _detect(self, image_bgr: np.ndarray) -> Detections:
        height, width = image_bgr.shape[:2]
        blob = cv2.dnn.blobFromImage(cv2.resize(image_bgr, (300, 300)), 1.0, (300, 300), (104.0, 177.0, 123.0))
        self._net.setInput(blob)
        found = self._net.forward().reshape(-1, 7)  # (image id, class, score, x1, y1, x2, y2)
        found = found[found[:, 2] >= self.score_threshold]
        boxes = found[:, 3:7].astype(np.float64) * np.array([width, height, width, height])
        return Detections(clip_boxes(boxes, height, width), found[:, 2], None)
