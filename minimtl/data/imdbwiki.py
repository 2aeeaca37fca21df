"""IMDB-WIKI: celebrity photos with age and gender, the paper's age/gender data (Rothe et al., 2016).

The upstream archives (data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki)
``wiki_crop.tar`` and ``imdb_crop.tar`` hold face crops in numbered folders and
one MATLAB file, ``wiki.mat`` or ``imdb.mat``, with a struct of parallel arrays:

=====================  ====================================================
``dob``                date of birth, MATLAB serial date number (days from year 0)
``photo_taken``        year the photo was taken
``full_path``          image path relative to the folder of the ``.mat`` file
``gender``             1 male, 0 female, NaN unknown
``name``               the person's name
``face_location``      face box in the uncropped photo
``face_score``         detector score; ``-inf`` where no face was found
``second_face_score``  score of a second face; NaN where there is none
=====================  ====================================================

The age at the photo is ``photo_taken`` minus the birth year, taking the photo
as from the middle of the year (one less if born in July or later).  Records
are kept only when a face was found with ``face_score >= min_face_score``, no
second face was found (or its score is at most ``max_second_face_score``), the
gender is known and the age is within 0–100.  Every record left out is
reported in ``rejected`` with its reason.

Gender is converted to this project's convention (0 = male, 1 = female, as in
UTKFace).

Each image's name starts with the person's number (``17/10000217_1981-05-05_2009.jpg``
in WIKI, ``01/nm0000001_rm124825600_1899-5-10_1968.jpg`` in IMDb), and the
folder is the last two digits of that number, so every photo of one person
lies in one folder.  :meth:`IMDBWIKI.person_split` holds out whole folders
(default 80–89, a tenth of the people): nobody is in both halves.
"""
from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import numpy as np
import scipy.io

from .age_groups import age_group
from .base import Crop, FaceDataset, load_listed, resolve_source

__all__ = ["IMDBWIKI", "read_imdbwiki_metadata", "matlab_datenum_to_year_month"]

#: MATLAB's serial date 1 is 1 January of year 0; NumPy's day 0 is 1970-01-01 (= MATLAB day 719529).
_MATLAB_DAY_OF_UNIX_EPOCH = 719529


def matlab_datenum_to_year_month(datenum) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB serial date numbers -> ``(year, month 1..12)`` int64 arrays of the same shape.

    Non-finite or pre-year-1 dates give year 0 and month 0 (callers drop them).
    """
    datenum = np.asarray(datenum, dtype=np.float64)
    valid = np.isfinite(datenum) & (datenum >= 367)
    days = np.where(valid, np.floor(np.where(valid, datenum, 0)) - _MATLAB_DAY_OF_UNIX_EPOCH, 0).astype(np.int64)
    dates = days.astype("datetime64[D]")
    year = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return np.where(valid, year, 0), np.where(valid, month, 0)


def _column(meta, field: str) -> np.ndarray:
    try:
        return np.asarray(meta[field]).ravel()
    except (ValueError, KeyError, IndexError) as error:
        raise ValueError(f"IMDB-WIKI metadata has no field {field!r}") from error


def _cell_strings(cells: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings, as loaded by SciPy, -> list of str ('' for empty cells)."""
    strings = []
    for cell in cells:
        values = np.asarray(cell).ravel()
        strings.append(str(values[0]) if values.size else "")
    return strings


def read_imdbwiki_metadata(mat_file) -> dict[str, np.ndarray]:
    """Read ``wiki.mat``/``imdb.mat`` (a path or a binary file object) into flat NumPy columns.

    Returns ``{"full_path": (N,) str, "dob": (N,) float64, "photo_taken": (N,) int64,
    "gender": (N,) float64, "face_score": (N,) float64, "second_face_score": (N,) float64}``.
    """
    try:
        contents = scipy.io.loadmat(mat_file)
    except Exception as error:  # scipy raises ValueError, TypeError, OSError … on a truncated or foreign file
        raise ValueError(f"the IMDB-WIKI metadata file cannot be read as a MATLAB .mat file "
                         f"({type(error).__name__}: {error}); is it truncated?") from error
    keys = [key for key in contents if not key.startswith("__")]
    if len(keys) != 1:
        raise ValueError(f"expected one struct ('wiki' or 'imdb') in the .mat file, found {keys}")
    meta = contents[keys[0]]
    if meta.dtype.names is None:
        raise ValueError(f"'{keys[0]}' in the .mat file is not a struct")
    meta = meta.ravel()[0]
    columns = {
        "full_path": np.array(_cell_strings(_column(meta, "full_path")), dtype=str),
        "dob": _column(meta, "dob").astype(np.float64),
        "photo_taken": _column(meta, "photo_taken").astype(np.int64),
        "gender": _column(meta, "gender").astype(np.float64),
        "face_score": _column(meta, "face_score").astype(np.float64),
        "second_face_score": _column(meta, "second_face_score").astype(np.float64),
    }
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"IMDB-WIKI metadata columns differ in length: {lengths}")
    return columns


