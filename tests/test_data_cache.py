"""Preparing images: the crop callable, rejected images with reasons, and the .npz crop cache."""
import tarfile

import cv2
import numpy as np
import pytest

from minimtl.data import CentreCrop, UTKFace
from minimtl.data.base import crop_cache_key

pytestmark = pytest.mark.data

NAMES = ["20_0_1_20170101000000001.jpg.chip.jpg", "35_1_2_20170101000000002.jpg.chip.jpg",
         "70_0_0_20170101000000003.jpg.chip.jpg", "5_1_4_20170101000000004.jpg.chip.jpg"]


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        cv2.imwrite(str(folder / name), rng.integers(0, 256, size=(100, 80, 3), dtype=np.uint8))
    (folder / "40_1_0_20170101000000005.jpg.chip.jpg").write_bytes(b"not a jpeg")
    (folder / "notes_about.jpg").write_bytes(b"whatever")
    return folder


class CountingCrop:
    """Centre crop that counts its calls and finds 'no face' in images whose mean is below a threshold."""

    def __init__(self, threshold=0.0):
        self.calls, self.threshold, self.inner = 0, threshold, CentreCrop()
        self.settings = f"counting(threshold={threshold})"

    def __call__(self, image):
        self.calls += 1
        return None if image.mean() < self.threshold else self.inner(image)


def test_rejected_images_are_reported_with_reasons(folder, tmp_path):
    dataset = UTKFace(folder, root=tmp_path / "root", crop=CentreCrop(), progress=False)
    assert len(dataset) == 4 and dataset.images.shape == (4, 48, 48)
    reasons = dict(dataset.rejected)
    assert reasons["40_1_0_20170101000000005.jpg.chip.jpg"] == "could not be decoded"
    assert reasons["notes_about.jpg"].startswith("name does not parse")
    np.testing.assert_array_equal(dataset.ages, [20, 35, 5, 70])  # sorted folder order
    np.testing.assert_array_equal(dataset.labels["age"], [1, 2, 0, 5])


def test_cache_is_reused_and_keyed_by_crop_settings(folder, tmp_path):
    root = tmp_path / "root"
    crop = CountingCrop()
    first = UTKFace(folder, root=root, crop=crop, progress=False)
    assert crop.calls == 5 - 1  # the undecodable file never reaches the crop
    again = CountingCrop()
    second = UTKFace(folder, root=root, crop=again, progress=False)
    assert again.calls == 0
    np.testing.assert_array_equal(first.images, second.images)
    strict = CountingCrop(threshold=255)  # finds no face anywhere
    with_threshold = UTKFace(folder, root=root, crop=strict, progress=False)
    assert strict.calls == 4 and len(with_threshold) == 0
    assert sum(reason == "no face found" for _, reason in with_threshold.rejected) == 4
    assert len(list((root / "cache").glob("*.npz"))) == 2
    assert not list((root / "cache").glob("*.tmp"))


def test_cache_notices_changed_files(folder, tmp_path):
    root = tmp_path / "root"
    UTKFace(folder, root=root, crop=CentreCrop(), progress=False)
    cv2.imwrite(str(folder / NAMES[0]), np.zeros((60, 60, 3), np.uint8))
    changed = UTKFace(folder, root=root, crop=CentreCrop(), progress=False)
    assert changed.images[0].max() == 0


def test_same_images_from_folder_and_tar_gz(folder, tmp_path):
    archive = tmp_path / "UTKFace.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="UTKFace")
    from_folder = UTKFace(folder, cache=False, crop=CentreCrop(), progress=False)
    from_tar = UTKFace(archive, cache=False, crop=CentreCrop(), progress=False)
    order = np.argsort(from_tar.names)
    np.testing.assert_array_equal(from_tar.images[order], from_folder.images[np.argsort(from_folder.names)])
    assert from_tar.names[0].startswith("UTKFace/")


def test_a_crop_with_the_wrong_output_is_refused(folder):
    with pytest.raises(ValueError, match=r"expected \(48, 48\) uint8"):
        UTKFace(folder, cache=False, progress=False, crop=lambda image: image[:48, :48])


def test_cache_keys():
    assert crop_cache_key(CentreCrop()) != crop_cache_key(CentreCrop(fraction=0.8))
    assert crop_cache_key(CountingCrop(1)) == "counting(threshold=1)"

    def my_crop(image):
        return None

    assert crop_cache_key(my_crop).endswith("my_crop")


def test_centre_crop():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 255  # the central square is white, the sides black
    face = CentreCrop()(image)
    assert face.shape == (48, 48) and face.dtype == np.uint8 and face.min() == 255
    assert CentreCrop()(np.zeros((8, 8, 3), np.uint8)) is None
    with pytest.raises(ValueError, match="fraction"):
        CentreCrop(fraction=0)


def test_missing_source_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch utkface"):
        UTKFace(root=tmp_path, load_images=False)
    with pytest.raises(FileNotFoundError):
        UTKFace(tmp_path / "absent.tar.gz")


def test_an_archive_keeps_its_identity_when_copied_and_loses_it_when_changed(tmp_path, monkeypatch):
    """A copy (new mtime, other folder: shared/ laid anew) keeps the crop cache; changed bytes at either end do not."""
    import os
    import shutil

    from minimtl import archives
    from minimtl.data import base

    monkeypatch.setattr(archives, "ARCHIVE_SAMPLE_BYTES", 1024)  # a small archive still has a head, a middle and a tail
    original = tmp_path / "faces.tar"
    member = tmp_path / "face.bin"
    member.write_bytes(np.random.default_rng(0).bytes(20_000))
    with tarfile.open(original, "w") as tar:
        tar.add(member, arcname="face.bin")
    copy_dir = tmp_path / "elsewhere"
    copy_dir.mkdir()
    copy = copy_dir / "faces.tar"
    shutil.copyfile(original, copy)
    os.utime(copy, (1, 1))
    identity = base.FileSource(original).identity()
    assert base.FileSource(copy).identity() == identity
    size = original.stat().st_size
    for position in (600, size - 1):  # inside the first member's data; the archive's last byte
        data = bytearray(original.read_bytes())
        data[position] ^= 0xFF
        copy.write_bytes(bytes(data))
        assert base.FileSource(copy).identity() != identity, position
