"""What every face data set in minimtl shares: where data lives, reading archives, cropping, caching.

* :func:`data_root` — the folder for downloads, extracted data and caches:
  an explicit argument, else the environment variable ``MINIMTL_DATA``, else
  ``~/.cache/minimtl/data``.
* :class:`FileSource` (from :mod:`minimtl.archives`) — read image files the same way from a
  ``.tar`` / ``.tar.gz`` / ``.zip`` archive (without extracting it) or from a folder.
* :func:`default_crop` — the one face framing every data set and ``examples/predict.py``
  share: MTCNN, then the five landmarks placed on one template (Section 3.1's
  crop, made the same for every source; :class:`minimtl.faces.FaceCropper`).
  Any callable ``crop(image_bgr (H, W, 3) uint8) -> (48, 48) uint8 | None`` can
  be passed in its place (``None`` means "no face"), e.g. :class:`CentreCrop`,
  the detector-free grayscale central square, for quick looks and tests.
* :func:`prepare_images` — decode and crop every listed image once (a face
  cropper in one process per CPU, or on a Dask cluster given as ``workers=``), and keep the 48×48 results of the whole
  data set in one ``.npz`` under ``<data root>/cache`` keyed by the archive's
  identity and the crop's settings (:class:`minimtl.crop_cache.DatasetCache`),
  so the second run only reads that file.
  Images that cannot be decoded are returned with their reason, never dropped
  silently; images in which the detector finds no face are cropped at the
  data set's median face position and listed by name (``fallbacks``).
* :class:`FaceDataset` — the common container: names, per-task labels,
  48×48 uint8 images, the rejected images, and ``split``/``subset`` helpers.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np
from tqdm.auto import tqdm

from minimtl.archives import FileSource
from minimtl.crop_cache import DatasetCache

from .age_groups import AGE_GROUP_NAMES

if TYPE_CHECKING:
    from minimtl.faces.distributed import DaskCluster

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SIZE",
    "TASKS",
    "CentreCrop",
    "FaceDataset",
    "FileSource",
    "crop_cache_key",
    "data_root",
    "prepare_images",
]

log = logging.getLogger("minimtl.data")

#: Side of the square grayscale face images the network takes (Section 3.1).
IMAGE_SIZE = 48
#: The paper's three tasks, in the order the loader reports them: the one list of task names in minimtl.
TASKS = ("smile", "gender", "age")
#: Class names of each task's labels, indexed by label; ``len(CLASS_NAMES[task])`` is its number of classes.
#: Gender follows UTKFace: 0 = male, 1 = female.  The age groups are defined in :mod:`minimtl.data.age_groups`.
CLASS_NAMES = {
    "smile": ("not smiling", "smiling"),
    "gender": ("male", "female"),
    "age": AGE_GROUP_NAMES,
}

Crop = Callable[[np.ndarray], "np.ndarray | None"]


def data_root(root: Path | str | None = None) -> Path:
    """Folder for downloads, extracted data sets and crop caches.

    ``root`` if given, else ``$MINIMTL_DATA``, else ``~/.cache/minimtl/data``.
    The folder is not created here.
    """
    if root is None:
        root = os.environ.get("MINIMTL_DATA") or Path.home() / ".cache" / "minimtl" / "data"
    return Path(root).expanduser()


# --------------------------------------------------------------------------- preprocessing
class CentreCrop:
    """Grayscale, crop the central square, resize to ``size``×``size``: a crop without a face detector.

    ``fraction`` is the side of the square as a fraction of the image's shorter
    side (1.0 = the largest central square).  Images whose shorter side is
    under ``min_side`` pixels (IMDB-WIKI has 1×1 placeholders) give ``None``.

    Call: ``image_bgr`` (H, W, 3) uint8 -> (size, size) uint8, or None.
    """

    def __init__(self, size: int = IMAGE_SIZE, fraction: float = 1.0, min_side: int = 16):
        if not (isinstance(size, int) and size > 0):
            raise ValueError(f"size must be a positive int, got {size!r}")
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        self.size, self.fraction, self.min_side = size, float(fraction), int(min_side)

    @property
    def cache_key(self) -> str:
        return f"centre-crop-{self.size}-{self.fraction:g}-min{self.min_side}"

    def __repr__(self) -> str:
        return f"CentreCrop(size={self.size}, fraction={self.fraction:g}, min_side={self.min_side})"

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray | None:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"expected a (H, W, 3) uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}")
        height, width = image_bgr.shape[:2]
        if min(height, width) < self.min_side:
            return None
        side = max(1, int(round(min(height, width) * self.fraction)))
        top, left = (height - side) // 2, (width - side) // 2
        gray = cv2.cvtColor(image_bgr[top:top + side, left:left + side], cv2.COLOR_BGR2GRAY)
        interpolation = cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR
        return cv2.resize(gray, (self.size, self.size), interpolation=interpolation)


def default_crop() -> Crop:
    """The project's one face framing, for every data set and for prediction: ``minimtl.faces.FaceCropper()``.

    MTCNN finds the face; its five landmarks are placed on ``minimtl.faces.crop.FACE_TEMPLATE``
    (eyes level, at the same place in every crop) with a margin of 0.1; grayscale, 48×48.
    """
    from minimtl.faces import FaceCropper

    return FaceCropper()


def crop_cache_key(crop: Crop) -> str:
    """The name under which a crop's results are cached.

    A crop object should carry a ``cache_key`` attribute naming its method and
    settings (``CentreCrop`` does), or a ``settings`` string
    (``minimtl.faces.FaceCropper`` does).  Otherwise its qualified name and ``repr``
    are used, which distinguishes functions but not two closures with
    different settings: give those a ``cache_key``.
    """
    key = getattr(crop, "cache_key", None)
    if key is None and isinstance(getattr(crop, "settings", None), str):
        key = crop.settings  # minimtl.faces.FaceCropper names every option that changes its output here
    if key is None:
        name = getattr(crop, "__qualname__", type(crop).__qualname__)
        key = f"{getattr(crop, '__module__', '')}.{name}"
        if not hasattr(crop, "__qualname__"):
            key += ":" + repr(crop)
    return str(key)


def decode_image(data: bytes) -> np.ndarray | None:
    """JPEG/PNG bytes -> (H, W, 3) uint8 BGR image, or None if they cannot be decoded."""
    if not data:
        return None
    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)


#: Fewest detected faces from which a data set's median face position is trusted as the fallback.
FALLBACK_MIN_FACES = 10
FALLBACK_REASON = "no face found by the detector: cropped at the data set's median face position"


@dataclass
class Prepared:
    """The 48×48 faces of a data set's listed members (see :func:`prepare_images`).

    Attributes:
        images: (K, 48, 48) uint8, one per kept member, in the order of the members.
        kept: (N,) bool, which of the N members have an image.
        rejected: ``(member name, reason)`` for the members without one.
        fallbacks: ``(member name, reason)`` for kept members the detector missed, cropped by the fallback.
    """

    images: np.ndarray
    kept: np.ndarray
    rejected: list[tuple[str, str]]
    fallbacks: list[tuple[str, str]]


def prepare_images(
    source: FileSource,
    members: list[str],
    crop: Crop,
    *,
    dataset_name: str,
    cache_dir: Path | None,
    progress: bool = True,
    workers: "int | DaskCluster | None" = None,
) -> Prepared:
    """Decode and crop ``members`` of ``source``, or load the result from the cache.

    A face cropper (:class:`minimtl.faces.FaceCropper`, anything with
    ``crop_source``) runs in ``workers`` processes (default: one per CPU), or,
    when ``workers`` is a :class:`minimtl.faces.distributed.DaskCluster`, on
    that Dask cluster (:func:`crop_on_cluster`: the same crops), and
    the images in which it finds no face are cropped by the fallback: the
    landmarks at the median position (as fractions of the image's width and
    height) of the faces it found in the same data set, through the same
    alignment.  Data sets of face crops (WIKI, UTKFace) hold one centred face
    per image, so the median position is where a missed face is.  Each such
    image is listed in ``fallbacks``; with fewer than ``FALLBACK_MIN_FACES``
    faces found there is no median, and the misses are rejected.  Any other
    ``crop`` callable runs here, one image after another.

    Raises:
        ValueError: duplicate member names; a ``DaskCluster`` with a ``crop`` that is no face cropper.
        minimtl.faces.distributed.DistributedNotInstalled: a ``DaskCluster`` without Dask's ``distributed``.
    """
    key_text = DatasetCache.key(dataset_name, source.identity(), members, crop_cache_key(crop))
    cache = cache_file = None
    if cache_dir is not None:
        cache = DatasetCache(cache_dir)
        cache_file = cache.path(dataset_name, crop_cache_key(crop), key_text)
        stored = cache.get(cache_file, key_text)
        if stored is not None:
            return Prepared(**stored)

    index = {name: position for position, name in enumerate(members)}
    if len(index) != len(members):
        raise ValueError(f"{dataset_name}: duplicate member names in the listing")
    images = np.zeros((len(members), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    kept = np.zeros(len(members), dtype=bool)
    reasons: dict[str, str] = {}
    fallbacks: list[tuple[str, str]] = []

    def keep(name: str, face) -> None:
        face = np.asarray(face)
        if face.shape != (IMAGE_SIZE, IMAGE_SIZE) or face.dtype != np.uint8:
            raise ValueError(f"crop {crop_cache_key(crop)} returned {face.shape} {face.dtype}, "
                             f"expected ({IMAGE_SIZE}, {IMAGE_SIZE}) uint8 or None")
        images[index[name]] = face
        kept[index[name]] = True

    on_dask = workers is not None and not isinstance(workers, (int, np.integer))
    if on_dask:
        from minimtl.faces.distributed import DaskCluster

        if not isinstance(workers, DaskCluster):
            raise TypeError(f"workers must be a number of processes or a DaskCluster, got {type(workers).__name__}")
    if on_dask and not hasattr(crop, "crop_source"):
        raise ValueError(f"{dataset_name}: cropping on a Dask cluster needs a face cropper (minimtl.faces.FaceCropper), "
                         f"not {crop_cache_key(crop)}")
    if hasattr(crop, "crop_source"):
        from minimtl.faces.crop import crop_many

        if on_dask:  # its shards beside the cache entry, so that an interrupted crop resumes; else a temporary folder
            shards = None if cache_file is None else cache_file.with_name(cache_file.stem + "-shards")
            results = crop_on_cluster(crop, source, members, workers, shard_folder=shards, progress=progress)
        else:
            workers = (os.cpu_count() or 1) if workers is None else workers
            items = ((name, data, None) for name, data in source.iterate(members))
            results = crop_many(crop, items, workers=workers, progress=progress, total=len(members),
                                description=f"cropping {dataset_name}")
        found, missed = [], []
        for result in results:
            if result.has_face:
                keep(result.source, result.crop)
                if result.landmarks is not None and result.image_size:
                    found.append(result.landmarks / np.asarray(result.image_size, np.float32))
            elif result.status in ("no_face", "error") and result.image_size:
                missed.append(result.source)
            else:
                reasons[result.source] = f"{result.status}: {'; '.join(result.notes)}" if result.notes else result.status
        if missed and len(found) >= FALLBACK_MIN_FACES:
            median = np.median(np.stack(found), axis=0)  # (5, 2) fractions of width and height
            for name, data in source.iterate(missed):
                face = fallback_crop(crop, data, median)
                if face is None:
                    reasons[name] = "no face found (and the fallback crop failed)"
                else:
                    keep(name, face)
                    fallbacks.append((name, FALLBACK_REASON))
        else:
            reasons.update({name: "no face found" for name in missed})
    else:
        for name, data in tqdm(source.iterate(members), total=len(members), desc=f"cropping {dataset_name}",
                               unit=" images", disable=not progress):
            image = decode_image(data)
            if image is None:
                reasons[name] = "could not be decoded"
                continue
            face = crop(image)
            if face is None:
                reasons[name] = "no face found"
                continue
            keep(name, face)
    for name in members:
        if name not in reasons and not kept[index[name]]:
            reasons[name] = "missing from the source"
    images = images[kept]
    rejected = [(name, reasons[name]) for name in members if name in reasons]
    fallbacks.sort(key=lambda item: index[item[0]])

    if cache is not None:
        cache.put(cache_file, key_text, images, kept, rejected, fallbacks)
    return Prepared(images, kept, rejected, fallbacks)


def crop_on_cluster(cropper, source: FileSource, members: list[str], cluster, *, shard_folder: Path | None,
                    progress: bool = True) -> list:
    """``CropResult`` of ``members`` of ``source`` cropped by ``cropper`` on the Dask ``cluster``: what the
    local pool gives ``prepare_images`` (``minimtl.faces.distributed.crop_on_dask`` with ``names=``).

    The workers read the files themselves: ``source`` must be at the same path on every worker, and so must
    ``shard_folder``, where the shards are written (and found again by a re-run, which resumes); they are
    deleted once every member is back.  None: a temporary folder of this machine (enough for a
    ``LocalCluster``).  A file a worker cannot read comes back ``"unreadable"``; the local pool reads
    with ``FileSource.iterate``, which leaves out a file that a folder or zip cannot give, or a tar does
    not hold (it is then "missing from the source"), and stops at a tar member that cannot be read
    (``ArchiveError``): so does this.

    Returns:
        list of ``minimtl.faces.crop.CropResult``, in the order of ``members`` (the files read).
    """
    import shutil
    import tempfile

    from minimtl.download import ArchiveError
    from minimtl.faces.distributed import crop_on_dask

    temporary = tempfile.TemporaryDirectory(prefix="minimtl-shards-") if shard_folder is None else None
    folder = Path(temporary.name) if temporary is not None else Path(shard_folder)
    try:
        results, _ = crop_on_dask(source.path, folder, names=members, cropper=cropper, use_cache=False,
                                  progress=progress, **cluster.arguments())
    finally:
        if temporary is not None:
            temporary.cleanup()
    if temporary is None:
        shutil.rmtree(folder, ignore_errors=True)  # every result is in memory, soon in the data set's cache
    read = []
    held = set(source.names()) if source.kind == "tar" else set()
    for result in results:
        if result.status == "unreadable":  # only a read gives this status (crop_source of bytes never does)
            if result.source in held:  # the tar holds it but it could not be read: the archive is damaged
                raise ArchiveError(source.damaged(OSError("; ".join(result.notes) or "unreadable member")))
            continue
        read.append(result)
    return read


def fallback_crop(cropper, data: bytes, landmarks: np.ndarray) -> np.ndarray | None:
    """Crop the image file ``data`` as if ``cropper``'s detector had found ``landmarks`` (5, 2) there,
    given as fractions of the image's width and height; None if the file cannot be read."""
    from minimtl.faces.crop import FACE_TEMPLATE, ImageReadError, read_image, similarity_transform

    try:
        image, _, _ = read_image(data, cropper.max_side)
    except ImageReadError:
        return None
    points = landmarks * np.array([image.shape[1], image.shape[0]], np.float64)
    to_square = np.vstack([similarity_transform(points, FACE_TEMPLATE), [0, 0, 1]])
    return cropper.crop_with_square(image, to_square)[0]


