"""Video frames per second, both detectors side by side: every frame detected, against ``FaceTracker``.

A 640 × 480 clip is drawn here (Grace Hopper's portrait, which ships with
matplotlib, moving over a blurred-noise background, one face), and each
pipeline classifies every frame with the shipped model (or random weights
with ``--random-weights``):

* ``every frame``: detect, frame and classify every face of every frame, each face and its mirror image
  (what ``predict.py`` did before);
* ``tracker k=N``: ``minimtl.faces.tracking.FaceTracker`` as ``predict.py`` runs it on video: detecting
  every N-th frame and following the landmarks by optical flow in between, each face classified once
  (no mirror image: its labels are averaged over frames instead).

For each it prints frames per second and where a frame's time goes (detect,
follow, crop, classify).  YuNet needs its model file: set ``MINIMTL_WEIGHTS``
to the folder holding ``face_detection_yunet_2023mar.onnx`` (``../shared/weights``).

    python benchmarks/bench_video.py --frames 120
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(REPOSITORY / "tests"))

from minimtl.faces import FaceCropper  # noqa: E402
from minimtl.faces.tracking import FaceTracker  # noqa: E402


def clip(frames: int) -> list[np.ndarray]:
    from test_faces_tracking import moving_face_clip

    images, _ = moving_face_clip(frames=frames, step=(3, 1))
    return images


def classifier(random_weights: bool, flip: bool):
    from minimtl.models import SHIPPED_MODEL, BKNet
    from minimtl.train import load_model, predict

    if random_weights or not SHIPPED_MODEL.is_file():
        model = BKNet("C", init="he", seed=0)
    else:
        model, _ = load_model(SHIPPED_MODEL)
    model = model.fuse_for_inference()  # folded once, as examples/predict.py does
    return lambda crops: predict(model, crops, flip=flip)


def run(frames: list[np.ndarray], detector: str, detect_every: int, classify) -> tuple[float, dict[str, float]]:
    tracker = FaceTracker(FaceCropper(detector=detector), classify, detect_every=detect_every,
                          smoothing=0.6 if detect_every > 1 else 0.0)
    tracker.update(frames[0])  # warm-up: model files, JIT, caches
    tracker.seconds = dict.fromkeys(tracker.seconds, 0.0)
    started = time.perf_counter()
    for frame in frames[1:]:
        tracker.update(frame)
    elapsed = time.perf_counter() - started
    count = len(frames) - 1
    return count / elapsed, {stage: 1000 * seconds / count for stage, seconds in tracker.seconds.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--detect-every", type=int, default=5, help="the tracker's k")
    parser.add_argument("--detectors", default="mtcnn,yunet")
    parser.add_argument("--random-weights", action="store_true", help="classify with an untrained network")
    arguments = parser.parse_args(argv)
    if arguments.frames < 3:
        parser.error("--frames must be at least 3")
    frames = clip(arguments.frames)
    print(f"{arguments.frames} frames of 640×480, one face; frames per second and milliseconds a frame per stage")
    print(f"{'detector':<8} {'pipeline':<14} {'frames/s':>9}  " + "  ".join(f"{s:>9}" for s in
                                                                       ("detect", "follow", "crop", "classify")))
    for detector in arguments.detectors.split(","):
        if detector == "yunet" and "MINIMTL_WEIGHTS" not in os.environ:
            shared = Path(os.environ.get("MINIMTL_SHARED", REPOSITORY.parent / "shared")) / "weights"
            if shared.is_dir():
                os.environ["MINIMTL_WEIGHTS"] = str(shared)
        for every, label in ((1, "every frame"), (arguments.detect_every, f"tracker k={arguments.detect_every}")):
            fps, stages = run(frames, detector, every, classifier(arguments.random_weights, flip=every == 1))
            print(f"{detector:<8} {label:<14} {fps:>9.1f}  " + "  ".join(f"{stages[s]:>9.2f}" for s in
                                                                        ("detect", "follow", "crop", "classify")))


if __name__ == "__main__":
    main()
