"""Command line: ``python -m minimtl.faces crop SRC DST``.

Crops every image of a folder or archive (``.tar``, ``.tar.gz``, ``.zip``) to
the paper's 48 × 48 grayscale face, in parallel, with a progress bar, and writes:

* ``DST/crops.npz``: ``names`` (K,) str, ``crops`` (K, 48, 48) uint8, ``boxes`` (K, 4)
  float32 and ``scores`` (K,) for the K images where a face was found;
* ``DST/report.json``: counts per outcome and, for every image that did not give
  exactly one face, its name and what happened (see ``minimtl.faces.crop.STATUSES``);
* with ``--png``, ``DST/crops/<name>.png`` for each crop.  A name that would
  leave ``DST/crops`` (an archive member called ``../x.jpg`` or ``/tmp/x.jpg``)
  gets no PNG and is listed in the report under ``png_not_written``.

A short report is printed at the end.  Nothing is dropped silently and one bad
file never stops the run; a bad command line or a source that cannot be read
at all ends it with one line on stderr (exit code 2 or 1, see ``minimtl.cli``).
Crops are cached by file content and settings, so a second run over the same
images is fast (``--no-cache`` to skip, ``--cache-dir`` to move it).

``--scheduler tcp://HOST:8786`` crops on a running Dask cluster instead of the local
process pool, ``--cluster local:N`` on a Dask cluster of N worker processes started
on this machine for the run (``pip install "minimtl[distributed]"``; see
``minimtl.faces.distributed``).  The results are written in shards to ``DST/shards/``
as they are done, so a run that was interrupted resumes where it stopped when it is
run again with the same arguments; ``crops.npz`` and ``report.json`` are the same as
those of a local run.  With ``--scheduler`` the workers must see SRC and DST under the
same paths (a shared file system), and ``--cache-dir`` is each worker's own.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from minimtl import cli
from minimtl.faces.distributed import add_cluster_options, cluster_from_options
from minimtl.files import atomic_write

PROG = "python -m minimtl.faces"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog=PROG, description="Face detection and cropping.")
    commands = parser.add_subparsers(dest="command", required=True)
    crop = commands.add_parser("crop", help="crop every image of a folder or archive to a 48x48 grayscale face",
                               description=__doc__.split("\n\n")[1])
    crop.add_argument("source", type=Path, help="folder, .tar, .tar.gz or .zip of images")
    crop.add_argument("destination", type=Path, help="output folder (created)")
    crop.add_argument("--detector", choices=("mtcnn", "yunet", "res10"), default="mtcnn")
    crop.add_argument("--choose", choices=("largest", "confident"), default="largest",
                      help="which face to crop when several are found")
    crop.add_argument("--no-align", dest="align", action="store_false", help="do not rotate to level the eyes")
    crop.add_argument("--margin", type=cli.number(at_least=0, at_most=2), default=0.1,
                      help="fraction of the box side added on each side")
    crop.add_argument("--size", type=cli.integer(at_least=8), default=48, help="side of the crops in pixels")
    crop.add_argument("--weights", type=Path, default=None,
                      help="model file: mtcnn.npz, YuNet's .onnx or res10's .caffemodel (default: the packaged "
                           "MTCNN weights; for yunet/res10 $MINIMTL_WEIGHTS, the user cache, or a download)")
    crop.add_argument("--workers", type=cli.integer(at_least=1), default=None,
                      help="local worker processes (default: one per CPU)")
    add_cluster_options(crop, "crop")
    crop.add_argument("--cache-dir", type=Path, default=None, help="crop cache (default ~/.cache/minimtl/faces)")
    crop.add_argument("--no-cache", dest="use_cache", action="store_false")
    crop.add_argument("--png", action="store_true", help="also write each crop as DST/crops/<name>.png")
    crop.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def png_path(folder: Path, name: str) -> tuple[Path | None, str | None]:
    """Where the PNG of source ``name`` goes under ``folder``, or ``(None, why not)`` when the name would leave it.

    An archive's member names are the archive author's choice: ``../../x.jpg``, ``/etc/x.jpg`` or a path
    through a symbolic link already in ``folder`` must not write anywhere else.
    """
    from minimtl.download import _unsafe_name_reason

    reason = _unsafe_name_reason(name)
    if reason:
        return None, f"its name would be written outside {folder} ({reason})"
    target = folder / (name + ".png")
    if not target.resolve().is_relative_to(folder.resolve()):
        return None, f"its name leads outside {folder} through a symbolic link"
    return target, None


def prepare_destination(destination: Path) -> None:
    """Create ``destination`` and check it can be written, before any image is cropped."""
    import tempfile

    if destination.exists() and not destination.is_dir():
        raise cli.UsageError(f"the destination {destination} is a file: give a folder (it is created if absent)")
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=destination):
        pass


def check_source(source: Path) -> None:
    """A usage error unless ``source`` is a folder or a file that looks like an archive (by name or content)."""
    import tarfile
    import zipfile

    if not source.exists():
        raise cli.UsageError(f"no folder or archive at {source}: check the path")
    if source.is_dir():
        return
    archive_name = source.name.lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip"))
    if not archive_name and not zipfile.is_zipfile(source) and not tarfile.is_tarfile(source):
        raise cli.UsageError(f"{source} is neither a folder nor a .tar, .tar.gz or .zip archive")


def cluster_arguments(args: argparse.Namespace) -> dict | None:
    """``crop_on_dask``'s ``scheduler=`` or ``local_workers=`` from ``--scheduler`` / ``--cluster``
    (``minimtl.faces.distributed.cluster_from_options``); None for the local pool.  A malformed value, or
    ``--workers`` beside a cluster, is a ``cli.UsageError``."""
    cluster = cluster_from_options(args.scheduler, args.cluster)
    if cluster is None:
        return None
    if args.workers is not None:
        raise cli.UsageError("--workers sizes the local process pool; a Dask cluster has its own workers "
                             "(--cluster local:N)")
    return cluster.arguments()


def run_crop(args: argparse.Namespace) -> dict:
    from minimtl.faces.crop import crop_images, summarize

    check_source(args.source)
    dask_arguments = cluster_arguments(args)
    if args.weights is not None and not args.weights.is_file():
        raise cli.UsageError(f"--weights {args.weights}: no such file")
    created = not args.destination.exists()
    prepare_destination(args.destination)  # a read-only or misnamed destination fails now, not after the cropping
    options = {"detector": args.detector, "choose": args.choose, "align": args.align, "margin": args.margin,
               "size": args.size}
    if args.weights is not None:
        options["weights" if args.detector == "mtcnn" else "model"] = str(args.weights)
    try:
        if dask_arguments is None:
            results, ignored = crop_images(args.source, options, workers=args.workers, cache_folder=args.cache_dir,
                                           use_cache=args.use_cache, progress=not args.quiet)
        else:
            from minimtl.faces.distributed import crop_on_dask

            results, ignored = crop_on_dask(args.source, args.destination / "shards", options, **dask_arguments,
                                            cache_folder=args.cache_dir, use_cache=args.use_cache,
                                            progress=not args.quiet)
    except BaseException:
        if created and not any(args.destination.iterdir()):
            args.destination.rmdir()  # leave no empty folder behind a run that wrote nothing
        raise
    faces = [r for r in results if r.has_face]
    with atomic_write(args.destination / "crops.npz") as stream:
        np.savez_compressed(stream, names=np.array([r.source for r in faces], dtype=str),
                            crops=(np.stack([r.crop for r in faces]) if faces
                                   else np.zeros((0, args.size, args.size), np.uint8)),
                            boxes=np.array([r.box for r in faces], dtype=np.float32).reshape(-1, 4),
                            scores=np.array([r.score for r in faces], dtype=np.float32))
    not_written = []
    if args.png:
        import cv2

        folder = args.destination / "crops"
        for result in faces:
            target, reason = png_path(folder, result.source)
            if target is None:
                not_written.append({"source": result.source, "reason": reason})
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                ok, encoded = cv2.imencode(".png", result.crop)
                with atomic_write(target) as stream:
                    stream.write(encoded.tobytes())
            except OSError as error:  # e.g. a member name too long for this file system: this file's outcome
                not_written.append({"source": result.source, "reason": cli.error_line(error)})
    report = summarize(results, ignored)
    report["settings"] = options
    if args.png:
        report["png_not_written"] = not_written
    with atomic_write(args.destination / "report.json", "w") as stream:
        stream.write(json.dumps(report, indent=2))
    return report


def print_report(report: dict, destination: Path, stream=None) -> None:
    stream = sys.stdout if stream is None else stream

    def say(line: str) -> None:  # a file name that is not valid UTF-8 as \x.. escapes (minimtl.cli.printable)
        print(cli.printable(line), file=stream)

    counts = report["counts"]
    say(f"{report['images']} images: {report['faces_cropped']} faces cropped "
        f"({counts.get('face', 0)} with one face, {counts.get('several_faces', 0)} with several), "
        f"{counts.get('no_face', 0)} with none")
    for status, entries in report["problems"].items():
        if status == "several_faces":
            continue
        names = ", ".join(e["source"] for e in entries[:5]) + (" ..." if len(entries) > 5 else "")
        say(f"  {status}: {len(entries)} ({names})")
    if report["ignored_not_images"]:
        say(f"  ignored (not named as images): {len(report['ignored_not_images'])} "
            f"({', '.join(report['ignored_not_images'][:5])})")
    if report.get("png_not_written"):
        entries = report["png_not_written"]
        say(f"  PNG not written: {len(entries)} ({', '.join(e['source'] for e in entries[:5])}"
            f"{' ...' if len(entries) > 5 else ''}): {entries[0]['reason']}")
    say(f"wrote {destination / 'crops.npz'} and {destination / 'report.json'}")


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "crop":
        report = run_crop(args)
        print_report(report, args.destination)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 bad data, 2 bad usage; see ``minimtl.cli``)."""
    return cli.run(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
