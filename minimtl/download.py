"""Downloading and unpacking files safely: the one place in minimtl that touches the network.

Everything minimtl fetches for a user (data-set archives, face-detector models)
goes through :func:`download`, and every archive it unpacks goes through
:func:`extract_archive`.  Both follow one rule: **a file or folder appears at
its final name only when it is complete and checked.**

* :func:`download` streams into ``<destination>.part``, resumes that partial
  file with an HTTP ``Range`` request when the server allows it, shows a tqdm
  progress bar, verifies the SHA-256 / SHA-1 digest, and only then renames the
  file into place with :func:`os.replace` (atomic on one file system).
* :func:`extract_archive` refuses members that could write outside the target
  folder (absolute paths, ``..``, symbolic or hard links, devices: a
  "tar-slip"), unpacks into a hidden temporary sibling folder, and renames that
  folder into place only when every member has been written.  An interrupted
  run therefore leaves at most a ``.<name>.partial-*`` folder, which no later
  run takes for a finished one (and :func:`remove_stale_partials` clears).

Only the standard library is used (``urllib``, ``hashlib``, ``tarfile``,
``zipfile``) plus tqdm for the progress bar.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm.auto import tqdm

__all__ = [
    "ArchiveError",
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "check_tar_complete",
    "download",
    "extract_archive",
    "remove_stale_partials",
    "sha1_of",
    "sha256_of",
]

_TAR_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # Python >= 3.11.4
CHUNK_BYTES = 1 << 20  # 1 MiB per read: large enough to be fast, small enough for a smooth progress bar


class DownloadError(OSError):
    """The server could not be reached, answered with an error, or dropped the connection midway."""


class ChecksumError(ValueError):
    """A file's digest differs from the expected one.  ``expected`` and ``actual`` are hex strings."""

    def __init__(self, path: Path | str, algorithm: str, expected: str, actual: str):
        self.path = Path(path)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{algorithm} checksum mismatch for {self.path.name}: expected {expected}, got {actual}"
        )


class ArchiveError(ValueError):
    """An archive is corrupt, truncated, or of a format minimtl does not unpack."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written outside the target folder or is a link or device (tar-slip)."""


# --------------------------------------------------------------------------- checksums
def _digest_of(path: Path | str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path | str) -> str:
    """Return the SHA-256 of a file as 64 lower-case hex digits, reading it in 1 MiB chunks."""
    return _digest_of(path, "sha256")


def sha1_of(path: Path | str) -> str:
    """Return the SHA-1 of a file as 40 lower-case hex digits, reading it in 1 MiB chunks."""
    return _digest_of(path, "sha1")


def _check_hex(value: str | None, length: int, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a hex string or None, got {type(value).__name__}")
    value = value.strip().lower()
    if len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{name} must be {length} hex digits, got {value!r}")
    return value


def _verify(path: Path, sha256: str | None, sha1: str | None) -> None:
    """Raise :class:`ChecksumError` if ``path`` does not match the given digests (None = not checked)."""
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise ChecksumError(path, "sha256", sha256, actual)
    if sha1 is not None:
        actual = sha1_of(path)
        if actual != sha1:
            raise ChecksumError(path, "sha1", sha1, actual)


# --------------------------------------------------------------------------- download
def _part_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".part")


