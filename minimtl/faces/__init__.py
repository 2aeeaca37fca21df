"""Face detection and cropping: the preprocessing of the paper's Section 3.1 and Figure 2.

The paper finds every face with MTCNN, crops it, converts it to grayscale and
resizes it to 48 × 48.  This package does that with three interchangeable
detectors behind one interface:

    mtcnn.py            MTCNN (P-Net → R-Net → O-Net) on minimtl's own layers
    opencv_detectors.py YuNet and res10, OpenCV's DNN face detectors
    detector.py         the interface: ``detect(image_bgr) -> Detections``
    boxes.py            Detections, IoU, non-maximum suppression
    crop.py             FaceCropper (detect → choose → align → crop → 48 × 48 gray),
                        reading image files robustly, the crop cache, folders and archives
    tracking.py         FaceTracker: faces through a video, detecting every k-th frame
    distributed.py      the same crop on a Dask cluster (the ``distributed`` extra)
    __main__.py         ``python -m minimtl.faces crop SRC DST [--cluster local:N | --scheduler ADDRESS]``

Typical use::

    from minimtl.faces import FaceCropper, detect
    detections = detect(image_bgr, detector="yunet")   # boxes (K, 4), scores (K,), landmarks (K, 5, 2)
    crop = FaceCropper(detector="mtcnn")(image_bgr)     # (48, 48) uint8, or None without a face
"""
from __future__ import annotations

import numpy as np

from minimtl.faces.boxes import LANDMARK_NAMES, Detections, non_maximum_suppression, overlap
from minimtl.faces.detector import FaceDetector

DETECTOR_NAMES = ("mtcnn", "yunet", "res10")

_shared_detectors: dict[tuple, FaceDetector] = {}


def get_detector(name: str | FaceDetector = "mtcnn", **options) -> FaceDetector:
    """A detector by name: ``"mtcnn"``, ``"yunet"`` or ``"res10"``; ``options`` go to its constructor.

    A ``FaceDetector`` instance is returned as it is.  Detectors are built once per
    (name, options) and shared, since loading a model costs far more than a detection.
    """
    if isinstance(name, FaceDetector):
        if options:
            raise ValueError("options cannot be applied to an already built detector")
        return name
    if not isinstance(name, str):
        raise TypeError(f"detector must be a name or a FaceDetector, got {type(name).__name__}")
    if name not in DETECTOR_NAMES:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
    try:
        key = (name, tuple(sorted((k, str(v)) for k, v in options.items())))
    except TypeError:
        key = None
    if key is not None and key in _shared_detectors:
        return _shared_detectors[key]
    if name == "mtcnn":
        from minimtl.faces.mtcnn import MTCNN as detector_class
    elif name == "yunet":
        from minimtl.faces.opencv_detectors import YuNetDetector as detector_class
    else:
        from minimtl.faces.opencv_detectors import Res10Detector as detector_class
    detector = detector_class(**options)
    if key is not None:
        _shared_detectors[key] = detector
    return detector


def detect(image: np.ndarray, detector: str | FaceDetector = "mtcnn", **options) -> Detections:
    """Faces in ``image`` ``(H, W, 3)`` uint8 BGR: boxes ``(K, 4)`` x1, y1, x2, y2 float32 in its pixels,
    scores ``(K,)``, landmarks ``(K, 5, 2)`` or None; best score first."""
    return get_detector(detector, **options).detect(image)


def __getattr__(name: str):
    # crop.py is imported on first use so that `import minimtl.faces` stays light.
    if name in ("FaceCropper", "CropResult", "CropCache", "read_image", "crop_images"):
        from minimtl.faces import crop
        return getattr(crop, name)
    raise AttributeError(f"module 'minimtl.faces' has no attribute {name!r}")


__all__ = ["DETECTOR_NAMES", "LANDMARK_NAMES", "CropCache", "CropResult", "Detections", "FaceCropper", "FaceDetector",
           "crop_images", "detect", "get_detector", "non_maximum_suppression", "overlap", "read_image"]