class IMDBWIKI(FaceDataset):
    """IMDB-WIKI with tasks ``"gender"`` (0 male, 1 female) and ``"age"`` (group 0..5).

    Args:
        source: ``wiki_crop.tar`` / ``imdb_crop.tar``, the folder one was extracted to
            (holding ``wiki.mat`` or ``imdb.mat`` somewhere inside), or None for
            the copy fetched into the data root under ``part``.
        part: ``"wiki"`` or ``"imdb"``: which fetched copy to use when ``source`` is None.
        min_face_score, max_second_face_score: Quality filters (see the module docstring);
            ``max_second_face_score=None`` drops every photo in which a second face was found.
        root, crop, load_images, cache, progress, workers: As for :class:`~minimtl.data.GENKI4K`.

    Attributes beyond :class:`FaceDataset`: ``ages`` (N,) int64 years; ``folders`` (N,) int64, the
    number of each image's folder (the last two digits of the person's number).
    """

    per_sample_attributes = ("ages", "folders")
    paper_train_size, paper_test_size = 150_000, 20_000
    #: The folders :meth:`person_split` holds out by default: a tenth of the people.
    test_folders = tuple(range(80, 90))

    def __init__(self, source: Path | str | None = None, *, part: str = "wiki", root: Path | str | None = None,
                 crop: Crop | None = None, load_images: bool = True, cache: bool = True, progress: bool = True, workers=None,
                 min_face_score: float = 1.0, max_second_face_score: float | None = None):
        if part not in ("wiki", "imdb"):
            raise ValueError(f"part must be 'wiki' or 'imdb', got {part!r}")
        self.name = f"IMDB-WIKI ({part})"
        files = resolve_source(source, root, f"{part}_crop", self.name, f"{part}_crop")
        mat_names = [name for name in files.names() if PurePosixPath(name).name in ("wiki.mat", "imdb.mat")]
        if not mat_names:
            raise ValueError(f"{files.path} holds no wiki.mat or imdb.mat; is it an IMDB-WIKI *_crop archive?")
        mat_name = min(mat_names, key=len)
        self.name = f"IMDB-WIKI ({PurePosixPath(mat_name).stem})"
        columns = read_imdbwiki_metadata(io.BytesIO(files.read(mat_name)))
        folder = PurePosixPath(mat_name).parent

        year, month = matlab_datenum_to_year_month(columns["dob"])
        ages = columns["photo_taken"] - year - (month >= 7)
        face, second = columns["face_score"], columns["second_face_score"]
        second_face = ~np.isnan(second) if max_second_face_score is None else (second > max_second_face_score)
        reasons = [
            (~np.isfinite(face), "no face found"),
            (np.isfinite(face) & (face < min_face_score), f"face_score below {min_face_score:g}"),
            (second_face, "a second face in the photo"),
            (np.isnan(columns["gender"]), "gender unknown"),
            (year == 0, "invalid date of birth"),
            ((year != 0) & ((ages < 0) | (ages > 100)), "age outside 0-100"),
        ]
        keep = np.ones(len(ages), dtype=bool)
        rejected = []
        paths = [(folder / path).as_posix() for path in columns["full_path"]]
        for dropped, reason in reasons:  # each record is reported once, with its first reason
            newly = dropped & keep
            rejected += [(paths[i], reason) for i in np.flatnonzero(newly)]
            keep &= ~dropped
        members = [paths[i] for i in np.flatnonzero(keep)]
        gender = (1 - columns["gender"][keep]).astype(np.int64)  # upstream 1 = male -> ours 0 = male
        kept_ages = ages[keep].astype(np.int64)
        folders = np.array([person_folder(name) for name in members], dtype=np.int64)
        load_listed(self, files, members, {"gender": gender, "age": age_group(kept_ages)}, crop=crop, root=root,
                    cache=cache, load_images=load_images, progress=progress, rejected=rejected, workers=workers,
                    extras={"ages": kept_ages, "folders": folders})

    def person_split(self, test_folders=None, seed: int = 0) -> tuple["IMDBWIKI", "IMDBWIKI"]:
        """``(train, test)`` with the images of ``test_folders`` (default ``IMDBWIKI.test_folders``, 80–89) held out.

        Every photo of one person is in one folder, so no one is in both halves.
        ``seed`` is accepted for the common ``default_split`` interface; the split does not depend on it.
        """
        test_folders = self.test_folders if test_folders is None else tuple(int(f) for f in test_folders)
        is_test = np.isin(self.folders, test_folders)
        if not is_test.any() or is_test.all():
            raise ValueError(f"{self.name}: holding out folders {min(test_folders):02d}-{max(test_folders):02d} leaves "
                             f"{int(is_test.sum())} test and {int((~is_test).sum())} training images; "
                             f"choose folders present in the data (it has {sorted(set(self.folders.tolist()))[:5]}…)")
        return self.subset(np.flatnonzero(~is_test)), self.subset(np.flatnonzero(is_test))

    def default_split(self, seed: int = 0) -> tuple["IMDBWIKI", "IMDBWIKI"]:
        return self.person_split(seed=seed)


def person_folder(name: str) -> int:
    """The folder number of an IMDB-WIKI image name, ``"wiki_crop/17/10000217_….jpg"`` → 17 (−1 if not numeric)."""
    folder = PurePosixPath(name).parent.name
    return int(folder) if folder.isdigit() else -1
