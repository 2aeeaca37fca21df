"""Reading files from a folder or an archive without extracting it: :class:`FileSource`.

The data sets (:mod:`minimtl.data`) and the face cropper's command line
(:mod:`minimtl.faces`) read images the same way from a folder, a ``.tar``
(any compression: ``.tar.gz``, ``.tgz``, ...) or a ``.zip``:

* :meth:`FileSource.names` lists the regular files (an uncompressed tar by
  its headers only; a ``.tar.gz`` is decompressed once, about 1.5 s for
  UTKFace), and refuses a tar cut between two members, which ``tarfile``
  itself would read as a smaller, complete archive;
* :meth:`FileSource.read_each` reads the wanted files in one pass in archive
  order, reporting a file it cannot read beside the others;
* :meth:`FileSource.identity` names the contents cheaply, for crop caches.

Nothing is ever written from an archive here, so a member called ``../x`` or
``/etc/x`` is only a name.  Writing members out is :func:`minimtl.download.extract_archive`'s
job, which refuses such names and links (tar-slip); a caller that makes file
names from member names checks them itself (``python -m minimtl.faces crop --png``).
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from minimtl.download import ArchiveError, check_tar_complete

__all__ = ["ARCHIVE_READ_ERRORS", "FileSource", "MemberTooLarge"]

#: What a truncated or damaged tar or zip raises while it is read.
ARCHIVE_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError)
ARCHIVE_SAMPLE_BYTES = 2**20  # how much of each end of an archive its identity reads


class MemberTooLarge(ValueError):
    """A file larger than :meth:`FileSource.read_each`'s ``max_bytes``: it is not read at all."""

    def __init__(self, name: str, size: int):
        super().__init__(f"{name} has {size:,} bytes")
        self.size = size


