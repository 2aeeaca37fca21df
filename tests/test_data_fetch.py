"""fetch end to end against a local HTTP server on 127.0.0.1 serving ../shared/data: fetch -> verify -> extract -> load."""
import io
import tarfile

import numpy as np
import pytest

from conftest import require_shared_file
from httpserver import serve_files
from minimtl.data import GENKI4K, CentreCrop, fetch
from minimtl.data.__main__ import main
from minimtl.download import ArchiveError, ChecksumError, DownloadError, UnsafeArchiveError, sha256_of

pytestmark = pytest.mark.data

GENKI_SHA256 = "d67173a288bb0f01c463cf7f70cfd323605c37a8cfaf6bbf73468291a307d641"


@pytest.fixture(scope="module")
def genki_tar():
    return require_shared_file("data/genki4k.tar")


def leftovers(root):
    """Everything under root except finished downloads: partial files and folders."""
    return sorted(p.name for p in root.rglob("*") if ".part" in p.name or ".partial-" in p.name)


def test_fetch_verify_extract_load(genki_tar, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMTL_DATA", str(tmp_path))
    with serve_files({"genki4k.tar": genki_tar}) as server:
        folder = fetch("genki4k", url=server.url("genki4k.tar"), progress=False)
        assert folder == tmp_path / "genki4k"
        assert sha256_of(tmp_path / "downloads" / "genki4k.tar") == GENKI_SHA256
        assert fetch("GENKI-4K", url=server.url("genki4k.tar"), progress=False) == folder  # already there
        assert len(server.requests) == 1
    dataset = GENKI4K(load_images=False)  # found under $MINIMTL_DATA
    assert len(dataset) == 4000 and dataset.class_counts()["smile"].tolist() == [1838, 2162]
    assert (folder / "genki4k" / "files" / "file4000.jpg").is_file()
    few = GENKI4K(load_images=True, crop=CentreCrop(), progress=False).subset(np.arange(3))
    assert few.images.shape == (3, 48, 48)
    assert leftovers(tmp_path) == []


def test_dropped_connection_then_resume(genki_tar, tmp_path):
    with serve_files({"genki4k.tar": genki_tar}) as server:
        server.drop_after = 5_000_000
        with pytest.raises(DownloadError, match="dropped"):
            fetch("genki4k", root=tmp_path, url=server.url("genki4k.tar"), progress=False)
        assert not (tmp_path / "genki4k").exists() and not (tmp_path / "downloads" / "genki4k.tar").exists()
        assert (tmp_path / "downloads" / "genki4k.tar.part").stat().st_size == 5_000_000
        server.drop_after = None
        fetch("genki4k", root=tmp_path, url=server.url("genki4k.tar"), progress=False)
        assert server.requests[-1][1] == "bytes=5000000-"
    assert sha256_of(tmp_path / "downloads" / "genki4k.tar") == GENKI_SHA256
    assert (tmp_path / "genki4k" / "genki4k" / "labels.txt").is_file()


def test_wrong_checksum(genki_tar, tmp_path):
    impostor = tmp_path / "served" / "genki4k.tar"
    impostor.parent.mkdir()
    with tarfile.open(impostor, "w") as tar:
        info = tarfile.TarInfo("genki4k/labels.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"1\n"))
    root = tmp_path / "root"
    with serve_files({"genki4k.tar": impostor}) as server:
        with pytest.raises(ChecksumError, match=GENKI_SHA256):
            fetch("genki4k", root=root, url=server.url("genki4k.tar"), progress=False)
    assert not (root / "genki4k").exists() and not (root / "downloads" / "genki4k.tar").exists()
    assert leftovers(root) == []


def test_corrupted_archive(genki_tar, tmp_path):
    corrupted = tmp_path / "served" / "genki4k.tar"
    corrupted.parent.mkdir()
    data = bytearray(genki_tar.read_bytes()[:3_000_000])
    data[512 * 3: 512 * 3 + 100] = b"\xff" * 100  # damage a member header, then cut the archive short
    corrupted.write_bytes(bytes(data))
    root = tmp_path / "root"
    with serve_files({"genki4k.tar": corrupted}) as server:
        with pytest.raises(ChecksumError):  # the known checksum catches it first
            fetch("genki4k", root=root, url=server.url("genki4k.tar"), progress=False)
        with pytest.raises(ArchiveError, match="corrupt or truncated"):  # and extraction, when told to skip that
            fetch("genki4k", root=root, url=server.url("genki4k.tar"), verify=False, progress=False)
    assert not (root / "genki4k").exists() and leftovers(root) == []


def test_tar_slip_archive(tmp_path):
    evil = tmp_path / "served" / "evil.tar"
    evil.parent.mkdir()
    with tarfile.open(evil, "w") as tar:
        for name in ("genki4k/labels.txt", "../../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"1\n"))
    root = tmp_path / "root"
    with serve_files({"genki4k.tar": evil}) as server:
        with pytest.raises(UnsafeArchiveError, match=r"\.\./\.\./escaped\.txt"):
            fetch("genki4k", root=root, url=server.url("genki4k.tar"), sha256=sha256_of(evil), progress=False)
    assert not (root / "genki4k").exists() and leftovers(root) == []
    assert not list(tmp_path.rglob("escaped.txt"))


def test_local_archive_and_command_line(genki_tar, tmp_path, capsys):
    assert main(["--root", str(tmp_path), "fetch", "genki4k", "--archive", str(genki_tar), "--quiet"]) == 0
    assert "ready at" in capsys.readouterr().out
    assert not (tmp_path / "downloads").exists()  # a local archive is used where it is, not copied
    assert main(["--root", str(tmp_path), "list"]) == 0
    assert "genki4k    present" in capsys.readouterr().out
    assert main(["--root", str(tmp_path / "other"), "fetch", "genki4k", "--archive", str(genki_tar),
                 "--sha256", "0" * 64, "--quiet"]) == 1
    assert "checksum mismatch" in capsys.readouterr().err


def test_dataset_without_direct_url_explains(tmp_path):
    with pytest.raises(ValueError, match="--archive PATH"):
        fetch("utkface", root=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        fetch("mnist", root=tmp_path)
