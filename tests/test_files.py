"""minimtl.files.atomic_write: a file is replaced whole or not at all."""
import pytest

from minimtl.files import atomic_write


def test_atomic_write_replaces_the_file_on_success(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with atomic_write(path, "w") as stream:
        stream.write("new")
        assert path.read_text() == "old"  # readers see the old file until the block ends
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_an_exception_inside_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"old bytes")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_write(path) as stream:
            stream.write(b"half of the new")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.npz"]


def test_an_exception_before_the_first_write_creates_nothing(tmp_path):
    path = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_takes_only_write_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    assert list(tmp_path.iterdir()) == []