# --------------------------------------------------------------------------- the common container
class FaceDataset:
    """Face images with labels for some of the tasks ``"smile"``, ``"gender"``, ``"age"``.

    Attributes:
        name: str — shown in logs and class-count tables.
        tasks: tuple of task names this data set labels.
        names: (N,) str array — image names inside the source (unique).
        labels: dict task -> (N,) int64 class labels.
        images: (N, 48, 48) uint8 array, or None when built with ``load_images=False``.
        rejected: list of ``(name, reason)`` — listed images left out (unreadable, no face, unparsable name).
        synthetic: True only for generated data (see :mod:`minimtl.data.synthetic`).

    ``dataset[i]`` is ``(image (48, 48) uint8, {task: int label})``.
    """

    name = "faces"
    synthetic = False
    #: Names of extra (N, ...) arrays a subclass keeps per sample (``subset`` slices them too).
    per_sample_attributes: tuple[str, ...] = ()

    def __init__(self, names, labels: dict[str, np.ndarray], images: np.ndarray | None,
                 rejected: list[tuple[str, str]] | None = None, *, name: str | None = None):
        self.names = np.asarray(names, dtype=str)
        count = len(self.names)
        self.labels = {task: np.asarray(values, dtype=np.int64) for task, values in labels.items()}
        for task, values in self.labels.items():
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; tasks are {TASKS}")
            if values.shape != (count,):
                raise ValueError(f"labels[{task!r}] has shape {values.shape}, expected ({count},)")
        self.tasks = tuple(task for task in TASKS if task in self.labels)
        if images is not None:
            images = np.asarray(images)
            if images.shape != (count, IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
                raise ValueError(f"images must be ({count}, {IMAGE_SIZE}, {IMAGE_SIZE}) uint8, "
                                 f"got {images.shape} {images.dtype}")
        self.images = images
        self.rejected = list(rejected or [])
        if name is not None:
            self.name = name

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, int]]:
        if self.images is None:
            raise RuntimeError(f"{self.name} was built with load_images=False; it has labels but no images")
        return self.images[index], {task: int(values[index]) for task, values in self.labels.items()}

    def __repr__(self) -> str:
        images = "with images" if self.images is not None else "labels only"
        return f"<{type(self).__name__} {self.name!r}: {len(self)} samples, tasks {self.tasks}, {images}>"

    def class_counts(self) -> dict[str, np.ndarray]:
        """``{task: (number of classes,) int64}`` sample count of every class."""
        return {task: np.bincount(values, minlength=len(CLASS_NAMES[task]))
                for task, values in self.labels.items()}

    def subset(self, indices) -> "FaceDataset":
        """A new data set of the samples at ``indices`` (same class and name; images shared if present)."""
        indices = np.asarray(indices, dtype=np.int64)
        part = object.__new__(type(self))
        part.__dict__.update(self.__dict__)
        part.names = self.names[indices]
        part.labels = {task: values[indices] for task, values in self.labels.items()}
        part.images = None if self.images is None else self.images[indices]
        for attribute in self.per_sample_attributes:  # raw per-sample extras, e.g. ages in years
            if getattr(self, attribute, None) is not None:
                setattr(part, attribute, getattr(self, attribute)[indices])
        return part

    def split(self, test_size: int | float, seed: int = 0) -> tuple["FaceDataset", "FaceDataset"]:
        """Random ``(train, test)`` split; ``test_size`` is a count or a fraction in (0, 1).

        Identical images (same cropped pixels) always fall on the same side, so
        no image is in both train and test even if a data set holds it twice.
        """
        train, test = split_indices(self, test_size, seed)
        return self.subset(train), self.subset(test)

    def default_split(self, seed: int = 0) -> tuple["FaceDataset", "FaceDataset"]:
        """The split this data set is evaluated with: ``paper_test_size`` test images where the paper gives one
        (GENKI-4K: 1000), else a random ``default_test_size`` (0.2); IMDB-WIKI holds out whole people."""
        size = getattr(self, "paper_test_size", None) or getattr(self, "default_test_size", 0.2)
        if isinstance(size, int) and size >= len(self):
            size = 0.2
        return self.split(size, seed)


