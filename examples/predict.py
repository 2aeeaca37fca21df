"""Smile, gender and age group for every face in a photo, a folder of photos, a video or a camera.

    python examples/predict.py photo.jpg                      # the shipped model (minimtl/weights/)
    python examples/predict.py my_photos/ --out predictions/
    python examples/predict.py clip.mp4 --out clip_labelled.avi --detector yunet
    python examples/predict.py --camera 0
    python examples/predict.py photo.jpg --weights runs/config-C/model.npz   # any run's model

Each face is found by a detector (MTCNN by default, as in the paper), aligned,
cropped to 48×48 grayscale exactly as for training, and classified by the
network: the shipped Config C (its accuracy per data set is in
minimtl/weights/MODEL_CARD.md) unless --weights names another.  The script
prints one row per face with each task's most likely class and its
probability, draws labelled boxes into a PNG per photo (or into a video), and
reports frames per second.  Video and camera frames go through
minimtl.faces.tracking.FaceTracker: the detector runs on every
--detect-every-th frame (default 5) and the faces are followed by optical
flow in between, with their labels smoothed over frames.
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

from minimtl import cli  # noqa: E402
from minimtl.faces import FaceCropper  # noqa: E402
from minimtl.faces.crop import IMAGE_SUFFIXES, ImageReadError, is_image_name, read_image  # noqa: E402
from minimtl.files import atomic_write  # noqa: E402
from minimtl.data import CLASS_NAMES, TASKS  # noqa: E402
from minimtl.models import SHIPPED_MODEL  # noqa: E402
from minimtl.train import load_model, predict  # noqa: E402

PROG = "examples/predict.py"
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
COLOURS = {"smile": (60, 200, 60), "gender": (230, 140, 40), "age": (40, 140, 240)}  # BGR


def classify_faces(model, cropper: FaceCropper, image_bgr: np.ndarray, flip: bool = False) -> list[dict]:
    """Every face in ``image_bgr``: ``{"box": (4,), task: (class name, probability)}``.

    Each face is framed exactly as the training faces were (``FaceCropper.crop_every_face``).
    """
    detections, crops = cropper.crop_every_face(image_bgr)
    if len(detections) == 0:
        return []
    probabilities = probabilities_of(model, crops, flip)
    return [labelled(detections.boxes[i], {task: p[i] for task, p in probabilities.items()})
            for i in range(len(detections))]


def probabilities_of(model, crops: np.ndarray, flip: bool) -> dict[str, np.ndarray]:
    """``{task: (K, classes)}`` for ``(K, 48, 48)`` crops; ``ValueError`` if the model gives no finite numbers."""
    probabilities = predict(model, crops, flip=flip)
    for task, p in probabilities.items():
        if not np.isfinite(p).all():  # weights that overflow: a number printed as "nan%" would be a lie
            raise ValueError(f"the model's {task} probabilities are not finite numbers: its weights are unusable")
    return probabilities


def labelled(box, probabilities: dict[str, np.ndarray]) -> dict:
    """``{"box": (4,), task: (most likely class name, its probability)}`` of one face."""
    face = {"box": box}
    for task, p in probabilities.items():
        best = int(np.argmax(p))
        face[task] = (CLASS_NAMES[task][best], float(p[best]))
    return face


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Area shared by two rectangles ``(x, y, width, height)``."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(width, 0) * max(height, 0)


def place_captions(boxes, sizes, image_shape) -> tuple[list[tuple[int, int, int, int]], int]:
    """Where each face's caption goes, and how many pixels of captions still cover another caption or a face.

    ``boxes``: the faces' ``(x1, y1, x2, y2)``; ``sizes``: each caption's ``(width, height)``; ``image_shape``:
    ``(H, W, ...)``.  Returns ``(x, y, width, height)`` per face and the covered area.  A caption takes the first
    place that covers no caption already placed and no face: just above, just below, beside (right, then left),
    then further up or down in steps (faces are placed top to bottom, left to right);
    where none is free, the place that covers least.  Every caption lies inside the image.
    """
    image_height, image_width = image_shape[:2]
    faces = [tuple(int(round(v)) for v in box) for box in boxes]
    face_rectangles = [(x1, y1, x2 - x1, y2 - y1) for x1, y1, x2, y2 in faces]
    order = sorted(range(len(faces)), key=lambda i: (faces[i][1], faces[i][0]))
    placed: dict[int, tuple[int, int, int, int]] = {}
    covered = 0
    for i in order:
        x1, y1, x2, y2 = faces[i]
        width, height = (int(v) for v in sizes[i])
        x = min(max(x1, 0), max(image_width - width, 0))
        step = max(height // 2, 1)
        beside = [(x2 + 2, y1), (x1 - width - 2, y1)]
        further = [(x, y) for k in range(1, 2 * image_height // step + 2)
                   for y in (y1 - height - 2 - k * step, y2 + 2 + k * step)]
        best, best_cover = None, None
        for x_, y in [(x, y1 - height - 2), (x, y2 + 2)] + beside + further:
            if not (0 <= y <= image_height - height and 0 <= x_ <= image_width - width):
                continue
            rectangle = (x_, y, width, height)
            cover = (sum(overlap(rectangle, other) for other in placed.values())
                     + sum(overlap(rectangle, face) for face in face_rectangles))
            if best_cover is None or cover < best_cover:
                best, best_cover = rectangle, cover
            if cover == 0:
                break
        if best is None:  # a caption taller than the image: from the top
            best, best_cover = (x, 0, width, height), height * width
        placed[i] = best
        covered += best_cover
    return [placed[i] for i in range(len(faces))], covered


def caption_lines(face: dict, scale: float, thickness: int) -> list[tuple[str, str, int, int]]:
    """``(task, text, width, height)`` of each line of a face's caption, in task order."""
    lines = []
    for task in (t for t in TASKS if t in face):
        text = f"{face[task][0]} {100 * face[task][1]:.0f}%"
        (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, thickness)
        lines.append((task, text, width, height))
    return lines


