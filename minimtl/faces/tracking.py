"""Faces through a video: detect every few frames, follow the landmarks in between, smooth the labels.

Detection is the slow part of a frame (MTCNN's pyramid on a 640 × 480 frame
takes far longer than classifying a 48 × 48 face), and between two frames a
face moves a few pixels.  So ``FaceTracker`` runs the detector only every
``detect_every`` frames (and whenever it has lost a face), and in the frames
between follows each face's five landmarks with pyramidal Lucas-Kanade
optical flow (``cv2.calcOpticalFlowPyrLK``).  A point is trusted only if
tracking it back to the previous frame lands within ``max_error`` pixels of
where it started (the forward-backward check of Kalal et al., 2010); a face
with an untrusted point is dropped, and the next frame is a detection frame.

Because it is the landmarks that are followed, every frame's crop is framed
exactly as the training faces were (``FaceCropper.crop_with_square`` with the
landmark template).  All faces of a frame go through the network as one batch.
Each face's probabilities are smoothed over frames,
``p ← smoothing · p + (1 − smoothing) · p_new``, so its labels do not flicker.

A detection is matched to the face it continues by the overlap of their boxes
(IoU above ``match_overlap``); its smoothed labels and its number carry over.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from minimtl.faces.boxes import overlap
from minimtl.faces.crop import FACE_TEMPLATE, FaceCropper, similarity_transform

__all__ = ["FaceTracker", "TrackedFace"]


@dataclass
class TrackedFace:
    """One face followed through the video.

    Attributes:
        number: stays the same while the face is followed.
        box: ``(4,)`` x1, y1, x2, y2 in frame pixels.
        landmarks: ``(5, 2)`` in frame pixels.
        probabilities: ``{task: (classes,)}`` smoothed over frames (empty until first classified).
        detected: True in the frame where the detector found it, False where it was followed by optical flow.
    """

    number: int
    box: np.ndarray
    landmarks: np.ndarray
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    detected: bool = True


class FaceTracker:
    """Smile, gender and age for every face of every frame, detecting only every ``detect_every`` frames.

    Args:
        cropper: the ``FaceCropper`` (its detector, framing and settings); it needs a detector with landmarks.
        classify: ``crops (K, 48, 48) uint8 -> {task: (K, classes)}`` probabilities (e.g. ``minimtl.train.predict``
            bound to a model).
        detect_every: run the detector on every k-th frame (1: every frame).
        smoothing: weight of the past in the smoothed probabilities, in [0, 1) (0: no smoothing).
        max_error: forward-backward error, in pixels, above which a followed landmark is not trusted.
        match_overlap: IoU above which a detection continues a followed face.

    ``update(frame_bgr)`` returns the ``TrackedFace`` list of that frame; ``seconds`` holds the time spent in
    each stage (``detect``, ``follow``, ``crop``, ``classify``) since the tracker was made.
    """

    def __init__(self, cropper: FaceCropper, classify, detect_every: int = 5, smoothing: float = 0.6,
                 max_error: float = 2.0, match_overlap: float = 0.3):
        if not isinstance(detect_every, int) or detect_every < 1:
            raise ValueError(f"detect_every must be a positive integer, got {detect_every!r}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.cropper, self.classify = cropper, classify
        self.detect_every, self.smoothing = detect_every, float(smoothing)
        self.max_error, self.match_overlap = float(max_error), float(match_overlap)
        self.faces: list[TrackedFace] = []
        self.frame_index = 0
        self.next_number = 0
        self.previous_gray: np.ndarray | None = None
        self.seconds = {"detect": 0.0, "follow": 0.0, "crop": 0.0, "classify": 0.0}

    # ------------------------------------------------------------------------------------------ the stages
    def detect(self, frame_bgr: np.ndarray) -> list[TrackedFace]:
        """Detector on the whole frame; each detection continues the followed face it overlaps most, if any."""
        image, factor = self.cropper.detection_image(frame_bgr)
        detections = self.cropper.detector.detect(image).scaled(factor)
        if detections.landmarks is None:
            raise ValueError(f"the {self.cropper.detector.name} detector gives no landmarks; "
                             "FaceTracker follows landmarks (use mtcnn or yunet)")
        faces = []
        previous = self.faces
        ious = overlap(detections.boxes, np.array([f.box for f in previous])) if previous and len(detections) else None
        taken: set[int] = set()
        for index in np.argsort(-detections.areas(), kind="stable"):
            match = None
            if ious is not None:
                for candidate in np.argsort(-ious[index]):  # the best overlap not yet continued
                    if ious[index, candidate] <= self.match_overlap:
                        break
                    if int(candidate) not in taken:
                        match = previous[candidate]
                        taken.add(int(candidate))
                        break
            number = match.number if match is not None else self._new_number()
            faces.append(TrackedFace(number, detections.boxes[index].copy(), detections.landmarks[index].copy(),
                                     dict(match.probabilities) if match is not None else {}, detected=True))
        return faces

    def follow(self, previous_gray: np.ndarray, gray: np.ndarray) -> list[TrackedFace] | None:
        """Every face's landmarks moved by optical flow from ``previous_gray`` to ``gray``; None if any is lost."""
        if not self.faces:
            return []
        points = np.concatenate([f.landmarks for f in self.faces]).astype(np.float32).reshape(-1, 1, 2)
        window = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        moved, found, _ = cv2.calcOpticalFlowPyrLK(previous_gray, gray, points, None, **window)
        back, found_back, _ = cv2.calcOpticalFlowPyrLK(gray, previous_gray, moved, None, **window)
        error = np.linalg.norm((back - points).reshape(-1, 2), axis=1)
        trusted = (found.ravel() == 1) & (found_back.ravel() == 1) & (error <= self.max_error)
        if not trusted.all():
            return None
        moved = moved.reshape(len(self.faces), 5, 2)
        faces = []
        for face, landmarks in zip(self.faces, moved):
            transform = similarity_transform(face.landmarks, landmarks)  # how the face moved: box follows
            corners = np.array([[face.box[0], face.box[1], 1], [face.box[2], face.box[3], 1]]) @ transform.T
            box = np.array([*corners.min(0), *corners.max(0)], dtype=np.float32)
            faces.append(TrackedFace(face.number, box, landmarks.astype(np.float32), face.probabilities, detected=False))
        return faces

    def crop(self, frame_bgr: np.ndarray, faces: list[TrackedFace]) -> np.ndarray:
        """``(K, size, size)`` uint8: each face framed by its landmarks exactly as the training faces were."""
        size = self.cropper.size
        if not faces:
            return np.zeros((0, size, size), np.uint8)
        squares = [np.vstack([similarity_transform(f.landmarks, FACE_TEMPLATE), [0, 0, 1]]) for f in faces]
        return np.stack([self.cropper.crop_with_square(frame_bgr, square)[0] for square in squares])

    # ------------------------------------------------------------------------------------------- a frame
    def update(self, frame_bgr: np.ndarray) -> list[TrackedFace]:
        """The faces of the next frame of the video, classified, with their labels smoothed."""
        started = time.perf_counter()
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        faces = None
        if self.frame_index % self.detect_every != 0 and self.previous_gray is not None:
            faces = self.follow(self.previous_gray, gray)
            self.seconds["follow"] += time.perf_counter() - started
        if faces is None:  # a detection frame, or a face was lost
            started = time.perf_counter()
            faces = self.detect(frame_bgr)
            self.seconds["detect"] += time.perf_counter() - started
        started = time.perf_counter()
        crops = self.crop(frame_bgr, faces)
        self.seconds["crop"] += time.perf_counter() - started
        if faces:
            started = time.perf_counter()
            probabilities = self.classify(crops)
            self.seconds["classify"] += time.perf_counter() - started
            for index, face in enumerate(faces):
                for task, p in probabilities.items():
                    old = face.probabilities.get(task)
                    face.probabilities[task] = p[index] if old is None else self.smoothing * old + (1 - self.smoothing) * p[index]
        self.faces, self.previous_gray = faces, gray
        self.frame_index += 1
        return faces

    def _new_number(self) -> int:
        self.next_number += 1
        return self.next_number - 1
