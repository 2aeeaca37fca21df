"""minimtl.archives.FileSource: one reader of folders, tars and zips for the data sets and the face cropper."""
import io
import tarfile
import zipfile

import pytest

from minimtl.archives import FileSource, MemberTooLarge
from minimtl.download import ArchiveError

FILES = {"faces/b.jpg": b"bbbb", "faces/a.jpg": b"a", "notes.txt": b"text"}


def make(kind, folder):
    if kind == "folder":
        for name, data in FILES.items():
            (folder / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "src" / name).write_bytes(data)
        return folder / "src"
    if kind == "zip":
        path = folder / "src.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in FILES.items():
                archive.writestr(name, data)
        return path
    path = folder / "src.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_every_kind_reads_the_same_files(tmp_path, kind):
    source = FileSource(make(kind, tmp_path))
    assert source.kind == kind and source.is_archive == (kind != "folder")
    assert sorted(source.names()) == sorted(FILES)
    assert source.read("faces/a.jpg") == b"a"
    assert dict(source.iterate(["faces/a.jpg", "faces/b.jpg", "absent.jpg"])) == {"faces/a.jpg": b"a", "faces/b.jpg": b"bbbb"}
    items = {name: (data, error) for name, data, error in source.read_each(["faces/a.jpg", "faces/b.jpg"], max_bytes=2)}
    assert items["faces/a.jpg"] == (b"a", None)
    assert isinstance(items["faces/b.jpg"][1], MemberTooLarge) and items["faces/b.jpg"][1].size == 4
    assert len(source.identity()) == 16


def test_member_names_that_leave_the_folder_are_only_names(tmp_path):
    path = tmp_path / "slip.tar"
    with tarfile.open(path, "w") as archive:
        for name in ("../escaped.jpg", "/tmp/absolute.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
    source = FileSource(path)
    assert dict(source.iterate(source.names())) == {"../escaped.jpg": b"x", "/tmp/absolute.jpg": b"x"}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["slip.tar"]  # reading writes nothing


def test_not_an_archive_and_nothing_there_are_clear_errors(tmp_path):
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a folder nor a .tar, .tar.gz or .zip archive"):
        FileSource(tmp_path / "plain.txt")
    with pytest.raises(FileNotFoundError, match="no folder or archive at"):
        FileSource(tmp_path / "absent.tar")


def test_a_tar_gz_cut_short_is_an_archive_error_naming_it(tmp_path):
    whole = make("tar", tmp_path).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArchiveError, match=r"cut\.tar\.gz is truncated or corrupt"):
        FileSource(cut).names()
