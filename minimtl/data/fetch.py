"""Getting the data sets: ``python -m minimtl.data fetch NAME`` or :func:`fetch` from Python.

Each data set in :data:`DATASETS` has an upstream location and, where known,
a SHA-256.  :func:`fetch` downloads the archive into ``<data root>/downloads``
(resuming, with progress, verified: :func:`minimtl.download.download`) and
extracts it into ``<data root>/<folder>`` (tar-slip safe, all-or-nothing:
:func:`minimtl.download.extract_archive`).  A user can instead give a mirror
(``url=`` / ``--url``) or an archive already on disk (``archive=`` /
``--archive``), which is verified and extracted without a copy.

Because the extracted folder appears only when extraction completed, an
existing ``<data root>/<folder>`` means "done": a second ``fetch`` returns at
once (``force=True`` extracts again).  The data sets then find it by
themselves: ``GENKI4K()`` reads ``<data root>/genki4k``.

UTKFace is shared through a page with a cloud-drive link, not a stable file
address, so it has no default URL: download ``UTKFace.tar.gz`` from its page
and run ``fetch utkface --archive PATH``.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..download import ChecksumError, download, extract_archive, remove_stale_partials, sha256_of
from .base import data_root

__all__ = ["DATASETS", "DatasetSource", "fetch"]

log = logging.getLogger("minimtl.data")


@dataclass(frozen=True)
class DatasetSource:
    """Where a data set comes from and where it goes under the data root."""

    name: str  # what the user types: fetch NAME
    title: str
    archive_name: str  # file name of the downloaded archive
    folder: str  # extracted folder under the data root
    url: str | None  # upstream file address, None if there is none to download automatically
    sha256: str | None  # None where no checksum is published or known
    homepage: str
    terms: str


DATASETS: dict[str, DatasetSource] = {
    source.name: source
    for source in (
        DatasetSource("genki4k", "GENKI-4K (smile)", "genki4k.tar", "genki4k",
                      "https://mplab.ucsd.edu/wordpress/wp-content/uploads/genki4k.tar",
                      "d67173a288bb0f01c463cf7f70cfd323605c37a8cfaf6bbf73468291a307d641",
                      "https://inc.ucsd.edu/mplab/398/",
                      'Cite "http://mplab.ucsd.edu, The MPLab GENKI-4K Dataset."'),
        DatasetSource("utkface", "UTKFace aligned & cropped (age, gender)", "UTKFace.tar.gz", "utkface", None,
                      "a41ee606c8ef909fb05320232fa2e1b43fbd1f13d2af5b2e78b71a8d924c7296",
                      "https://susanqq.github.io/UTKFace/", "Non-commercial research use only."),
        DatasetSource("wiki_crop", "IMDB-WIKI, Wikipedia part, face crops (age, gender)", "wiki_crop.tar",
                      "wiki_crop", "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/wiki_crop.tar", None,
                      "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/", "Academic research use only."),
        DatasetSource("imdb_crop", "IMDB-WIKI, IMDb part, face crops (age, gender)", "imdb_crop.tar",
                      "imdb_crop", "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/imdb_crop.tar", None,
                      "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/", "Academic research use only."),
    )
}


def _source(name: str) -> DatasetSource:
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a str, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace(" ", "")
    aliases = {"genki": "genki4k", "wiki": "wiki_crop", "imdb": "imdb_crop", "wikicrop": "wiki_crop",
               "imdbcrop": "imdb_crop"}
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def fetch(name: str, *, root: Path | str | None = None, url: str | None = None, archive: Path | str | None = None,
          sha256: str | None = None, verify: bool = True, force: bool = False, keep_archive: bool = True,
          progress: bool = True) -> Path:
    """Make data set ``name`` available under the data root and return its extracted folder.

    Args:
        name: a key of :data:`DATASETS` ("genki4k", "utkface", "wiki_crop", "imdb_crop").
        root: data root (default ``$MINIMTL_DATA`` or ``~/.cache/minimtl/data``).
        url: a mirror to download from instead of the upstream address.
        archive: a local archive to use instead of downloading.
        sha256: expected digest, overriding the known one (for a different release).
        verify: False to accept an archive whose checksum differs or is unknown.
        force: extract again even if the folder exists.
        keep_archive: keep the downloaded archive in ``<root>/downloads``.

    Raises :class:`~minimtl.download.ChecksumError` (a ValueError) on a digest
    mismatch, :class:`~minimtl.download.DownloadError` on network failure,
    :class:`~minimtl.download.ArchiveError` for a corrupt or unsafe archive; in
    each case no folder is left at the destination.
    """
    source = _source(name)
    root = data_root(root)
    destination = root / source.folder
    aside = destination.with_name(f".{destination.name}.partial-old")
    if aside.is_dir() and not destination.exists():  # a replacement killed between its two renames: undo it
        os.replace(aside, destination)
    if destination.is_dir() and not force:
        return destination
    remove_stale_partials(destination)
    expected = (sha256 or source.sha256) if verify else None
    if archive is not None:
        path = Path(archive).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"archive not found: {path}")
        if expected is not None:
            actual = sha256_of(path)
            if actual != expected.lower():
                raise ChecksumError(path, "sha256", expected.lower(), actual)
        downloaded = False
    else:
        address = url or source.url
        if address is None:
            raise ValueError(
                f"{source.title} has no direct download address. Get {source.archive_name} from "
                f"{source.homepage} and run: python -m minimtl.data fetch {source.name} --archive PATH"
            )
        path = download(address, root / "downloads" / source.archive_name, sha256=expected, progress=progress)
        downloaded = True
    if expected is None:
        log.warning("%s: no checksum to verify against; its sha256 is %s", path.name, sha256_of(path))
    if destination.exists():  # force=True: the old copy is replaced only once the new one is complete
        replace_folder(destination, lambda target: extract_archive(path, target, progress=progress))
    else:
        extract_archive(path, destination, progress=progress)
    if downloaded and not keep_archive:
        path.unlink()
    return destination


def replace_folder(destination: Path, build) -> None:
    """Replace the folder ``destination`` by the one ``build(new_path)`` makes, keeping the old one if that fails.

    The new folder is built beside the old as ``.<name>.partial-new``; only when it is complete is the old one
    moved aside (``.<name>.partial-old``), the new one renamed into place, and the old one deleted.  Both names
    are ones :func:`~minimtl.download.remove_stale_partials` clears after an interruption.
    """
    staged = destination.with_name(f".{destination.name}.partial-new")
    aside = destination.with_name(f".{destination.name}.partial-old")
    for leftover in (staged, aside):
        if leftover.exists():
            shutil.rmtree(leftover)
    remove_stale_partials(staged)  # what a killed build of the staged copy left
    build(staged)  # raises, leaving destination as it was, if the new copy cannot be made
    os.replace(destination, aside)
    os.replace(staged, destination)
    shutil.rmtree(aside, ignore_errors=True)
