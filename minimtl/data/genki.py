"""GENKI-4K: 4000 face photos labelled smiling (2162) or not (1838), the paper's smile data.

The archive ``genki4k.tar`` (MPLab, UCSD) holds ``genki4k/files/file0001.jpg``
… ``file4000.jpg`` (uncropped photos of varied sizes) and
``genki4k/labels.txt``, whose line N describes fileN as ``smile yaw pitch
roll`` (smile 1/0, head pose in radians).  :class:`GENKI4K` reads it straight
from the tar or from an extracted folder.  The paper trains on 3000 images and
tests on 1000 (Section 4.3): :meth:`GENKI4K.paper_split`.

Cite: "http://mplab.ucsd.edu, The MPLab GENKI-4K Dataset."
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from .base import Crop, FaceDataset, FileSource, load_listed, resolve_source

__all__ = ["GENKI4K", "read_genki4k_labels", "unlabelled_images"]


def read_genki4k_labels(source: FileSource) -> tuple[list[str], np.ndarray, np.ndarray]:
    """List GENKI-4K without decoding images.

    Returns ``(image names (N,), smile (N,) int64, pose (N, 3) float64 yaw/pitch/roll)``,
    names relative to the source, e.g. ``"genki4k/files/file0001.jpg"``.
    """
    names = source.names()
    candidates = [name for name in names if PurePosixPath(name).name == "labels.txt"]
    if not candidates:
        raise ValueError(f"{source.path} has no labels.txt; is it GENKI-4K (genki4k.tar or its folder)?")
    labels_name = min(candidates, key=len)
    prefix = PurePosixPath(labels_name).parent
    try:
        text = source.read(labels_name).decode("ascii")
    except UnicodeDecodeError as error:
        raise ValueError(f"{labels_name} is not GENKI-4K's labels file: byte {error.start} is not ASCII text; "
                         f"restore it from genki4k.tar") from None
    # Line N describes fileN: lines are never renumbered, so a blank line inside the file would silently give
    # every later image its neighbour's label; only the blank lines at the end are ignored.
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{labels_name} is empty: restore it from genki4k.tar")
    smile = np.empty(len(lines), dtype=np.int64)
    pose = np.empty((len(lines), 3), dtype=np.float64)
    for number, line in enumerate(lines):
        if not line.strip():
            raise ValueError(f"{labels_name} line {number + 1} is blank: line N labels fileN, so every later "
                             f"image would get the label of the one before it; restore the file from genki4k.tar "
                             f"(or delete the blank line if a line was added, not emptied)")
        fields = line.split()
        try:
            values = [float(value) for value in fields[1:]]
        except ValueError:
            values = []
        if len(fields) != 4 or fields[0] not in ("0", "1") or len(values) != 3:
            raise ValueError(f"{labels_name} line {number + 1} is not 'smile yaw pitch roll': {line!r}")
        smile[number] = int(fields[0])
        pose[number] = values
    images = [(prefix / "files" / f"file{number:04d}.jpg").as_posix() for number in range(1, len(lines) + 1)]
    return images, smile, pose


def unlabelled_images(source: FileSource, images: list[str]) -> list[tuple[str, str]]:
    """``(name, reason)`` for every image under the labels' ``files/`` folder that ``images`` (one per label
    line) does not name: a labels.txt with fewer lines than the folder has photos leaves them without a label."""
    if not images:
        return []
    folder = PurePosixPath(images[0]).parent.as_posix() + "/"
    listed = set(images)
    return [(name, f"no label: labels.txt has {len(images)} lines, none for this image")
            for name in source.names()
            if name.startswith(folder) and name.lower().endswith(".jpg") and name not in listed]


class GENKI4K(FaceDataset):
    """GENKI-4K smile data set: task ``"smile"`` (0 = not smiling, 1 = smiling).

    Args:
        source: ``genki4k.tar``, the folder it was extracted to, or None for the copy
            fetched into the data root (``python -m minimtl.data fetch genki4k``).
        root: Data root (default ``$MINIMTL_DATA`` or ``~/.cache/minimtl/data``); the crop cache lives in
            ``root/cache``.
        crop: ``crop(image_bgr (H, W, 3) uint8) -> (48, 48) uint8 | None``; default
            :func:`~minimtl.data.base.default_crop`, the project's one face framing
            (MTCNN and the landmark template, as the paper crops with MTCNN).
        load_images: False to read only the labels (fast: no decoding).
        cache, progress: Keep/reuse the cropped images in the data root; show a progress bar.
        workers: where a face cropper runs: a number of local processes (default one per CPU), or a
            :class:`minimtl.faces.distributed.DaskCluster` to crop on Dask (``--scheduler`` / ``--cluster``
            of ``examples/train_mtl.py``; :func:`~minimtl.data.base.prepare_images`).

    Attributes beyond :class:`FaceDataset`: ``pose`` (N, 3) float64 yaw, pitch, roll in radians.
    """

    name = "GENKI-4K"
    paper_test_size = 1000
    per_sample_attributes = ("pose",)

    def __init__(self, source: Path | str | None = None, *, root: Path | str | None = None, crop: Crop | None = None,
                 load_images: bool = True, cache: bool = True, progress: bool = True, workers=None):
        files = resolve_source(source, root, "genki4k", self.name, "genki4k")
        names, smile, pose = read_genki4k_labels(files)
        rejected = unlabelled_images(files, names)
        present = set(files.names())
        found = np.array([name in present for name in names], dtype=bool)
        rejected += [(name, "missing from the source: labels.txt has a line for it, but there is no such file")
                     for name in np.array(names)[~found].tolist()]
        load_listed(self, files, [n for n, f in zip(names, found) if f], {"smile": smile[found]}, crop=crop,
                    root=root, cache=cache, load_images=load_images, progress=progress, rejected=rejected, workers=workers,
                    extras={"pose": pose[found]})

    def paper_split(self, seed: int = 0) -> tuple["GENKI4K", "GENKI4K"]:
        """The paper's split: 1000 test images, the rest (3000 of the full set) for training."""
        return self.split(self.paper_test_size, seed)
