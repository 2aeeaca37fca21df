"""Reliability fixes, each on synthetic inputs made in tmp_path.

* GENKI-4K labels: a blank line inside labels.txt is an error naming the line; images without a label line
  are reported, never dropped silently.
* ``fetch(force=True)`` keeps the old extracted copy when the new archive is unsafe.
* A truncated archive is a ValueError naming the file, not a bare EOFError or a silently shorter listing.
* ``download`` gives up on a server that trickles bytes: by ``deadline=`` and by the stall detector.
* The command lines answer bad arguments and bad files with one line on stderr and the documented exit code
  (2 bad usage, 1 bad data), and print a file name that is not valid UTF-8 without failing.
"""
import gzip
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import time

import cv2
import numpy as np
import pytest

from conftest import REPO
from httpserver import serve_files
from minimtl import cli
from minimtl.data import GENKI4K, CentreCrop, FileSource, fetch
from minimtl.data.__main__ import main as data_main
from minimtl.data.genki import read_genki4k_labels, unlabelled_images
from minimtl.download import ArchiveError, DownloadError, UnsafeArchiveError, check_tar_complete, download
from minimtl.faces.__main__ import main as faces_main

pytestmark = pytest.mark.data


# --------------------------------------------------------------------------- synthetic inputs
def jpeg(seed: int, shape=(60, 50, 3)) -> bytes:
    """A tiny JPEG of random pixels (no face in it)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels)
    assert ok
    return encoded.tobytes()


def genki_files(labels: str, images: int) -> dict[str, bytes]:
    """The members of a fake GENKI-4K: ``genki4k/labels.txt`` and ``genki4k/files/file0001.jpg`` ..."""
    files = {"genki4k/labels.txt": labels.encode("ascii")}
    files.update({f"genki4k/files/file{number:04d}.jpg": jpeg(number) for number in range(1, images + 1)})
    return files


def write_folder(folder, files: dict[str, bytes]):
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def write_tar(path, files: dict[str, bytes], mode: str = "w"):
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def cut(path, size: int, name: str):
    """A copy of ``path`` holding only its first ``size`` bytes."""
    target = path.with_name(name)
    target.write_bytes(path.read_bytes()[:size])
    return target


def leftovers(root):
    return sorted(p.name for p in root.rglob("*") if ".part" in p.name or ".partial-" in p.name)


def tree(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


TWO_LABELS = "1 0.1 -0.2 0.3\n0 0.0 0.1 -0.1\n"


# --------------------------------------------------------------------------- 1. GENKI-4K labels
@pytest.mark.parametrize("as_tar", [False, True], ids=["folder", "tar"])
def test_genki_blank_line_inside_labels_is_an_error_naming_the_line(tmp_path, as_tar):
    files = genki_files("1 0 0 0\n\n0 0.1 0.2 0.3\n1 0 0 0\n", images=3)
    source = write_tar(tmp_path / "genki4k.tar", files) if as_tar else write_folder(tmp_path / "genki", files)
    with pytest.raises(ValueError, match=r"labels\.txt line 2 is blank"):
        read_genki4k_labels(FileSource(source))
    with pytest.raises(ValueError, match=r"line 2 is blank"):
        GENKI4K(source, crop=CentreCrop(), cache=False, progress=False)


def test_genki_trailing_blank_lines_are_fine(tmp_path):
    source = write_folder(tmp_path / "genki", genki_files(TWO_LABELS + "\n  \n\r\n", images=2))
    names, smile, pose = read_genki4k_labels(FileSource(source))
    assert names == ["genki4k/files/file0001.jpg", "genki4k/files/file0002.jpg"]
    assert smile.tolist() == [1, 0]
    np.testing.assert_allclose(pose, [[0.1, -0.2, 0.3], [0.0, 0.1, -0.1]])
    dataset = GENKI4K(source, crop=CentreCrop(), cache=False, progress=False)
    assert len(dataset) == 2 and dataset.rejected == []


@pytest.mark.parametrize("as_tar", [False, True], ids=["folder", "tar"])
def test_genki_images_without_a_label_line_are_reported(tmp_path, as_tar, caplog):
    files = genki_files(TWO_LABELS, images=4)  # file0003 and file0004 have no label line
    source = write_tar(tmp_path / "genki4k.tar", files) if as_tar else write_folder(tmp_path / "genki", files)
    unlabelled = ["genki4k/files/file0003.jpg", "genki4k/files/file0004.jpg"]
    names, _, _ = read_genki4k_labels(FileSource(source))
    assert [name for name, _ in unlabelled_images(FileSource(source), names)] == unlabelled

    dataset = GENKI4K(source, crop=CentreCrop(), cache=False, progress=False)
    assert dataset.names.tolist() == names and dataset.images.shape == (2, 48, 48)
    assert [name for name, _ in dataset.rejected] == unlabelled
    assert all("no label" in reason and "2 lines" in reason for _, reason in dataset.rejected)
    assert "left out 2 images" in caplog.text and "file0003.jpg" in caplog.text

    labels_only = GENKI4K(source, load_images=False)
    assert [name for name, _ in labels_only.rejected] == unlabelled


def test_genki_label_line_without_its_image_is_reported(tmp_path):
    source = write_folder(tmp_path / "genki", genki_files(TWO_LABELS + "1 0 0 0\n", images=2))
    dataset = GENKI4K(source, crop=CentreCrop(), cache=False, progress=False)
    assert len(dataset) == 2
    assert [name for name, _ in dataset.rejected] == ["genki4k/files/file0003.jpg"]
    assert "missing from the source" in dataset.rejected[0][1]


# --------------------------------------------------------------------------- 2. fetch --force
def test_fetch_force_keeps_the_old_copy_when_the_new_archive_is_unsafe(tmp_path):
    root = tmp_path / "root"
    good = write_tar(tmp_path / "good.tar", genki_files(TWO_LABELS, images=2))
    folder = fetch("genki4k", root=root, archive=good, verify=False, progress=False)
    before = tree(folder)
    assert "genki4k/labels.txt" in before

    unsafe = write_tar(tmp_path / "unsafe.tar", {"genki4k/labels.txt": b"1 0 0 0\n", "../evil.txt": b"gotcha"})
    with pytest.raises(UnsafeArchiveError, match="evil.txt"):
        fetch("genki4k", root=root, archive=unsafe, verify=False, force=True, progress=False)
    assert tree(folder) == before  # the old copy, intact
    assert not list(tmp_path.rglob("evil.txt"))
    assert leftovers(root) == []

    newer = write_tar(tmp_path / "newer.tar", genki_files(TWO_LABELS + "1 0 0 0\n", images=3))
    assert fetch("genki4k", root=root, archive=newer, verify=False, force=True, progress=False) == folder
    after = tree(folder)
    assert after != before and len(after) == 4 and after["genki4k/files/file0003.jpg"] == jpeg(3)
    assert len(GENKI4K(folder, load_images=False)) == 3
    assert leftovers(root) == [] and sorted(p.name for p in root.iterdir()) == ["genki4k"]


def test_fetch_force_with_a_truncated_archive_keeps_the_old_copy(tmp_path):
    root = tmp_path / "root"
    good = write_tar(tmp_path / "good.tar", genki_files(TWO_LABELS, images=2))
    folder = fetch("genki4k", root=root, archive=good, verify=False, progress=False)
    before = tree(folder)
    truncated = cut(good, good.stat().st_size // 2, "truncated.tar")
    with pytest.raises(ArchiveError, match="truncated"):
        fetch("genki4k", root=root, archive=truncated, verify=False, force=True, progress=False)
    assert tree(folder) == before and leftovers(root) == []


# --------------------------------------------------------------------------- 3. truncated archives
def incompressible_files(count: int = 4, size: int = 30_000) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    return {f"data/part{index}.bin": rng.bytes(size) for index in range(count)}


def test_truncated_tar_gz_is_a_value_error_naming_the_file(tmp_path):
    whole = write_tar(tmp_path / "whole.tar.gz", incompressible_files(), mode="w:gz")
    truncated = cut(whole, whole.stat().st_size // 2, "half.tar.gz")
    assert len(FileSource(whole).names()) == 4
    with pytest.raises(ValueError, match=r"half\.tar\.gz.*truncated or corrupt") as caught:
        FileSource(truncated).names()
    assert not isinstance(caught.value, EOFError)
    with pytest.raises(ValueError, match=r"half\.tar\.gz.*truncated or corrupt"):
        list(FileSource(truncated).iterate([f"data/part{index}.bin" for index in range(4)]))


def test_tar_cut_between_members_is_a_value_error_naming_the_file(tmp_path):
    whole = write_tar(tmp_path / "whole.tar", incompressible_files())
    check_tar_complete(whole)  # a complete tar passes
    with tarfile.open(whole) as tar:
        members = tar.getmembers()
    between = cut(whole, members[2].offset, "between.tar")  # ends right after member 2's data
    no_marker = cut(whole, members[-1].offset_data + 30_208, "no_marker.tar")  # every member, no end marker
    for truncated in (between, no_marker):
        with pytest.raises(ArchiveError, match=truncated.name):
            check_tar_complete(truncated)
        with pytest.raises(ValueError, match=rf"{truncated.name}.*truncated or corrupt"):
            FileSource(truncated).names()
    check_tar_complete(write_tar(tmp_path / "whole.tar.gz", incompressible_files(), mode="w:gz"))


# --------------------------------------------------------------------------- 4. slow servers
@pytest.fixture
def slow_file(tmp_path):
    path = tmp_path / "served" / "slow.bin"
    path.parent.mkdir()
    path.write_bytes(np.random.default_rng(2).bytes(64 * 1024))  # 30 s at the trickle below
    return path


@pytest.mark.parametrize("resume", [True, False])
def test_download_deadline_ends_a_trickling_server(slow_file, tmp_path, resume):
    destination = tmp_path / "out" / "slow.bin"
    with serve_files({"slow.bin": slow_file}) as server:
        server.trickle = (100, 0.05)  # 2 kB/s
        started = time.monotonic()
        with pytest.raises(DownloadError, match="deadline"):
            download(server.url("slow.bin"), destination, progress=False, resume=resume, deadline=1,
                     stall_seconds=60, stall_bytes=1)
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 4
    assert not destination.exists()
    part = destination.with_name("slow.bin.part")
    assert part.exists() == resume
    if resume:
        assert 0 < part.stat().st_size < slow_file.stat().st_size
        assert part.read_bytes() == slow_file.read_bytes()[: part.stat().st_size]


def test_download_stall_detector_ends_a_trickling_server(slow_file, tmp_path):
    destination = tmp_path / "out" / "slow.bin"
    with serve_files({"slow.bin": slow_file}) as server:
        server.trickle = (100, 0.05)  # 1 kB per half second, fewer than stall_bytes
        started = time.monotonic()
        with pytest.raises(DownloadError, match="stalled"):
            download(server.url("slow.bin"), destination, progress=False, deadline=None,
                     stall_seconds=0.5, stall_bytes=10_000)
        elapsed = time.monotonic() - started
    assert elapsed < 3
    assert not destination.exists()
    part = destination.with_name("slow.bin.part")
    assert 0 < part.stat().st_size < slow_file.stat().st_size  # kept: resume=True is the default
    # the next run resumes from the .part and finishes at full speed
    with serve_files({"slow.bin": slow_file}) as server:
        size = part.stat().st_size
        download(server.url("slow.bin"), destination, progress=False,
                 sha256=hashlib.sha256(slow_file.read_bytes()).hexdigest())
        assert server.requests == [("slow.bin", f"bytes={size}-")]
    assert destination.read_bytes() == slow_file.read_bytes() and not part.exists()


# --------------------------------------------------------------------------- 5. command lines
def one_error_line(capsys, code: int, expected: int, prog: str) -> str:
    """Check the outcome of a failed command: the exit code, one line on stderr, no traceback; return the line."""
    out, err = capsys.readouterr()
    assert code == expected, err
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prog) and ": error: " in lines[0]  # a sub-command adds its name: "PROG crop: error:"
    return lines[0]


@pytest.fixture
def archives(tmp_path):
    """A good fake genki4k.tar, a truncated copy (cut inside a member), a truncated .tar.gz and a text file."""
    folder = tmp_path / "archives"
    folder.mkdir()
    files = genki_files(TWO_LABELS + "1 0 0 0\n", images=3)
    good = write_tar(folder / "genki4k.tar", files)
    with tarfile.open(good) as tar:
        last = tar.getmember("genki4k/files/file0003.jpg")
    compressed = folder / "genki4k.tar.gz"
    compressed.write_bytes(gzip.compress(good.read_bytes()))
    text = folder / "notes.txt"
    text.write_text("these are not the photos you are looking for\n")
    return {"good": good, "truncated": cut(good, last.offset_data + 100, "truncated.tar"),
            "between": cut(good, last.offset, "between.tar"),
            "truncated_gz": cut(compressed, compressed.stat().st_size - 200, "truncated.tar.gz"), "text": text}


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case, expected", [
    ("unknown name", 2), ("bad sha256", 2), ("missing archive", 2), ("root is a file", 2), ("url scheme", 2),
    ("unknown option", 2), ("truncated archive", 1), ("truncated tar.gz", 1), ("not an archive", 1),
    ("tar named .tar that is text", 1),
])
def test_data_command_line_errors(tmp_path, archives, capsys, case, expected):
    root = tmp_path / "root"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    disguised = tmp_path / "disguised.tar"
    disguised.write_text("not a tar at all\n")

    def with_sha(path):  # the right checksum, so that only the archive's content is wrong (no log warning either)
        return ["--root", str(root), "fetch", "genki4k", "--archive", str(path), "--sha256", sha256_of(path), "--quiet"]

    argv = {
        "unknown name": ["--root", str(root), "fetch", "nosuch"],
        "bad sha256": ["--root", str(root), "fetch", "genki4k", "--archive", str(archives["good"]), "--sha256", "xyz"],
        "missing archive": ["--root", str(root), "fetch", "genki4k", "--archive", str(tmp_path / "absent.tar")],
        "root is a file": ["--root", str(a_file), "fetch", "genki4k", "--archive", str(archives["good"])],
        "url scheme": ["--root", str(root), "fetch", "genki4k", "--url", "ftp://example.invalid/genki4k.tar"],
        "unknown option": ["--root", str(root), "fetch", "genki4k", "--frobnicate"],
        "truncated archive": with_sha(archives["truncated"]),
        "truncated tar.gz": with_sha(archives["truncated_gz"]),
        "not an archive": with_sha(archives["text"]),
        "tar named .tar that is text": with_sha(disguised),
    }[case]
    line = one_error_line(capsys, data_main(argv), expected, "python -m minimtl.data")
    if expected == 1:
        assert not (root / "genki4k").exists() and leftovers(root) == []
    if case == "unknown name":
        assert "nosuch" in line and "genki4k" in line


def test_data_command_line_fetches_a_good_archive(tmp_path, archives, capsys):
    root = tmp_path / "root"
    argv = ["--root", str(root), "fetch", "genki4k", "--archive", str(archives["good"]),
            "--sha256", sha256_of(archives["good"]), "--quiet"]
    assert data_main(argv) == 0
    out, err = capsys.readouterr()
    assert "ready at" in out and err == ""
    assert (root / "genki4k" / "genki4k" / "labels.txt").is_file()


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "plain.jpg").write_bytes(jpeg(7))
    return folder


@pytest.mark.parametrize("case, expected", [
    ("missing source", 2), ("destination is a file", 2), ("workers 0", 2), ("margin -1", 2),
    ("text file as source", 2), ("missing weights", 2), ("no command", 2),
    ("truncated archive", 1), ("truncated tar.gz", 1), ("cut between members", 1), ("tar named .tar that is text", 1),
])
def test_faces_command_line_errors(tmp_path, archives, image_folder, capsys, case, expected):
    destination = tmp_path / "out"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    disguised = tmp_path / "disguised.tar"
    disguised.write_text("not a tar at all\n")
    options = ["--workers", "1", "--no-cache", "--quiet"]

    def crop(source, *extra):
        return ["crop", str(source), str(destination), *options, *extra]

    argv = {
        "missing source": crop(tmp_path / "absent"),
        "destination is a file": ["crop", str(image_folder), str(a_file), *options],
        "workers 0": crop(image_folder, "--workers", "0"),
        "margin -1": crop(image_folder, "--margin", "-1"),
        "text file as source": crop(archives["text"]),
        "missing weights": crop(image_folder, "--weights", str(tmp_path / "absent.npz")),
        "no command": [],
        "truncated archive": crop(archives["truncated"]),
        "truncated tar.gz": crop(archives["truncated_gz"]),
        "cut between members": crop(archives["between"]),
        "tar named .tar that is text": crop(disguised),
    }[case]
    one_error_line(capsys, faces_main(argv), expected, "python -m minimtl.faces")
    assert not destination.exists()  # nothing left behind: no empty folder, no partial output
    assert a_file.read_text() == "x"


@pytest.fixture(scope="module")
def show_crops():
    spec = importlib.util.spec_from_file_location("show_crops", REPO / "examples" / "show_crops.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


@pytest.mark.parametrize("case, expected", [
    ("images 0", 2), ("out jpg", 2), ("out is a folder", 2), ("missing archive", 2), ("image not in the archive", 2),
    ("not a tar", 1), ("truncated archive", 1), ("truncated tar.gz", 1), ("cut between members", 1),
])
def test_show_crops_command_line_errors(tmp_path, archives, show_crops, capsys, case, expected):
    out = tmp_path / "figure.png"

    def figure(archive, *extra):
        return ["--archive", str(archive), "--out", str(out), *extra]

    argv = {
        "images 0": figure(archives["good"], "--images", "0"),
        "out jpg": ["--archive", str(archives["good"]), "--images", "1", "--out", str(tmp_path / "x.jpg")],
        "out is a folder": ["--archive", str(archives["good"]), "--images", "1", "--out", str(tmp_path)],
        "missing archive": figure(tmp_path / "absent.tar", "--images", "1"),
        "image not in the archive": figure(archives["good"], "--images", "9"),
        "not a tar": figure(archives["text"], "--images", "1"),
        "truncated archive": figure(archives["truncated"], "--images", "1", "3"),
        "truncated tar.gz": figure(archives["truncated_gz"], "--images", "1", "3"),
        "cut between members": figure(archives["between"], "--images", "1", "3"),
    }[case]
    line = one_error_line(capsys, cli.run(show_crops.main, argv, prog=show_crops.PROG), expected, show_crops.PROG)
    assert not out.exists() and not (tmp_path / "x.jpg").exists()
    if case == "cut between members":
        assert "truncated" in line


def test_faces_crop_prints_a_file_name_that_is_not_utf8(tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    name = os.fsdecode(b"caf\xe9.jpg")
    (source / name).write_bytes(jpeg(3))
    (source / os.fsdecode(b"notes-\xff.txt")).write_text("not an image")
    destination = tmp_path / "out"
    environment = dict(os.environ, PYTHONIOENCODING="utf-8:strict", LC_ALL="C.UTF-8",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    environment.pop("MINIMTL_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "minimtl.faces", "crop", str(source), str(destination),
                             "--workers", "1", "--no-cache", "--quiet", "--png"],
                            capture_output=True, env=environment, cwd=tmp_path, timeout=120)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, output
    assert "UnicodeEncodeError" not in output and "Traceback" not in output
    assert "caf\\xe9.jpg" in result.stdout.decode("utf-8")  # printed as an escape, not a crash
    assert (destination / "crops.npz").is_file() and (destination / "report.json").is_file()
