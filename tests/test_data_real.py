"""GENKI-4K and UTKFace read from the real archives in ../shared/data (skipped where absent)."""
import logging

import numpy as np
import pytest

from conftest import require_shared_file
from minimtl.data import GENKI4K, UTKFace, CentreCrop, FileSource, MultiTaskDataset

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def genki_tar():
    return require_shared_file("data/genki4k.tar")


@pytest.fixture(scope="module")
def utkface_tar():
    return require_shared_file("data/UTKFace.tar.gz")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data-root")


@pytest.fixture(scope="module")
def genki(genki_tar, data_root):
    return GENKI4K(genki_tar, root=data_root, crop=CentreCrop(), progress=False)


def test_genki_labels_from_the_tar(genki_tar):
    dataset = GENKI4K(genki_tar, load_images=False)
    assert len(dataset) == 4000 and dataset.images is None
    assert dataset.class_counts()["smile"].tolist() == [1838, 2162]
    assert dataset.names[0] == "genki4k/files/file0001.jpg" and dataset.names[-1] == "genki4k/files/file4000.jpg"
    assert dataset.pose.shape == (4000, 3) and np.abs(dataset.pose).max() < np.pi
    with pytest.raises(RuntimeError, match="load_images=False"):
        dataset[0]


def test_genki_images_and_cache(genki, genki_tar, data_root, monkeypatch):
    assert genki.images.shape == (4000, 48, 48) and genki.images.dtype == np.uint8
    assert genki.rejected == []
    assert genki.images.std() > 20  # real photos, not blank
    cached = list((data_root / "cache").glob("GENKI-4K-centre-crop-48-1*.npz"))
    assert len(cached) == 1
    def no_decoding(data):
        raise AssertionError("a JPEG was decoded: the second build should read the cache")

    # From the cache, no JPEG decoded (a check by what runs, not by how long it takes: under load a timing can fail)
    monkeypatch.setattr("minimtl.data.base.decode_image", no_decoding)
    again = GENKI4K(genki_tar, root=data_root, crop=CentreCrop(), progress=False)
    np.testing.assert_array_equal(again.images, genki.images)
    other = GENKI4K(genki_tar, root=data_root, progress=False, crop=CentreCrop(fraction=0.8), load_images=False)
    assert len(other) == 4000  # labels only: no second cache written
    assert len(list((data_root / "cache").glob("*.npz"))) == 1


def test_genki_paper_split_is_disjoint_and_balanced(genki):
    train, test = genki.paper_split(seed=0)
    assert len(train) == 3000 and len(test) == 1000
    assert not set(train.names) & set(test.names)
    train_keys = {image.tobytes() for image in train.images}
    assert not any(image.tobytes() in train_keys for image in test.images)
    assert 0.45 < test.labels["smile"].mean() < 0.63  # about the 54 % smiling of the whole set
    again_train, _ = genki.paper_split(seed=0)
    np.testing.assert_array_equal(again_train.names, train.names)
    other_train, _ = genki.paper_split(seed=1)
    assert set(other_train.names) != set(train.names)


def test_utkface_labels_from_the_tar(utkface_tar, caplog, monkeypatch):
    from minimtl.archives import FileSource

    def no_image_read(*_, **__):
        raise AssertionError("labels alone must come from the names, without reading an image")

    with monkeypatch.context() as patched:  # what makes load_images=False fast: no member is read or decoded
        for method in ("read", "read_each", "iterate"):
            patched.setattr(FileSource, method, no_image_read)
        with caplog.at_level(logging.WARNING, logger="minimtl.data"):
            dataset = UTKFace(utkface_tar, load_images=False)
    counts = dataset.class_counts()
    assert len(dataset) == 23705
    assert counts["age"].tolist() == [3828, 3809, 7470, 2987, 3216, 2395]
    assert counts["gender"].tolist() == [12391, 11314]
    assert dataset.ages.min() == 1 and dataset.ages.max() == 116
    # the three names without a race field are reported, not guessed
    assert sorted(name.split("/")[-1] for name, _ in dataset.rejected) == [
        "39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg",
        "61_1_20170109150557335.jpg.chip.jpg"]
    assert "left out 3 images" in caplog.text and dataset.images is None
    lenient = UTKFace(utkface_tar, load_images=False, allow_missing_race=True)
    assert len(lenient) == 23708 and lenient.rejected == []
    assert (lenient.races == -1).sum() == 3


def test_file_source_reads_one_member(genki_tar):
    source = FileSource(genki_tar)
    assert source.read("genki4k/labels.txt").startswith(b"1 ")
    assert len(source.identity()) == 16


@pytest.mark.slow
def test_utkface_images_cache_and_merge(utkface_tar, genki, data_root, monkeypatch):
    utkface = UTKFace(utkface_tar, root=data_root, crop=CentreCrop(), progress=False)
    assert utkface.images.shape == (23705, 48, 48) and len(utkface.rejected) == 3

    def no_decoding(data):
        raise AssertionError("a JPEG was decoded: the second build should read the cache")

    monkeypatch.setattr("minimtl.data.base.decode_image", no_decoding)  # the second build reads the cache
    again = UTKFace(utkface_tar, root=data_root, crop=CentreCrop(), progress=False)
    np.testing.assert_array_equal(again.images, utkface.images)
    monkeypatch.undo()
    merged = MultiTaskDataset([genki, utkface])
    train, test = merged.split(seed=0)
    assert len(test.datasets[0]) == 1000 and len(train.datasets[0]) == 3000
    assert abs(len(test.datasets[1]) - 0.2 * 23705) < 50
    for part_train, part_test in zip(train.datasets, test.datasets):
        assert not set(part_train.names) & set(part_test.names)
        keys = {image.tobytes() for image in part_train.images}
        assert not any(image.tobytes() in keys for image in part_test.images)
    counts = merged.class_counts()
    assert counts["smile"].tolist() == [1838, 2162]
    assert counts["age"].tolist() == [3828, 3809, 7470, 2987, 3216, 2395]
    assert merged.masks["smile"].sum() == 4000 and merged.masks["age"].sum() == 23705
