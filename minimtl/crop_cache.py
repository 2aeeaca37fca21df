"""The two crop caches, in one place: a whole data set's faces, and one photo's crop.

Cropping is the slow part of reading a data set (MTCNN on every photo), so its
results are kept on disk, in two granularities:

* :class:`DatasetCache` — what ``minimtl.data`` uses: one ``.npz`` with every
  48×48 face of a data set, keyed by the archive's identity, the listed members
  and the crop's settings; a second run reads one file (about 0.1 s for WIKI).
* :class:`CropCache` — what ``python -m minimtl.faces crop`` uses: one ``.npz``
  per photo, keyed by the SHA-256 of its bytes and the cropper's settings, so
  any folder or archive holding the same photo reuses its crop.

Both write through :func:`minimtl.files.atomic_write` (an interrupted run leaves
no half-written entry) and count an unreadable entry as a miss.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minimtl.files import atomic_write

if TYPE_CHECKING:
    from minimtl.faces.crop import CropResult, FaceCropper

__all__ = ["CropCache", "DatasetCache"]

log = logging.getLogger("minimtl.data")

#: What reading a damaged or half-written ``.npz`` raises.
_UNREADABLE = (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:60] or "crop"


class DatasetCache:
    """A data set's cropped faces on disk, one ``.npz`` per (data set, source, members, crop).

    The file is ``folder/<data set>-<crop key>-<digest>.npz``; it stores the full key
    text beside the arrays, and an entry whose key differs is a miss.

    Args:
        folder: the cache folder (``<data root>/cache``); created on the first write.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @staticmethod
    def key(dataset_name: str, source_identity: str, members: list[str], crop_key: str) -> str:
        """The text that names one cropping of one data set (stored in the entry and hashed into its name)."""
        return json.dumps({"dataset": dataset_name, "source": source_identity,
                           "members": hashlib.sha1("\n".join(members).encode()).hexdigest(),
                           "crop": crop_key}, sort_keys=True)

    def path(self, dataset_name: str, crop_key: str, key_text: str) -> Path:
        digest = hashlib.sha1(key_text.encode()).hexdigest()[:16]
        return self.folder / f"{_slug(dataset_name)}-{_slug(crop_key)}-{digest}.npz"

    def get(self, path: Path, key_text: str) -> dict | None:
        """``{"images", "kept", "rejected", "fallbacks"}`` stored at ``path`` under ``key_text``, or None.

        ``images`` (K, 48, 48) uint8, ``kept`` (N,) bool, the others lists of ``(name, reason)``.
        An unreadable entry is logged and is a miss (it is rebuilt).
        """
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                if str(stored["key"]) != key_text:
                    return None
                return {"images": stored["images"], "kept": stored["kept"],
                        "rejected": list(zip(stored["rejected_names"].tolist(), stored["rejected_reasons"].tolist())),
                        "fallbacks": list(zip(stored["fallback_names"].tolist(), stored["fallback_reasons"].tolist()))}
        except _UNREADABLE as error:  # damaged cache: rebuild it
            log.warning("ignoring unreadable crop cache %s (%s)", path, error)
            return None

    def put(self, path: Path, key_text: str, images: np.ndarray, kept: np.ndarray,
            rejected: list[tuple[str, str]], fallbacks: list[tuple[str, str]]) -> None:
        """Store one data set's faces at ``path`` (see :meth:`get`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as stream:
            np.savez(stream, key=np.array(key_text), images=images, kept=kept,
                     rejected_names=np.array([n for n, _ in rejected], dtype=str),
                     rejected_reasons=np.array([r for _, r in rejected], dtype=str),
                     fallback_names=np.array([n for n, _ in fallbacks], dtype=str),
                     fallback_reasons=np.array([r for _, r in fallbacks], dtype=str))


class CropCache:
    """Crops on disk, one ``.npz`` per (file content, cropper settings).

    Layout: ``folder/<cropper.name>/<sha256[:2]>/<sha256>.npz`` plus
    ``folder/<cropper.name>/SETTINGS.txt`` holding the full settings string.
    Entries are written to a temporary file and renamed, so an interrupted run
    leaves no half-written entry.  Read failures count as misses.
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        if folder is None:
            from minimtl.faces.crop import default_cache_dir

            folder = default_cache_dir()
        self.folder = Path(folder)

    @staticmethod
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def path(self, cropper: FaceCropper, digest: str) -> Path:
        return self.folder / cropper.name / digest[:2] / f"{digest}.npz"

    def get(self, cropper: FaceCropper, digest: str, source: str) -> CropResult | None:
        """The cached result for content ``digest`` under ``cropper``'s settings, or None."""
        from minimtl.faces.crop import CropResult

        path = self.path(cropper, digest)
        try:
            with np.load(path, allow_pickle=False) as entry:
                status = str(entry["status"])
                crop = entry["crop"] if entry["crop"].size else None
                box = entry["box"] if entry["box"].size else None
                score = float(entry["score"]) if np.isfinite(entry["score"]) else None
                landmarks = entry["landmarks"] if entry["landmarks"].size else None
                image_size = tuple(int(v) for v in entry["image_size"]) if entry["image_size"].size else None
                return CropResult(source, status, crop, int(entry["faces"]), box, score,
                                  tuple(str(n) for n in entry["notes"]), landmarks, image_size)
        except _UNREADABLE:
            return None

    def put(self, cropper: FaceCropper, digest: str, result: CropResult) -> None:
        """Store ``result`` (not for status ``"error"``, which may be transient)."""
        if result.status == "error":
            return
        path = self.path(cropper, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        settings_file = path.parent.parent / "SETTINGS.txt"
        if not settings_file.exists():
            with atomic_write(settings_file, "w") as stream:
                stream.write(cropper.settings + "\n")
        with atomic_write(path) as stream:
            np.savez(stream, status=np.array(result.status),
                     crop=result.crop if result.crop is not None else np.zeros((0, 0), np.uint8),
                     faces=np.array(result.faces),
                     box=result.box if result.box is not None else np.zeros(0, np.float32),
                     score=np.array(result.score if result.score is not None else np.nan),
                     notes=np.array(result.notes, dtype=str),
                     landmarks=result.landmarks if result.landmarks is not None else np.zeros((0, 2), np.float32),
                     image_size=np.array(result.image_size if result.image_size is not None else (), dtype=np.int64))