SHRINK_STEPS = 4  # a crowded photo's captions shrink by 0.8 up to this many times to find room


def layout(image_shape, faces: list[dict]) -> tuple[float, int, list, list]:
    """``(text scale, thickness, caption lines per face, caption rectangles)``: the largest text (from the image's
    size down, ``SHRINK_STEPS`` times by 0.8) whose captions cover no other caption and no face."""
    scale = max(image_shape[:2]) / 600
    for attempt in range(SHRINK_STEPS + 1):
        thickness = max(1, int(round(2 * scale)))
        captions = [caption_lines(face, scale, thickness) for face in faces]
        sizes = [(max((w for _, _, w, _ in lines), default=0) + 4, sum(h + 6 for _, _, _, h in lines))
                 for lines in captions]
        rectangles, covered = place_captions([f["box"] for f in faces], sizes, image_shape)
        if covered == 0 or attempt == SHRINK_STEPS:
            return scale, thickness, captions, rectangles
        scale *= 0.8


def draw(image_bgr: np.ndarray, faces: list[dict]) -> np.ndarray:
    """A copy of the image with a box over every face and its caption, one line per task, where it covers no other
    caption and no face (see ``layout``)."""
    canvas = image_bgr.copy()
    scale, thickness, captions, rectangles = layout(canvas.shape, faces)
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (255, 255, 255), max(1, int(round(2 * max(canvas.shape[:2]) / 600))) + 1)
    for lines, (x, y, width, _) in zip(captions, rectangles):
        for task, text, _, height in lines:
            cv2.rectangle(canvas, (x, y), (x + width - 1, y + height + 5), COLOURS[task], -1)
            cv2.putText(canvas, text, (x + 2, y + height + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                        (255, 255, 255), thickness, cv2.LINE_AA)
            y += height + 6
    return canvas


def table_row(source: str, index: int, face: dict) -> str:
    x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
    cells = [f"{face[t][0]} ({100 * face[t][1]:.0f}%)" for t in TASKS if t in face]
    return f"{cli.printable(source):<32} {index:>4}  ({x1},{y1},{x2},{y2})  " + "  ".join(f"{c:<22}" for c in cells)


def photos(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file() and is_image_name(p.name))
    return [source]


def write_image(path: Path, image: np.ndarray) -> None:
    """Write ``image`` as a PNG at ``path``, atomically (a temporary file beside it, then renamed)."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"OpenCV could not encode the labelled image for {path}")
    with atomic_write(path) as stream:
        stream.write(encoded.tobytes())


def output_for_photos(source: Path, out: Path | None) -> tuple[Path, Path | None]:
    """``(folder, file)`` the labelled photos go to: ``--out x.png`` with one photo is that file, else a folder."""
    if out is not None and is_image_name(out.name) and not out.is_dir():
        if source.is_dir():
            raise cli.UsageError(f"--out {out} names an image file, but {source} is a folder of photos: "
                                 f"give a folder for their labelled copies")
        if out.suffix.lower() != ".png":
            raise cli.UsageError(f"--out {out}: the labelled photo is written as a PNG: give a name ending in .png")
        return out.parent, out
    folder = out or Path("predictions")
    if folder.exists() and not folder.is_dir():
        raise cli.UsageError(f"--out {folder} is a file: give a folder for the labelled photos, or a .png name "
                             f"for one photo")
    return folder, None


def run_photos(model, cropper, source: Path, out: Path, flip: bool = False, out_file: Path | None = None
               ) -> tuple[int, float]:
    """Label every photo of ``source`` (a photo or a folder) into ``out/<name>_labelled.png`` (or ``out_file``).

    An unreadable photo is skipped with its reason; ``ValueError`` when not one photo could be read."""
    paths = photos(source)
    if not paths:
        raise ValueError(f"{source} holds no photos (files named {', '.join(IMAGE_SUFFIXES[:4])} ...)")
    frames, started, skipped = 0, time.perf_counter(), []
    for path in paths:
        try:
            image, _, _ = read_image(path)  # upright, and a huge photo shrunk: boxes are drawn on what we have
        except ImageReadError as error:
            print(f"{cli.printable(path.name):<32} skipped: {error}")
            skipped.append(f"{cli.printable(path.name)}: {error}")
            continue
        faces = classify_faces(model, cropper, image, flip)
        frames += 1
        if not faces:
            print(f"{cli.printable(path.name):<32} no face found")
        for index, face in enumerate(faces):
            print(table_row(path.name, index, face))
        out.mkdir(parents=True, exist_ok=True)  # only once there is something to write
        write_image(out_file or out / f"{path.stem}_labelled.png", draw(image, faces))
    if not frames:
        raise ValueError(f"no photo could be read ({skipped[0]}" + (f"; and {len(skipped) - 1} more)" if len(skipped) > 1
                                                                   else ")"))
    return frames, time.perf_counter() - started


def open_capture(source: Path | int) -> cv2.VideoCapture:
    """An open ``cv2.VideoCapture`` of a video file or camera number; ``ValueError`` if it cannot be opened."""
    quiet = cv2.utils.logging.LOG_LEVEL_ERROR  # OpenCV's own warnings would add lines of C++ detail to ours
    level = cv2.utils.logging.setLogLevel(quiet)
    try:
        capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not capture.isOpened():
        capture.release()
        if isinstance(source, int):
            raise ValueError(f"no camera {source} on this machine (OpenCV cannot open it): "
                             f"give another --camera number, or a video file")
        raise ValueError(f"cannot open {source} as a video: it is damaged or of a format OpenCV does not read")
    return capture


def run_video(model, cropper, source: Path | int, out: Path, detect_every: int = 5,
              progress: bool = True) -> tuple[int, float]:
    """Label every frame of a video file (or camera ``source``) into the MJPG video ``out``, through ``FaceTracker``.

    Each face is classified once a frame, without its mirror image (``test_flip``): its labels are smoothed over
    frames instead, at half the cost.

    Prints a row per face per frame and, on stderr, a live frames-per-second figure.  A camera runs until Ctrl-C.
    """
    from tqdm.auto import tqdm

    from minimtl.faces.tracking import FaceTracker

    capture = open_capture(source)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps < 1000 else 25.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not isinstance(source, int) else 0
    name = f"camera{source}" if isinstance(source, int) else source.name

    # each face once: the average over frames takes the place of the mirror-image average
    tracker = FaceTracker(cropper, lambda crops: probabilities_of(model, crops, flip=False), detect_every=detect_every)
    writer = None
    frames, started = 0, time.perf_counter()
    bar = tqdm(total=count or None, unit="frame", desc=name, disable=not progress, leave=False)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            faces = [labelled(face.box, face.probabilities) for face in tracker.update(frame)]
            for index, face in enumerate(faces):
                print(table_row(f"{name}#{frames}", index, face))
            if writer is None:
                out.parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write the video {out}: check the folder, or give an .avi name")
            writer.write(draw(frame, faces))
            frames += 1
            bar.update()
            bar.set_postfix_str(f"{frames / (time.perf_counter() - started):.1f} frames/s", refresh=False)
    except KeyboardInterrupt:
        if not isinstance(source, int):
            raise
        # a camera ends with Ctrl-C: what was filmed is kept
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
    if not frames:
        raise ValueError(f"{name} gave no frame OpenCV can read: it is empty or damaged")
    return frames, time.perf_counter() - started


def main(argv=None) -> None:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, nargs="?", help="a photo, a folder of photos, or a video")
    parser.add_argument("--camera", type=cli.integer(at_least=0), default=None, metavar="N",
                        help="label the frames of camera N (OpenCV's numbering, 0 first) until Ctrl-C")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a model.npz from examples/train_mtl.py (default: the shipped model)")
    parser.add_argument("--detector", choices=["mtcnn", "yunet", "res10"], default="mtcnn")
    parser.add_argument("--detect-every", type=cli.integer(at_least=1), default=5, metavar="K",
                        help="video and camera: run the detector on every K-th frame and follow the faces in "
                             "between (1: detect on every frame)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for labelled PNGs (default predictions/), a .png name for one photo, "
                             "or the output video (.avi, MJPG)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar for videos")
    arguments = parser.parse_args(argv)
    if (arguments.source is None) == (arguments.camera is None):
        parser.error("give a photo, a folder or a video, or --camera N (one of them)")
    if arguments.source is not None and not arguments.source.exists():
        parser.error(f"{arguments.source} does not exist")
    weights = arguments.weights or SHIPPED_MODEL
    if not weights.is_file():
        parser.error(f"--weights {weights}: no such file (the model.npz a training run writes)" if arguments.weights
                     else f"this installation has no shipped model at {weights}: give --weights runs/.../model.npz")
    if arguments.detector == "res10" and (arguments.camera is not None or arguments.source.suffix.lower() in VIDEO_SUFFIXES):
        parser.error("video follows each face's landmarks, which res10 does not give: use --detector mtcnn or yunet")
    video = arguments.camera is not None or (arguments.source.is_file()
                                             and arguments.source.suffix.lower() in VIDEO_SUFFIXES)
    if video:
        default = (Path(f"camera{arguments.camera}_labelled.avi") if arguments.source is None
                   else arguments.source.with_name(arguments.source.stem + "_labelled.avi"))
        out = arguments.out or default
        if out.suffix.lower() != ".avi" or out.is_dir():
            raise cli.UsageError(f"--out {out}: a labelled video is written as MJPG: give a file name ending in .avi")
    else:
        out, out_file = output_for_photos(arguments.source, arguments.out)
    model, config = load_model(weights)
    model = model.fuse_for_inference()  # folded once: every photo and frame reuses it
    cropper = FaceCropper(detector=arguments.detector)
    print(f"Config {config.config} ({', '.join(config.tasks)}) from {cli.printable(str(weights))}, "
          f"detector {arguments.detector}")
    print(f"{'source':<32} {'face':>4}  box (x1,y1,x2,y2)  " + "  ".join(f"{t:<22}" for t in config.tasks))
    if video:
        source = arguments.source if arguments.camera is None else arguments.camera
        frames, seconds = run_video(model, cropper, source, out, arguments.detect_every, progress=not arguments.quiet)
    else:
        frames, seconds = run_photos(model, cropper, arguments.source, out, config.test_flip, out_file)
        out = out_file or out
    print(f"{frames} frames in {seconds:.2f} s: {frames / max(seconds, 1e-9):.1f} frames per second "
          f"(detection, cropping and classification) → {cli.printable(str(out))}")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog=PROG))