def _group_keys(dataset: FaceDataset) -> np.ndarray:
    """One key per sample; samples with equal keys are the same image."""
    if dataset.images is None:
        return dataset.names
    flat = np.ascontiguousarray(dataset.images).reshape(len(dataset), -1)
    return np.array([hashlib.sha1(row.tobytes()).hexdigest() for row in flat])


def split_indices(dataset: FaceDataset, test_size: int | float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train indices, test indices)``; duplicates of one image stay on one side.

    ``test_size``: number of test samples (int) or fraction (float in (0, 1)).
    The test side gets whole groups of duplicates until it reaches the size, so
    it can exceed an int ``test_size`` by the size of the last group.

    Which images are held out depends on their names and ``seed`` only: each group of duplicates is ranked
    by a hash of ``seed`` and the first of its names in sorted order, and the lowest-ranked groups are
    tested on.  So the same photos are held out whatever face framing cropped them (the pixels only decide
    which images are duplicates), and adding or losing one image moves at most that image, not the split.
    """
    count = len(dataset)
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.integer, np.floating)):
        raise TypeError(f"test_size must be an int count or a float fraction, got {type(test_size).__name__}")
    if isinstance(test_size, (float, np.floating)):
        if not 0 < test_size < 1:
            raise ValueError(f"a fractional test_size must be in (0, 1), got {test_size}")
        wanted = int(round(test_size * count))
    else:
        wanted = int(test_size)
    if not 0 < wanted < count:
        raise ValueError(f"test_size gives {wanted} test samples out of {count}; need between 1 and {count - 1}")
    group_of = np.unique(_group_keys(dataset), return_inverse=True)[1].ravel()
    by_name = np.argsort(dataset.names, kind="stable")
    first_name = {}  # group → the first of its names in sorted order
    for index in by_name[::-1]:
        first_name[group_of[index]] = dataset.names[index]
    groups = group_of.max() + 1
    rank = [hashlib.sha1(f"{seed}/{first_name[group]}".encode()).hexdigest() for group in range(groups)]
    order = np.argsort(rank, kind="stable")
    sizes = np.bincount(group_of, minlength=groups)
    test_groups = order[: int(np.searchsorted(np.cumsum(sizes[order]), wanted, side="left")) + 1]
    is_test = np.isin(group_of, test_groups)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def describe_rejected(dataset_name: str, rejected: list[tuple[str, str]], shown: int = 5) -> str:
    """One line: how many images were left out, why, and the first few names."""
    if not rejected:
        return f"{dataset_name}: no images left out"
    reasons: dict[str, int] = {}
    for _, reason in rejected:
        reasons[reason] = reasons.get(reason, 0) + 1
    why = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
    names = ", ".join(name for name, _ in rejected[:shown])
    more = f" and {len(rejected) - shown} more" if len(rejected) > shown else ""
    return f"{dataset_name}: left out {len(rejected)} images ({why}): {names}{more}"


def resolve_source(source: Path | str | FileSource | None, root: Path | str | None, folder: str,
                   dataset_name: str, fetch_name: str) -> FileSource:
    """The :class:`FileSource` for ``source``, or the fetched copy ``<data root>/<folder>`` when None."""
    if isinstance(source, FileSource):
        return source
    if source is None:
        fetched = data_root(root) / folder
        if not fetched.is_dir():
            raise FileNotFoundError(
                f"{dataset_name} not found at {fetched}. Run `python -m minimtl.data fetch {fetch_name}` "
                f"(or pass source= the archive or extracted folder, or set MINIMTL_DATA)"
            )
        return FileSource(fetched)
    return FileSource(source)


def load_listed(dataset: FaceDataset, source: FileSource, members: list[str], labels: dict[str, np.ndarray],
                *, crop: Crop | None, root, cache: bool, load_images: bool, progress: bool,
                rejected: list[tuple[str, str]], extras: dict[str, np.ndarray] | None = None,
                workers=None) -> None:
    """Fill ``dataset`` from a listing: members (N names), labels {task: (N,)}, per-sample extras.

    With ``load_images`` the images are prepared (or read from the crop cache;
    ``workers`` as :func:`prepare_images` takes it) and members without an image
    are moved to ``rejected``, which is logged as one warning line.
    """
    extras = dict(extras or {})
    images, fallbacks = None, []
    if load_images:
        crop = crop if crop is not None else default_crop()
        cache_dir = data_root(root) / "cache" if cache else None
        prepared = prepare_images(source, members, crop, dataset_name=dataset.name, cache_dir=cache_dir,
                                  progress=progress, workers=workers)
        images, kept, fallbacks = prepared.images, prepared.kept, prepared.fallbacks
        rejected = rejected + prepared.rejected
        members = [name for name, keep in zip(members, kept) if keep]
        labels = {task: values[kept] for task, values in labels.items()}
        extras = {key: values[kept] for key, values in extras.items()}
    if rejected:
        log.warning(describe_rejected(dataset.name, rejected))
    if fallbacks:
        log.warning(f"{dataset.name}: {len(fallbacks)} images had no face found and were cropped at the data set's "
                    f"median face position: " + ", ".join(name for name, _ in fallbacks[:5])
                    + (f" and {len(fallbacks) - 5} more" if len(fallbacks) > 5 else ""))
    FaceDataset.__init__(dataset, members, labels, images, rejected)
    dataset.fallbacks = fallbacks
    for key, values in extras.items():
        setattr(dataset, key, values)
    dataset.source = source