def _total_from_content_range(header: str | None) -> int | None:
    """``'bytes 100-199/200'`` or ``'bytes */200'`` -> 200; None when absent or unknown (``*``)."""
    if not header or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def download(
    url: str,
    destination: Path | str,
    *,
    sha256: str | None = None,
    sha1: str | None = None,
    progress: bool = True,
    resume: bool = True,
    timeout: float = 30,
    deadline: float | None = 6 * 3600,
    stall_seconds: float = 60,
    stall_bytes: int = 16 * 1024,
) -> Path:
    """Download ``url`` to ``destination`` and return ``destination`` as a :class:`Path`.

    Args:
        url: ``http://``, ``https://`` or ``file://`` address.
        destination: Final path of the file.  Its folder is created if needed.  While
            downloading, bytes go to ``destination`` + ``".part"``.
        sha256, sha1: Expected hex digests, or None to skip that check.  When given and an
            existing ``destination`` already matches, nothing is downloaded.
        progress: Show a tqdm progress bar.
        resume: Continue an existing ``.part`` file with an HTTP ``Range`` request (a
            server that ignores it sends the whole file, which is then written
            from the start) and keep the ``.part`` if the connection drops, so the
            next call continues.  With ``resume=False`` a dropped connection
            removes the ``.part``.
        timeout: Seconds to wait for the server to connect or send the next bytes.
        deadline: Seconds the whole download may take (None: no limit).  ``timeout``
            alone never ends a server that sends a byte now and then.
        stall_seconds, stall_bytes: The stall detector: a download that receives fewer than
            ``stall_bytes`` in any ``stall_seconds`` is given up.  With
            ``resume``, the ``.part`` is kept in both cases, so running again
            continues where it stopped.

    Raises:
        DownloadError: The server is unreachable, answers with an HTTP error, sends fewer
            bytes than it announced, stalls, or misses the deadline.  Nothing is
            left at ``destination``.
        ChecksumError: The downloaded bytes do not match ``sha256``/``sha1``; the ``.part``
            file is removed and nothing is left at ``destination``.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    if not url.startswith(("http://", "https://", "file://")):
        raise ValueError(f"url must start with http://, https:// or file://, got {url!r}")
    if not isinstance(destination, (str, os.PathLike)):
        raise TypeError(f"destination must be a path, got {type(destination).__name__}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if (deadline is not None and deadline <= 0) or stall_seconds <= 0 or stall_bytes < 0:
        raise ValueError(f"deadline and stall_seconds must be positive and stall_bytes at least 0, got "
                         f"{deadline}, {stall_seconds}, {stall_bytes}")
    started = time.monotonic()
    sha256 = _check_hex(sha256, 64, "sha256")
    sha1 = _check_hex(sha1, 40, "sha1")
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)

    if destination.exists() and (sha256 or sha1):
        try:
            _verify(destination, sha256, sha1)
            return destination  # already here and correct
        except ChecksumError:
            pass  # stale or damaged: download again; it is replaced only once the new file checks out

    part = _part_path(destination)
    offset = part.stat().st_size if (resume and part.exists()) else 0
    if not resume and part.exists():
        part.unlink()

    request = urllib.request.Request(url, headers={"User-Agent": "minimtl"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout if deadline is None else min(timeout, deadline))
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # Range not satisfiable: the .part may already hold the whole file.
            total = _total_from_content_range(error.headers.get("Content-Range"))
            error.close()
            if total is not None and total == offset:
                return _finish(part, destination, sha256, sha1)
            part.unlink()
            remaining = None if deadline is None else max(deadline - (time.monotonic() - started), 1e-3)
            return download(url, destination, sha256=sha256, sha1=sha1, progress=progress,
                            resume=resume, timeout=timeout, deadline=remaining, stall_seconds=stall_seconds,
                            stall_bytes=stall_bytes)
        raise DownloadError(f"could not download {url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"could not reach {url}: {reason}") from error

    with response:
        status = getattr(response, "status", 200)
        if offset and status != 206:
            offset = 0  # the server ignored the Range header and sends the whole file
        length = response.headers.get("Content-Length")
        expected_bytes = int(length) if length is not None and length.isdigit() else None
        total = offset + expected_bytes if expected_bytes is not None else None
        received = 0
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=destination.name, disable=not progress, leave=False)
        again = "; run again to resume" if resume else ""
        window_start, window_bytes = time.monotonic(), 0
        try:
            with open(part, "ab" if offset else "wb") as handle:
                while True:
                    # read1 returns what has arrived (up to a chunk) instead of waiting for a whole chunk,
                    # so the deadline and the stall detector are checked however slowly bytes come
                    chunk = response.read1(CHUNK_BYTES)
                    if not chunk:
                        break
                    handle.write(chunk)
                    received += len(chunk)
                    window_bytes += len(chunk)
                    bar.update(len(chunk))
                    now = time.monotonic()
                    if deadline is not None and now - started > deadline:
                        raise DownloadError(f"downloading {url} did not finish within its deadline of "
                                            f"{_duration(deadline)} ({offset + received} bytes received){again}")
                    if now - window_start >= stall_seconds:
                        if window_bytes < stall_bytes:
                            raise DownloadError(f"downloading {url} stalled: {window_bytes} bytes in the last "
                                                f"{_duration(now - window_start)} ({offset + received} bytes received)"
                                                f"{again}")
                        window_start, window_bytes = now, 0
            if expected_bytes is not None and received < expected_bytes:
                raise DownloadError(
                    f"connection to {url} dropped after {offset + received} of {total} bytes"
                    + ("; run again to resume" if resume else "")
                )
        except (OSError, socket.timeout, ConnectionError) as error:
            if not resume:
                part.unlink(missing_ok=True)
            if isinstance(error, DownloadError):
                raise
            raise DownloadError(
                f"connection to {url} failed after {offset + received} bytes: {error}"
                + ("; run again to resume" if resume else "")
            ) from error
        except BaseException:  # KeyboardInterrupt: keep the .part only if resuming is wanted
            if not resume:
                part.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
    return _finish(part, destination, sha256, sha1)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def _finish(part: Path, destination: Path, sha256: str | None, sha1: str | None) -> Path:
    """Verify the finished ``.part`` and rename it to ``destination``; remove it if it is wrong."""
    try:
        _verify(part, sha256, sha1)
    except ChecksumError as error:
        part.unlink(missing_ok=True)
        raise ChecksumError(destination, error.algorithm, error.expected, error.actual) from None
    os.replace(part, destination)
    return destination


# --------------------------------------------------------------------------- extraction
def _unsafe_name_reason(name: str) -> str | None:
    """Why an archive member name is unsafe to extract, or None if it stays inside the target."""
    if not name or "\x00" in name:
        return "empty name or NUL byte"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or PureWindowsPath(name).is_absolute():
        return "absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "'..' in path"
    return None


def _archive_kind(archive: Path) -> str:
    """'zip' or 'tar' (including compressed tar), judged by content; ArchiveError otherwise."""
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        if tarfile.is_tarfile(archive):
            return "tar"
    except (OSError, EOFError, zlib.error) as error:
        raise ArchiveError(f"{archive.name} is corrupt or truncated: {error}") from error
    raise ArchiveError(
        f"{archive.name} is not a .tar, .tar.gz or .zip archive (or it is corrupt or truncated)"
    )


def check_tar_complete(archive: Path | str) -> None:
    """Raise :class:`ArchiveError` if the uncompressed tar ``archive`` ends before its end-of-archive marker.

    ``tarfile`` stops without a word at a header cut short, so an archive truncated between two members
    (an interrupted copy) would otherwise read as a smaller, complete one.  A whole tar ends, after its last
    member's data, with two blocks of zeros.  Compressed tars need no such check: their decompressor
    raises ``EOFError`` at a cut.
    """
    archive = Path(archive)
    with open(archive, "rb") as handle:
        if handle.read(2) in (b"\x1f\x8b", b"BZ", b"\xfd7"):  # gzip, bzip2, xz
            return
    size = archive.stat().st_size
    try:
        with tarfile.open(archive, mode="r:") as tar:
            end = max((m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers()), default=0)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArchiveError(f"{archive.name} is corrupt or truncated: {error}") from error
    with open(archive, "rb") as handle:
        handle.seek(end)
        tail = handle.read(1024)
    if end > size or len(tail) < 1024 or tail.strip(b"\0"):
        raise ArchiveError(f"{archive.name} is corrupt or truncated: it ends after {size:,} bytes without the "
                           f"end-of-archive marker (an interrupted download or copy?): get it again")


def _tar_member_reason(member: tarfile.TarInfo) -> str | None:
    reason = _unsafe_name_reason(member.name)
    if reason:
        return reason
    if member.issym() or member.islnk():
        return f"link to {member.linkname!r}"
    if member.isdev():  # character or block device, FIFO
        return "device or FIFO"
    if not (member.isfile() or member.isdir()):
        return "special member type"
    return None


def _zip_member_reason(info: zipfile.ZipInfo) -> str | None:
    reason = _unsafe_name_reason(info.filename)
    if reason:
        return reason
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # no type bits = plain file
        return "device or special file"
    return None


def extract_archive(archive: Path | str, destination: Path | str, *, progress: bool = True) -> Path:
    """Unpack a ``.tar``, ``.tar.gz``/``.tgz`` or ``.zip`` archive into the new folder ``destination``.

    The archive's members are written below ``destination`` exactly as named
    (an archive holding ``genki4k/labels.txt`` gives
    ``destination/genki4k/labels.txt``).  Members are checked as they are
    read; one with an absolute path, a ``..`` component, a symbolic or hard
    link, or a device raises :class:`UnsafeArchiveError` naming it.  Work
    happens in a temporary sibling folder ``.<name>.partial-XXXX`` that is
    renamed to ``destination`` only when complete and removed on any error or
    interruption, so ``destination`` exists only if extraction finished.

    Returns ``destination``.  Raises ``FileExistsError`` if it already exists,
    ``FileNotFoundError`` if ``archive`` does not, :class:`ArchiveError` if
    the archive is corrupt, truncated or of another format.
    """
    archive = Path(archive)
    destination = Path(destination)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    if destination.exists():
        raise FileExistsError(f"{destination} already exists; remove it to extract {archive.name} again")
    destination.parent.mkdir(parents=True, exist_ok=True)
    kind = _archive_kind(archive)
    temporary = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        if kind == "zip":
            _extract_zip(archive, temporary, progress)
        else:
            _extract_tar(archive, temporary, progress)
        os.replace(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return destination


def _extract_tar(archive: Path, target: Path, progress: bool) -> None:
    # Stream mode ("r|*") reads a compressed archive once; each member is checked before it is written.
    use_data_filter = hasattr(tarfile, "data_filter")  # Python >= 3.11.4: a second line of defence
    check_tar_complete(archive)
    try:
        with tarfile.open(archive, mode="r|*") as tar, tqdm(
            desc=f"extracting {archive.name}", unit=" files", disable=not progress, leave=False
        ) as bar:
            for member in tar:
                reason = _tar_member_reason(member)
                if reason:
                    raise UnsafeArchiveError(
                        f"refusing to extract {archive.name}: member {member.name!r} is unsafe ({reason})"
                    )
                if use_data_filter:
                    tar.extract(member, target, filter="data")
                else:  # pragma: no cover - older Python
                    tar.extract(member, target)
                bar.update(1)
    except (tarfile.ReadError, tarfile.StreamError, EOFError, zlib.error) as error:
        raise ArchiveError(f"{archive.name} is corrupt or truncated: {error}") from error
    except _TAR_FILTER_ERROR as error:
        raise UnsafeArchiveError(f"refusing to extract {archive.name}: {error}") from error


def _extract_zip(archive: Path, target: Path, progress: bool) -> None:
    try:
        with zipfile.ZipFile(archive) as handle:
            members = handle.infolist()
            for info in members:  # the central directory lists every member up front: check all first
                reason = _zip_member_reason(info)
                if reason:
                    raise UnsafeArchiveError(
                        f"refusing to extract {archive.name}: member {info.filename!r} is unsafe ({reason})"
                    )
            for info in tqdm(members, desc=f"extracting {archive.name}", unit=" files",
                             disable=not progress, leave=False):
                handle.extract(info, target)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise ArchiveError(f"{archive.name} is corrupt or truncated: {error}") from error


def remove_stale_partials(destination: Path | str) -> list[Path]:
    """Delete leftover ``.<name>.partial-*`` folders beside ``destination`` (from a killed extraction).

    Returns the folders removed.  Call it only when no other process is
    extracting to the same place.
    """
    destination = Path(destination)
    removed = []
    if destination.parent.is_dir():
        for leftover in destination.parent.glob(f".{destination.name}.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed
