"""UTKFace: 23,708 aligned and cropped faces labelled with age, gender and race in the file name.

A second age and gender collection beside IMDB-WIKI, collected and framed
differently (trained on with ``--datasets genki4k,wiki,utkface``, otherwise
a data set to test on that the model never saw).  The archive
``UTKFace.tar.gz`` holds ``UTKFace/<age>_<gender>_<race>_<datetime>.jpg.chip.jpg``
(200×200 RGB; age 1–116; gender 0 = male, 1 = female; race 0–4); two names
have a slightly malformed datetime part and are still read.  Three names
lack the race field; by default they are reported as unparsed rather than
guessed, which leaves 23,705 images.  ``allow_missing_race=True`` keeps them
(their race is -1), since their age and gender are present.

Tasks: ``"gender"`` and ``"age"`` (the paper's six age groups, see
:mod:`minimtl.data.age_groups`); the age in years is kept in ``ages``.
Research and non-commercial use only.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np

from .age_groups import age_group
from .base import Crop, FaceDataset, load_listed, resolve_source

__all__ = ["UTKFace", "parse_utkface_name"]

# The datetime part is read loosely: two upstream names are slightly malformed there
# ("…224657 .jpg.chip.jpg", "…725357jpg.chip.jpg") but their age, gender and race are clear.
_FULL_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_\d{8,}[^_]*\.jpg$")
_NO_RACE_NAME = re.compile(r"^(\d{1,3})_([01])_\d{8,}[^_]*\.jpg$")


def parse_utkface_name(file_name: str, allow_missing_race: bool = False) -> tuple[int, int, int] | None:
    """``"25_1_3_2017….jpg.chip.jpg"`` -> ``(age 25, gender 1, race 3)``; None if it does not parse.

    With ``allow_missing_race``, ``"39_1_2017….jpg.chip.jpg"`` gives ``(39, 1, -1)``.
    """
    match = _FULL_NAME.match(file_name)
    if match:
        return int(match[1]), int(match[2]), int(match[3])
    if allow_missing_race:
        match = _NO_RACE_NAME.match(file_name)
        if match:
            return int(match[1]), int(match[2]), -1
    return None


class UTKFace(FaceDataset):
    """UTKFace with tasks ``"gender"`` (0 male, 1 female) and ``"age"`` (group 0..5).

    Parameters are those of :class:`~minimtl.data.GENKI4K` plus
    ``allow_missing_race`` (see the module docstring).  The chips go through
    the same face framing as every other data set (:func:`~minimtl.data.base.default_crop`):
    their own framing is tighter than the others', and a model that learns it fails elsewhere.

    Attributes beyond :class:`FaceDataset`: ``ages`` (N,) int64 years and
    ``races`` (N,) int64 (0–4, -1 unknown).  Unparsed names are in ``rejected``.
    """

    name = "UTKFace"
    per_sample_attributes = ("ages", "races")
    default_test_size = 0.2

    def __init__(self, source: Path | str | None = None, *, root: Path | str | None = None, crop: Crop | None = None,
                 load_images: bool = True, cache: bool = True, progress: bool = True, workers=None,
                 allow_missing_race: bool = False):
        files = resolve_source(source, root, "utkface", self.name, "utkface")
        members, ages, genders, races, rejected = [], [], [], [], []
        for name in files.names():
            file_name = PurePosixPath(name).name
            if not file_name.lower().endswith(".jpg"):
                continue
            parsed = parse_utkface_name(file_name, allow_missing_race)
            if parsed is None:
                rejected.append((name, "name does not parse as age_gender_race_datetime.jpg.chip.jpg"))
                continue
            members.append(name)
            ages.append(parsed[0])
            genders.append(parsed[1])
            races.append(parsed[2])
        if not members:
            raise ValueError(f"{files.path} holds no UTKFace images (<age>_<gender>_<race>_<datetime>.jpg.chip.jpg)")
        ages = np.array(ages, dtype=np.int64)
        load_listed(self, files, members, {"gender": np.array(genders), "age": age_group(ages)}, crop=crop,
                    root=root, cache=cache, load_images=load_images, progress=progress, rejected=rejected, workers=workers,
                    extras={"ages": ages, "races": np.array(races, dtype=np.int64)})