class FileSource:
    """The files of a data set or a photo collection: a folder, a tar archive (any compression) or a zip.

    Names are POSIX paths relative to the archive root or the folder, e.g.
    ``"genki4k/files/file0001.jpg"``.

    Attributes:
        path: the folder or archive.
        kind: ``"folder"``, ``"tar"`` or ``"zip"``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a file that is no tar or zip archive, or a damaged one (:class:`ArchiveError`).
    """

    def __init__(self, path: Path | str):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file or folder path, got {type(path).__name__}")
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            self.kind = "folder"
        elif self.path.is_file():
            try:
                self.kind = ("zip" if zipfile.is_zipfile(self.path) else
                             "tar" if tarfile.is_tarfile(self.path) else None)
            except (OSError, EOFError, zlib.error) as error:
                raise ArchiveError(self.damaged(error)) from error
            if self.kind is None:
                raise ValueError(f"{self.path} is neither a folder nor a .tar, .tar.gz or .zip archive")
        else:
            raise FileNotFoundError(f"no folder or archive at {self.path}")
        self._names: list[str] | None = None

    @property
    def is_archive(self) -> bool:
        return self.kind != "folder"

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"

    def damaged(self, error: BaseException) -> str:
        """The one-line message for an archive that cannot be read to its end."""
        return (f"{self.path} is truncated or corrupt ({type(error).__name__}: {' '.join(str(error).split())}): "
                f"copy or download it again (python -m minimtl.data fetch checks the checksums it knows)")

    def names(self) -> list[str]:
        """Relative names of all regular files: tar order, or sorted for a zip or a folder.

        A folder's names include links that point nowhere (reported as unreadable when read).
        """
        if self._names is None:
            try:
                if self.kind == "tar":
                    with tarfile.open(self.path) as tar:
                        names = [member.name for member in tar if member.isfile()]
                    check_tar_complete(self.path)  # tarfile stops silently at a cut between members
                elif self.kind == "zip":
                    with zipfile.ZipFile(self.path) as archive:
                        names = sorted(info.filename for info in archive.infolist() if not info.is_dir())
                else:
                    names = sorted(PurePosixPath(Path(folder, file).relative_to(self.path)).as_posix()
                                   for folder, _, files in os.walk(self.path) for file in files)
            except ARCHIVE_READ_ERRORS + (ArchiveError,) as error:
                if self.kind == "folder":
                    raise
                raise ArchiveError(self.damaged(error)) from error
            self._names = names
        return self._names

    def read(self, name: str) -> bytes:
        """Bytes of one file (``KeyError`` if an archive has no such file).  For many, use :meth:`read_each`."""
        if self.kind == "folder":
            return (self.path / name).read_bytes()
        try:
            if self.kind == "zip":
                with zipfile.ZipFile(self.path) as archive:
                    return archive.read(name)
            with tarfile.open(self.path) as tar:
                handle = tar.extractfile(name)
                if handle is None:
                    raise KeyError(f"{name} is not a regular file in {self.path.name}")
                return handle.read()
        except ARCHIVE_READ_ERRORS as error:
            raise ArchiveError(self.damaged(error)) from error

    def read_each(self, wanted: Iterable[str], max_bytes: int | None = None
                  ) -> Iterator[tuple[str, bytes | None, Exception | None]]:
        """Yield ``(name, data, None)`` or ``(name, None, error)`` for the wanted files, in one pass.

        A tar is streamed in archive order (a ``.tar.gz`` is decompressed once) and yields only the
        wanted names it holds, each once (the first of duplicates); a folder or zip yields every wanted
        name in sorted order, a missing one with its ``OSError`` or ``KeyError``.  A file larger than
        ``max_bytes`` is not read: its error is a :class:`MemberTooLarge`.

        Raises:
            ArchiveError: the tar breaks off before its end (the names not yet yielded are unread).
        """
        wanted = set(wanted)
        if self.kind == "folder":
            for name in sorted(wanted):
                try:
                    size = (self.path / name).stat().st_size
                    if max_bytes is not None and size > max_bytes:
                        yield name, None, MemberTooLarge(name, size)
                        continue
                    yield name, (self.path / name).read_bytes(), None
                except OSError as error:
                    yield name, None, error
        elif self.kind == "zip":
            with zipfile.ZipFile(self.path) as archive:
                for name in sorted(wanted):
                    try:
                        size = archive.getinfo(name).file_size
                        if max_bytes is not None and size > max_bytes:
                            yield name, None, MemberTooLarge(name, size)
                            continue
                        yield name, archive.read(name), None
                    except (OSError, zipfile.BadZipFile, KeyError, EOFError, zlib.error, NotImplementedError) as error:
                        yield name, None, error
        else:
            seen = set()
            try:
                with tarfile.open(self.path, mode="r|*") as tar:  # stream: one decompression pass
                    for member in tar:
                        if member.isfile() and member.name in wanted and member.name not in seen:
                            seen.add(member.name)
                            if max_bytes is not None and member.size > max_bytes:
                                yield member.name, None, MemberTooLarge(member.name, member.size)
                                continue
                            try:
                                data = tar.extractfile(member).read()
                            except ARCHIVE_READ_ERRORS as error:
                                yield member.name, None, error
                                continue
                            yield member.name, data, None
            except ARCHIVE_READ_ERRORS as error:
                raise ArchiveError(self.damaged(error)) from error

    def iterate(self, wanted: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(name, bytes)`` for each wanted file that can be read, in one pass (see :meth:`read_each`).

        A file that is absent or unreadable in a folder or zip is left out (the caller names it missing);
        a tar member that cannot be read means the archive is damaged: :class:`ArchiveError`.
        """
        for name, data, error in self.read_each(wanted):
            if error is None:
                yield name, data
            elif self.kind == "tar":
                raise ArchiveError(self.damaged(error)) from error

    def identity(self) -> str:
        """A short string that changes when the archive or folder contents change.

        An archive is identified by its file name, its size and a digest of its
        first and last MiB: cheap (no full read), and a copy of the same archive
        (a new modification time, another folder: shared/ laid anew on a new
        machine) keeps its crop cache.  A folder by the names, sizes and
        modification times of its files.
        """
        if self.is_archive:
            size = self.path.stat().st_size
            sample = hashlib.sha1()
            with open(self.path, "rb") as handle:
                sample.update(handle.read(ARCHIVE_SAMPLE_BYTES))
                handle.seek(max(size - ARCHIVE_SAMPLE_BYTES, 0))
                sample.update(handle.read(ARCHIVE_SAMPLE_BYTES))
            text = f"archive:{self.path.name}:{size}:{sample.hexdigest()}"
        else:
            digest = hashlib.sha1()
            for name in self.names():
                try:
                    info = (self.path / name).stat()
                except OSError:  # a dangling link or a file removed since listing: read as missing later
                    digest.update(f"{name}:absent\n".encode())
                    continue
                digest.update(f"{name}:{info.st_size}:{info.st_mtime_ns}\n".encode())
            text = f"folder:{digest.hexdigest()}"
        return hashlib.sha1(text.encode()).hexdigest()[:16]
