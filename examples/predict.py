"""Smile, gender and age group for every face in a photo, a folder of photos, or a video.

    python examples/predict.py photo.jpg --weights runs/config-C/model.npz
    python examples/predict.py my_photos/ --weights runs/config-C/model.npz --out predictions/
    python examples/predict.py clip.mp4 --weights runs/config-C/model.npz --out clip_labelled.avi

Each face is found by a detector (MTCNN by default, as in the paper), aligned,
cropped to 48×48 grayscale exactly as for training, and classified by the
trained network.  The script prints one table row per face with each task's
most likely class and its probability, draws labelled boxes into a PNG per
photo (or into a video), and reports frames per second.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # run from a checkout without installing

from minimtl.faces import FaceCropper  # noqa: E402
from minimtl.faces.crop import ImageReadError, is_image_name, read_image  # noqa: E402
from minimtl.models import TASK_CLASS_NAMES  # noqa: E402
from minimtl.train import load_model, predict  # noqa: E402

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
COLOURS = {"smile": (60, 200, 60), "gender": (230, 140, 40), "age": (40, 140, 240)}  # BGR


def classify_faces(model, cropper: FaceCropper, image_bgr: np.ndarray, flip: bool = False) -> list[dict]:
    """Every face in ``image_bgr``: ``{"box": (4,), "score": float, task: (class name, probability)}``.

    Each face is framed exactly as the training faces were (``FaceCropper.crop_every_face``).
    """
    detections, crops = cropper.crop_every_face(image_bgr)
    if len(detections) == 0:
        return []
    probabilities = predict(model, crops, flip=flip)
    faces = []
    for i in range(len(detections)):
        face = {"box": detections.boxes[i], "score": float(detections.scores[i])}
        for task, p in probabilities.items():
            best = int(p[i].argmax())
            face[task] = (TASK_CLASS_NAMES[task][best], float(p[i, best]))
        faces.append(face)
    return faces


def draw(image_bgr: np.ndarray, faces: list[dict]) -> np.ndarray:
    """A copy of the image with a box and one label line per task over every face."""
    canvas = image_bgr.copy()
    scale = max(canvas.shape[:2]) / 600
    thickness = max(1, int(round(2 * scale)))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (255, 255, 255), thickness + 1)
        y = max(y1 - 4, 0)
        for task in reversed([t for t in TASK_CLASS_NAMES if t in face]):
            label = f"{face[task][0]} {100 * face[task][1]:.0f}%"
            (width, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, thickness)
            y = max(y, height + 2)
            cv2.rectangle(canvas, (x1, y - height - 3), (x1 + width + 4, y + 2), COLOURS[task], -1)
            cv2.putText(canvas, label, (x1 + 2, y - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, (255, 255, 255),
                        thickness, cv2.LINE_AA)
            y -= height + 6
    return canvas


def table_row(source: str, index: int, face: dict) -> str:
    x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
    cells = [f"{face[t][0]} ({100 * face[t][1]:.0f}%)" for t in TASK_CLASS_NAMES if t in face]
    return f"{source:<32} {index:>4}  ({x1},{y1},{x2},{y2})  " + "  ".join(f"{c:<22}" for c in cells)


def photos(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file() and is_image_name(p.name))
    return [source]


def run_photos(model, cropper, source: Path, out: Path, flip: bool = False) -> tuple[int, float]:
    paths = photos(source)
    out.mkdir(parents=True, exist_ok=True)
    frames, started = 0, time.perf_counter()
    for path in paths:
        try:
            image, _, _ = read_image(path)  # a huge photo comes back shrunk; boxes are drawn on what we have
        except ImageReadError as error:
            print(f"{path.name:<32} skipped: {error}")
            continue
        faces = classify_faces(model, cropper, image, flip)
        frames += 1
        if not faces:
            print(f"{path.name:<32} no face found")
        for index, face in enumerate(faces):
            print(table_row(path.name, index, face))
        cv2.imwrite(str(out / f"{path.stem}_labelled.png"), draw(image, faces))
    return frames, time.perf_counter() - started


def run_video(model, cropper, source: Path, out: Path, flip: bool = False) -> tuple[int, float]:
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise SystemExit(f"cannot open video {source}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    frames, started = 0, time.perf_counter()
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            faces = classify_faces(model, cropper, frame, flip)
            for index, face in enumerate(faces):
                print(table_row(f"{source.name}#{frames}", index, face))
            if writer is None:
                out.parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frame.shape[1], frame.shape[0]))
            writer.write(draw(frame, faces))
            frames += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return frames, time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a photo, a folder of photos, or a video")
    parser.add_argument("--weights", type=Path, required=True, help="model.npz from examples/train_mtl.py")
    parser.add_argument("--detector", choices=["mtcnn", "yunet", "res10"], default="mtcnn")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for labelled PNGs (default predictions/), or the output video (.avi, MJPG)")
    arguments = parser.parse_args(argv)
    if not arguments.source.exists():
        parser.error(f"{arguments.source} does not exist")
    model, config = load_model(arguments.weights)
    cropper = FaceCropper(detector=arguments.detector)
    print(f"Config {config.config} ({', '.join(config.tasks)}), detector {arguments.detector}")
    print(f"{'source':<32} {'face':>4}  box (x1,y1,x2,y2)  " + "  ".join(f"{t:<22}" for t in config.tasks))
    if arguments.source.suffix.lower() in VIDEO_SUFFIXES:
        out = arguments.out or arguments.source.with_name(arguments.source.stem + "_labelled.avi")
        frames, seconds = run_video(model, cropper, arguments.source, out, config.test_flip)
    else:
        out = arguments.out or Path("predictions")
        frames, seconds = run_photos(model, cropper, arguments.source, out, config.test_flip)
    print(f"{frames} frames in {seconds:.2f} s: {frames / max(seconds, 1e-9):.1f} frames per second "
          f"(detection, cropping and classification) → {out}")


if __name__ == "__main__":
    main()
