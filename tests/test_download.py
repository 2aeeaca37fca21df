"""minimtl.download: streamed, resumable, verified downloads and safe archive extraction.

All traffic goes to a server on 127.0.0.1 started by the test (tests/httpserver.py).
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from httpserver import serve_files
from minimtl.download import (
    ArchiveError,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download,
    extract_archive,
    remove_stale_partials,
    sha1_of,
    sha256_of,
)

pytestmark = pytest.mark.data


@pytest.fixture
def payload(tmp_path) -> Path:
    """A 300 kB file of varied bytes (several read chunks)."""
    path = tmp_path / "served" / "payload.bin"
    path.parent.mkdir()
    path.write_bytes(bytes((i * 7 + i // 251) % 256 for i in range(300_000)))
    return path


def test_digests_match_hashlib(payload):
    data = payload.read_bytes()
    assert sha256_of(payload) == hashlib.sha256(data).hexdigest()
    assert sha1_of(payload) == hashlib.sha1(data).hexdigest()


def test_download_verifies_and_places_file(payload, tmp_path):
    destination = tmp_path / "out" / "payload.bin"
    with serve_files({"payload.bin": payload}) as server:
        result = download(server.url("payload.bin"), destination, sha256=sha256_of(payload),
                          sha1=sha1_of(payload), progress=False)
    assert result == destination
    assert destination.read_bytes() == payload.read_bytes()
    assert not (tmp_path / "out" / "payload.bin.part").exists()


def test_existing_verified_file_is_not_downloaded_again(payload, tmp_path):
    destination = tmp_path / "payload.bin"
    with serve_files({"payload.bin": payload}) as server:
        download(server.url("payload.bin"), destination, sha256=sha256_of(payload), progress=False)
        download(server.url("payload.bin"), destination, sha256=sha256_of(payload), progress=False)
        assert len(server.requests) == 1


def test_wrong_checksum_leaves_nothing(payload, tmp_path):
    destination = tmp_path / "payload.bin"
    wrong = "0" * 64
    with serve_files({"payload.bin": payload}) as server:
        with pytest.raises(ChecksumError) as caught:
            download(server.url("payload.bin"), destination, sha256=wrong, progress=False)
    assert isinstance(caught.value, ValueError)
    assert wrong in str(caught.value) and sha256_of(payload) in str(caught.value)
    assert caught.value.actual == sha256_of(payload)
    assert not destination.exists()
    assert not destination.with_name("payload.bin.part").exists()


def test_dropped_connection_then_resume_with_range(payload, tmp_path):
    destination = tmp_path / "payload.bin"
    part = destination.with_name("payload.bin.part")
    with serve_files({"payload.bin": payload}) as server:
        server.drop_after = 100_000
        with pytest.raises(DownloadError, match="dropped after 100000 of 300000 bytes"):
            download(server.url("payload.bin"), destination, sha256=sha256_of(payload), progress=False)
        assert not destination.exists()
        assert part.stat().st_size == 100_000
        server.drop_after = None
        download(server.url("payload.bin"), destination, sha256=sha256_of(payload), progress=False)
        assert server.requests[-1] == ("payload.bin", "bytes=100000-")
    assert destination.read_bytes() == payload.read_bytes()
    assert not part.exists()


def test_dropped_connection_without_resume_removes_part(payload, tmp_path):
    destination = tmp_path / "payload.bin"
    with serve_files({"payload.bin": payload}) as server:
        server.drop_after = 50_000
        with pytest.raises(DownloadError):
            download(server.url("payload.bin"), destination, resume=False, progress=False)
    assert not destination.exists()
    assert not destination.with_name("payload.bin.part").exists()


def test_server_ignoring_range_restarts_from_zero(payload, tmp_path):
    destination = tmp_path / "payload.bin"
    part = destination.with_name("payload.bin.part")
    part.write_bytes(payload.read_bytes()[:1234])
    with serve_files({"payload.bin": payload}) as server:
        server.support_range = False
        download(server.url("payload.bin"), destination, sha256=sha256_of(payload), progress=False)
    assert destination.read_bytes() == payload.read_bytes()


def test_complete_part_file_is_finished_after_416(payload, tmp_path):
    destination = tmp_path / "payload.bin"
    destination.with_name("payload.bin.part").write_bytes(payload.read_bytes())
    with serve_files({"payload.bin": payload}) as server:
        download(server.url("payload.bin"), destination, sha256=sha256_of(payload), progress=False)
    assert destination.read_bytes() == payload.read_bytes()


def test_http_error_and_bad_arguments(payload, tmp_path):
    with serve_files({"payload.bin": payload}) as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(server.url("missing.bin"), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(TypeError, match="url must be a str"):
        download(b"http://127.0.0.1/x", tmp_path / "x")
    with pytest.raises(ValueError, match="url must start with"):
        download("ftp://127.0.0.1/x", tmp_path / "x")
    with pytest.raises(ValueError, match="sha256 must be 64 hex digits"):
        download("http://127.0.0.1/x", tmp_path / "x", sha256="abc")


# --------------------------------------------------------------------------- extraction
def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz")])
def test_extract_tar(tmp_path, suffix, mode):
    archive = _tar_with(tmp_path / f"good{suffix}", [(_file("top/a.txt"), b"alpha"), (_file("top/sub/b.txt"), b"beta")],
                        mode)
    result = extract_archive(archive, tmp_path / "out", progress=False)
    assert (result / "top" / "a.txt").read_text() == "alpha"
    assert (result / "top" / "sub" / "b.txt").read_text() == "beta"
    assert list(tmp_path.glob(".out.partial-*")) == []
    with pytest.raises(FileExistsError):
        extract_archive(archive, tmp_path / "out", progress=False)


def test_extract_zip(tmp_path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("top/a.txt", "alpha")
    extract_archive(archive, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "top" / "a.txt").read_text() == "alpha"


def _symlink(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


@pytest.mark.parametrize(
    "bad_member,data,reason",
    [
        (_file("/etc/evil.txt"), b"x", "absolute path"),
        (_file("top/../../evil.txt"), b"x", "'..'"),
        (_symlink("top/link", "/etc/passwd"), None, "link"),
        (_symlink("top/hard", "top/a.txt", hard=True), None, "link"),
        (_device("top/null"), None, "device"),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "device"],
)
def test_tar_slip_is_refused_and_nothing_left(tmp_path, bad_member, data, reason):
    archive = _tar_with(tmp_path / "evil.tar", [(_file("top/a.txt"), b"alpha"), (bad_member, data)])
    with pytest.raises(UnsafeArchiveError, match=reason) as caught:
        extract_archive(archive, tmp_path / "out", progress=False)
    assert bad_member.name in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out.partial-*")) == []
    assert not (tmp_path.parent / "evil.txt").exists()


def test_zip_slip_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("ok.txt", "fine")
        handle.writestr("../evil.txt", "bad")
    with pytest.raises(UnsafeArchiveError, match=r"\.\./evil\.txt"):
        extract_archive(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_truncated_archive_leaves_nothing(tmp_path):
    good = _tar_with(tmp_path / "good.tar.gz", [(_file(f"top/{i}.bin"), os.urandom(20_000)) for i in range(5)],
                     "w:gz")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        extract_archive(truncated, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out.partial-*")) == []


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not an archive at all" * 100)
    with pytest.raises(ArchiveError, match="not a .tar, .tar.gz or .zip"):
        extract_archive(junk, tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError):
        extract_archive(tmp_path / "absent.tar", tmp_path / "out", progress=False)


def test_interrupted_extraction_leaves_nothing(tmp_path, monkeypatch):
    archive = _tar_with(tmp_path / "good.tar", [(_file(f"top/{i}.txt"), b"x") for i in range(5)])
    calls = {"count": 0}
    original = tarfile.TarFile.extract

    def interrupt_on_third(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extract", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        extract_archive(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out.partial-*")) == []


def test_remove_stale_partials(tmp_path):
    (tmp_path / ".out.partial-abc" / "deep").mkdir(parents=True)
    (tmp_path / ".other.partial-abc").mkdir()
    removed = remove_stale_partials(tmp_path / "out")
    assert removed == [tmp_path / ".out.partial-abc"]
    assert (tmp_path / ".other.partial-abc").exists()
