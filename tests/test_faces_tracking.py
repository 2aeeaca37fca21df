"""Following faces through a video: the right box on a moving face, detection only every k-th frame,
smoothed labels, and a new detection when a face is lost."""
import cv2
import numpy as np
import pytest
from matplotlib import cbook

from minimtl.faces import FaceCropper, detect
from minimtl.faces.tracking import FaceTracker

pytestmark = pytest.mark.faces


def moving_face_clip(frames: int = 16, step: tuple[int, int] = (6, 3)):
    """640×480 frames with Grace Hopper's portrait (ships with matplotlib) shrunk to 200 px wide moving
    ``step`` pixels a frame over a textured background; also the true face box of each frame."""
    photo = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    photo = cv2.resize(photo, (200, 234), interpolation=cv2.INTER_AREA)
    box = detect(photo).boxes[0]
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 6)
    clip, boxes = [], []
    for index in range(frames):
        x, y = 60 + step[0] * index, 80 + step[1] * index
        frame = background.copy()
        frame[y:y + 234, x:x + 200] = photo
        clip.append(frame)
        boxes.append(box + np.array([x, y, x, y], np.float32))
    return clip, boxes


class CountingCropper(FaceCropper):
    def __init__(self):
        super().__init__()
        self.detections = 0

    def detection_image(self, image_bgr):
        self.detections += 1
        return super().detection_image(image_bgr)


def constant_classifier(crops):
    return {"smile": np.tile([0.2, 0.8], (len(crops), 1))}


def test_the_followed_box_stays_on_the_moving_face_and_the_detector_runs_every_kth_frame():
    clip, truth = moving_face_clip()
    cropper = CountingCropper()
    tracker = FaceTracker(cropper, constant_classifier, detect_every=5)
    numbers = set()
    for index, (frame, true_box) in enumerate(zip(clip, truth)):
        faces = tracker.update(frame)
        assert len(faces) == 1, index
        face = faces[0]
        numbers.add(face.number)
        assert face.detected == (index % 5 == 0), index
        iou = detect_iou(face.box, true_box)
        assert iou > 0.7, (index, iou)
    assert numbers == {0}  # one face, one number, all the way
    assert cropper.detections == 4  # frames 0, 5, 10 and 15
    assert tracker.seconds["follow"] > 0 and tracker.seconds["detect"] > 0


def detect_iou(a, b):
    from minimtl.faces import overlap

    return float(overlap(np.asarray(a)[None], np.asarray(b)[None])[0, 0])


def test_followed_landmarks_move_with_the_face():
    step = (2, 1)
    clip, _ = moving_face_clip(frames=5, step=step)
    tracker = FaceTracker(FaceCropper(), constant_classifier, detect_every=5)
    first = tracker.update(clip[0])[0].landmarks.copy()
    for index in range(1, 5):  # optical flow frames: the landmarks are where the known motion puts them
        followed = tracker.update(clip[index])[0]
        assert not followed.detected
        np.testing.assert_allclose(followed.landmarks, first + np.array(step) * index, atol=0.5)


def test_labels_are_smoothed_over_frames():
    clip, _ = moving_face_clip(frames=3, step=(1, 0))
    answers = iter([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])

    def flickering(crops):
        return {"smile": np.array([next(answers)])}

    tracker = FaceTracker(FaceCropper(), flickering, detect_every=2, smoothing=0.5)
    seen = [tracker.update(frame)[0].probabilities["smile"].copy() for frame in clip]
    np.testing.assert_allclose(seen, [[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])


def test_a_face_that_leaves_is_dropped_and_a_detection_follows():
    clip, _ = moving_face_clip(frames=3)
    blank = np.full_like(clip[0], 90)
    cropper = CountingCropper()
    tracker = FaceTracker(cropper, constant_classifier, detect_every=10)
    assert len(tracker.update(clip[0])) == 1
    assert tracker.update(blank) == []  # the landmarks cannot be followed onto a blank frame: detect again, nothing
    assert cropper.detections == 2
    with pytest.raises(ValueError, match="detect_every"):
        FaceTracker(cropper, constant_classifier, detect_every=0)
