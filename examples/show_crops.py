"""Figure 2 of the paper: photos, the faces MTCNN finds in them, and the 48 × 48 crops the network sees.

Row 1 the original photos, row 2 the detected box (green: the face that is
cropped, orange: any other) with the five landmarks, row 3 the grayscale
48 × 48 crops, aligned so the eyes are level.  The paper's figure uses WIKI
photos; these are GENKI-4K photos (cite "http://mplab.ucsd.edu, The MPLab GENKI-4K Dataset.").

    python examples/show_crops.py --out figure2.png [--archive ../shared/data/genki4k.tar]
                                  [--images 1 3 50 1000 2500 3900] [--detector mtcnn]
"""
from __future__ import annotations

import os
import sys
import tarfile
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minimtl import cli  # noqa: E402
from minimtl.download import check_tar_complete  # noqa: E402
from minimtl.faces import FaceCropper  # noqa: E402
from minimtl.faces.crop import ImageReadError, read_image  # noqa: E402
from minimtl.files import atomic_write  # noqa: E402

PROG = "examples/show_crops.py"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = Path(os.environ.get("MINIMTL_SHARED", REPO.parent / "shared")) / "data" / "genki4k.tar"


def read_genki(archive: Path, numbers: list[int]) -> list[tuple[str, np.ndarray]]:
    """``(name, BGR image)`` for GENKI-4K photos ``fileNNNN.jpg``, read as the cropper reads them (upright).

    Raises ``cli.UsageError`` for a number the archive does not hold, ``ValueError`` for a damaged archive or photo.
    """
    images = []
    try:
        with tarfile.open(archive) as tar:
            for number in numbers:
                name = f"file{number:04d}.jpg"
                try:
                    member = tar.extractfile(f"genki4k/files/{name}")
                except KeyError:
                    check_tar_complete(archive)  # an archive cut short is bad data, not a wrong number
                    raise cli.UsageError(f"--images {number}: {archive} has no genki4k/files/{name} "
                                         f"(GENKI-4K numbers its photos 1 to 4000)") from None
                try:
                    image, _, _ = read_image(member.read())
                except ImageReadError as error:
                    raise ValueError(f"{archive}: genki4k/files/{name} cannot be used ({error})") from None
                images.append((name, image))
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise ValueError(f"{archive} is not a readable tar archive ({error}): give genki4k.tar, "
                         f"copied or downloaded again") from None
    return images


def draw_figure(images: list[tuple[str, np.ndarray]], cropper: FaceCropper, out: Path) -> Path:
    """Write the three-row figure for ``images`` to ``out`` (PNG), atomically."""
    columns = len(images)
    figure, axes = plt.subplots(3, columns, figsize=(2.2 * columns, 7.2), squeeze=False)
    for column, (name, image) in enumerate(images):
        details = cropper.crop_details(image)
        rgb = image[:, :, ::-1]
        axes[0, column].imshow(rgb)
        axes[0, column].set_title(name, fontsize=8)
        axes[1, column].imshow(rgb)
        detections = details.detections
        for index, (x1, y1, x2, y2) in enumerate(detections.boxes):
            colour = "lime" if index == details.chosen else "orange"
            axes[1, column].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, linewidth=1.5))
            if detections.landmarks is not None:
                axes[1, column].scatter(*detections.landmarks[index].T, s=6, c="red")
        if details.crop is not None:
            axes[2, column].imshow(details.crop, cmap="gray", vmin=0, vmax=255)
            axes[2, column].set_title(f"score {detections.scores[details.chosen]:.3f}, {details.angle:+.0f}°", fontsize=7)
        else:
            axes[2, column].text(0.5, 0.5, "no face", ha="center", va="center")
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    for row, label in enumerate(("original", f"{cropper.detector.name} box + landmarks", f"{cropper.size}×{cropper.size} crop")):
        axes[row, 0].set_ylabel(label, fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(out) as stream:
            figure.savefig(stream, dpi=120, format="png")
    finally:
        plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = cli.ArgumentParser(prog=PROG, description="Figure 2 of the paper as a PNG.")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="genki4k.tar")
    parser.add_argument("--images", type=cli.integer(at_least=1, at_most=9999), nargs="+",
                        default=[1, 3, 50, 1000, 2500, 3900], help="GENKI-4K file numbers")
    parser.add_argument("--detector", default="mtcnn", choices=("mtcnn", "yunet", "res10"))
    parser.add_argument("--out", type=Path, default=Path("figure2.png"))
    args = parser.parse_args(argv)
    if not args.archive.is_file():
        parser.error(f"{args.archive} not found: pass --archive or set MINIMTL_SHARED")
    if args.out.suffix.lower() != ".png" or args.out.is_dir():
        parser.error(f"--out {args.out}: the figure is a PNG: give a file name ending in .png")
    out = draw_figure(read_genki(args.archive, args.images), FaceCropper(detector=args.detector), args.out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    sys.exit(cli.run(main, prog=PROG))
