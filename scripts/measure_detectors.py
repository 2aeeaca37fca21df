"""How often MTCNN and YuNet find a face in GENKI-4K, and how well their boxes agree.

Usage::

    python scripts/measure_detectors.py [--archive ../shared/data/genki4k.tar] [--workers 2] [--out report.json]

For each of the 4000 photos both detectors run on the same decoded image.
Printed (and written as JSON): the share of images in which each detector
finds at least one face, how many images give several faces, and, over the
images where both find exactly one face, the share whose boxes overlap with
IoU >= 0.5 (and the same over images where both find at least one, comparing
the best-scoring boxes).  The issue's acceptance floors are 97% (MTCNN) and
95% (IoU agreement).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from minimtl.archives import FileSource  # noqa: E402
from minimtl.files import atomic_write  # noqa: E402

_detectors = None


def _start(weights_folder: str | None) -> None:
    global _detectors
    import cv2

    from minimtl.faces import get_detector

    cv2.setNumThreads(1)
    options = {"allow_download": False}
    if weights_folder:
        options["model"] = str(Path(weights_folder) / "face_detection_yunet_2023mar.onnx")
    _detectors = {"mtcnn": get_detector("mtcnn"), "yunet": get_detector("yunet", **options)}


def _measure(item: tuple[str, bytes]) -> dict:
    import cv2

    name, data = item
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    row = {"name": name}
    if image is None:
        row["error"] = "undecodable"
        return row
    for key, detector in _detectors.items():
        start = time.perf_counter()
        detections = detector.detect(image)
        row[key] = {"boxes": detections.boxes.tolist(), "scores": detections.scores.tolist(),
                    "seconds": time.perf_counter() - start}
    return row


def iou(a, b) -> float:
    from minimtl.faces.boxes import overlap

    return float(overlap(np.asarray(a), np.asarray(b))[0, 0])


def main(argv=None) -> None:
    shared = Path(os.environ.get("MINIMTL_SHARED", REPO.parent / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=shared / "data" / "genki4k.tar")
    parser.add_argument("--weights", type=Path, default=shared / "weights", help="folder with the YuNet .onnx")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (for a quick look)")
    parser.add_argument("--out", type=Path, default=None, help="write the per-image rows and the summary as JSON")
    args = parser.parse_args(argv)

    archive = FileSource(args.archive)
    items = sorted(archive.iterate([name for name in archive.names() if name.lower().endswith(".jpg")]))
    if args.limit:
        items = items[:args.limit]
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[key] = "1"  # one thread per worker: the parallelism is across images
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers, initializer=_start, initargs=(str(args.weights),)) as pool:
        rows = list(tqdm(pool.imap(_measure, items, chunksize=8), total=len(items), unit="image", desc="detecting"))
    elapsed = time.perf_counter() - started

    summary = {"images": len(rows), "workers": args.workers, "wall_seconds": round(elapsed, 1)}
    valid = [r for r in rows if "error" not in r]
    for key in ("mtcnn", "yunet"):
        counts = np.array([len(r[key]["boxes"]) for r in valid])
        summary[key] = {
            "found": int((counts >= 1).sum()), "share_found": float((counts >= 1).mean()),
            "several": int((counts >= 2).sum()), "none": int((counts == 0).sum()),
            "mean_seconds_per_image": float(np.mean([r[key]["seconds"] for r in valid])),
        }
    one_each = [r for r in valid if len(r["mtcnn"]["boxes"]) == 1 and len(r["yunet"]["boxes"]) == 1]
    ious = np.array([iou(r["mtcnn"]["boxes"][0], r["yunet"]["boxes"][0]) for r in one_each])
    both = [r for r in valid if r["mtcnn"]["boxes"] and r["yunet"]["boxes"]]
    best_ious = np.array([iou(r["mtcnn"]["boxes"][0], r["yunet"]["boxes"][0]) for r in both])
    summary["agreement"] = {
        "images_with_one_face_each": len(one_each),
        "share_iou_at_least_0.5": float((ious >= 0.5).mean()) if len(ious) else None,
        "median_iou": float(np.median(ious)) if len(ious) else None,
        "images_with_faces_in_both": len(both),
        "share_best_boxes_iou_at_least_0.5": float((best_ious >= 0.5).mean()) if len(best_ious) else None,
    }
    summary["mtcnn_missed"] = [r["name"] for r in valid if not r["mtcnn"]["boxes"]]
    summary["undecodable"] = [r["name"] for r in rows if "error" in r]
    print(json.dumps({k: v for k, v in summary.items() if k != "mtcnn_missed"}, indent=2))
    print(f"MTCNN missed {len(summary['mtcnn_missed'])}: {summary['mtcnn_missed'][:20]}")
    if args.out:
        with atomic_write(args.out, "w") as stream:
            stream.write(json.dumps({"summary": summary, "rows": rows}))


if __name__ == "__main__":
    main()
