"""Command line: ``python -m minimtl.faces crop SRC DST``.

Crops every image of a folder or archive (``.tar``, ``.tar.gz``, ``.zip``) to
the paper's 48 × 48 grayscale face, in parallel, with a progress bar, and writes:

* ``DST/crops.npz``: ``names`` (K,) str, ``crops`` (K, 48, 48) uint8, ``boxes`` (K, 4)
  float32 and ``scores`` (K,) for the K images where a face was found;
* ``DST/report.json``: counts per outcome and, for every image that did not give
  exactly one face, its name and what happened (see ``minimtl.faces.crop.STATUSES``);
* with ``--png``, ``DST/crops/<name>.png`` for each crop.

A short report is printed at the end.  Nothing is dropped silently and one bad
file never stops the run.  Crops are cached by file content and settings, so a
second run over the same images is fast (``--no-cache`` to skip, ``--cache-dir``
to move it).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minimtl.faces", description="Face detection and cropping.")
    commands = parser.add_subparsers(dest="command", required=True)
    crop = commands.add_parser("crop", help="crop every image of a folder or archive to a 48x48 grayscale face",
                               description=__doc__.split("\n\n")[1])
    crop.add_argument("source", type=Path, help="folder, .tar, .tar.gz or .zip of images")
    crop.add_argument("destination", type=Path, help="output folder (created)")
    crop.add_argument("--detector", choices=("mtcnn", "yunet", "res10"), default="mtcnn")
    crop.add_argument("--choose", choices=("largest", "confident"), default="largest",
                      help="which face to crop when several are found")
    crop.add_argument("--no-align", dest="align", action="store_false", help="do not rotate to level the eyes")
    crop.add_argument("--margin", type=float, default=0.1, help="fraction of the box side added on each side")
    crop.add_argument("--size", type=int, default=48, help="side of the crops in pixels")
    crop.add_argument("--weights", type=Path, default=None,
                      help="model file: mtcnn.npz, YuNet's .onnx or res10's .caffemodel (default: the packaged "
                           "MTCNN weights; for yunet/res10 $MINIMTL_WEIGHTS, the user cache, or a download)")
    crop.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    crop.add_argument("--cache-dir", type=Path, default=None, help="crop cache (default ~/.cache/minimtl/faces)")
    crop.add_argument("--no-cache", dest="use_cache", action="store_false")
    crop.add_argument("--png", action="store_true", help="also write each crop as DST/crops/<name>.png")
    crop.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run_crop(args: argparse.Namespace) -> dict:
    from minimtl.faces.crop import crop_images, summarize, write_atomically

    options = {"detector": args.detector, "choose": args.choose, "align": args.align, "margin": args.margin,
               "size": args.size}
    if args.weights is not None:
        options["weights" if args.detector == "mtcnn" else "model"] = str(args.weights)
    results, ignored = crop_images(args.source, options, workers=args.workers, cache_folder=args.cache_dir,
                                   use_cache=args.use_cache, progress=not args.quiet)
    args.destination.mkdir(parents=True, exist_ok=True)
    faces = [r for r in results if r.has_face]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, names=np.array([r.source for r in faces], dtype=str),
                        crops=np.stack([r.crop for r in faces]) if faces else np.zeros((0, args.size, args.size), np.uint8),
                        boxes=np.array([r.box for r in faces], dtype=np.float32).reshape(-1, 4),
                        scores=np.array([r.score for r in faces], dtype=np.float32))
    write_atomically(args.destination / "crops.npz", buffer.getvalue())
    if args.png:
        import cv2

        for result in faces:
            target = args.destination / "crops" / (result.source + ".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            ok, encoded = cv2.imencode(".png", result.crop)
            write_atomically(target, encoded.tobytes())
    report = summarize(results, ignored)
    report["settings"] = options
    write_atomically(args.destination / "report.json", json.dumps(report, indent=2).encode())
    return report


def print_report(report: dict, destination: Path, stream=None) -> None:
    stream = sys.stdout if stream is None else stream
    counts = report["counts"]
    print(f"{report['images']} images: {report['faces_cropped']} faces cropped "
          f"({counts.get('face', 0)} with one face, {counts.get('several_faces', 0)} with several), "
          f"{counts.get('no_face', 0)} with none", file=stream)
    for status, entries in report["problems"].items():
        if status == "several_faces":
            continue
        names = ", ".join(e["source"] for e in entries[:5]) + (" ..." if len(entries) > 5 else "")
        print(f"  {status}: {len(entries)} ({names})", file=stream)
    if report["ignored_not_images"]:
        print(f"  ignored (not named as images): {len(report['ignored_not_images'])} "
              f"({', '.join(report['ignored_not_images'][:5])})", file=stream)
    print(f"wrote {destination / 'crops.npz'} and {destination / 'report.json'}", file=stream)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "crop":
        if args.workers < 1:
            print("error: --workers must be at least 1", file=sys.stderr)
            return 2
        try:
            report = run_crop(args)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print_report(report, args.destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())
