"""MultiTaskDataset (labels and masks, Equation 1's β), DataLoader batches, and the synthetic set."""
import logging
import time

import numpy as np
import pytest

from minimtl.data import Augment, DataLoader, FaceDataset, MultiTaskDataset, SyntheticFaces, batches

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def two_sources():
    """Imitates the paper: a smile-only set and a larger gender/age set."""
    return SyntheticFaces(40, seed=1, tasks=("smile",)), SyntheticFaces(100, seed=2, tasks=("gender", "age"))


def test_merged_labels_and_masks(two_sources):
    smile, gender_age = two_sources
    merged = MultiTaskDataset([smile, gender_age])
    assert len(merged) == 140 and merged.synthetic
    np.testing.assert_array_equal(merged.labels["smile"][:40], smile.labels["smile"])
    assert (merged.labels["smile"][40:] == -1).all() and (merged.masks["smile"][40:] == 0).all()
    assert (merged.masks["smile"][:40] == 1).all() and merged.masks["smile"].dtype == np.float32
    assert (merged.labels["age"][:40] == -1).all()
    np.testing.assert_array_equal(merged.labels["age"][40:], gender_age.labels["age"])
    image, labels, masks = merged[45]
    assert image.shape == (48, 48) and labels["smile"] == -1 and masks == {"smile": 0.0, "gender": 1.0, "age": 1.0}
    counts = merged.class_counts()
    assert counts["smile"].sum() == 40 and counts["age"].sum() == 100 and len(counts["age"]) == 6
    assert "smile" in merged.summary() and "SYNTHETIC" in merged.summary()


def test_split_is_per_dataset_and_disjoint(two_sources):
    train, test = MultiTaskDataset(list(two_sources)).split({two_sources[0].name: 10, two_sources[1].name: 0.25})
    assert [len(d) for d in test.datasets] == [10, 25] and [len(d) for d in train.datasets] == [30, 75]
    for a, b in zip(train.datasets, test.datasets):
        assert not set(a.names) & set(b.names)


def test_split_keeps_duplicate_images_on_one_side():
    faces = SyntheticFaces(30, seed=4)
    doubled = FaceDataset(np.concatenate([faces.names, [n + "-copy" for n in faces.names]]),
                          {t: np.concatenate([v, v]) for t, v in faces.labels.items()},
                          np.concatenate([faces.images, faces.images]))
    train, test = doubled.split(0.3, seed=0)
    train_keys = {image.tobytes() for image in train.images}
    assert not any(image.tobytes() in train_keys for image in test.images)
    assert len(test) % 2 == 0 and len(train) + len(test) == 60


def test_split_holds_out_the_same_names_whatever_the_pixels():
    """The held-out images follow from their names and the seed: another face framing (other pixels, in
    another order) holds out the same photos, and one image more moves no other image across."""
    faces = SyntheticFaces(200, seed=5)
    train, test = faces.split(50, seed=3)
    reframed_order = np.random.default_rng(0).permutation(len(faces))
    reframed = FaceDataset(faces.names[reframed_order], {t: v[reframed_order] for t, v in faces.labels.items()},
                           255 - faces.images[reframed_order])
    assert set(reframed.split(50, seed=3)[1].names) == set(test.names)
    assert set(faces.split(50, seed=4)[1].names) != set(test.names)
    extra = SyntheticFaces(1, seed=9)
    grown = FaceDataset(np.concatenate([faces.names, ["one-more"]]),
                        {t: np.concatenate([v, extra.labels[t]]) for t, v in faces.labels.items()},
                        np.concatenate([faces.images, extra.images]))
    grown_test = set(grown.split(50, seed=3)[1].names) - {"one-more"}
    assert len(grown_test ^ set(test.names)) <= 1


def test_batches_have_the_promised_arrays(two_sources):
    merged = MultiTaskDataset(list(two_sources))
    loader = DataLoader(merged, 32, augment=Augment(seed=0), seed=0)
    seen = []
    for images, labels, masks in loader:
        assert images.dtype == np.float32 and images.shape[1:] == (1, 48, 48) and 0 <= images.min() <= images.max() <= 1
        assert set(labels) == set(masks) == {"smile", "gender", "age"}
        for task in labels:
            assert labels[task].dtype == np.int64 and masks[task].dtype == np.float32
            np.testing.assert_array_equal(masks[task] == 0, labels[task] == -1)
        seen.append(len(images))
    assert seen == [32, 32, 32, 32, 12] and len(loader) == 5


def test_shuffle_reproducible_and_eval_order(two_sources):
    merged = MultiTaskDataset(list(two_sources))
    first = [b.labels["age"] for b in DataLoader(merged, 50, seed=3)]
    again = [b.labels["age"] for b in DataLoader(merged, 50, seed=3)]
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    ordered = next(iter(DataLoader(merged, 140, shuffle=False)))
    np.testing.assert_array_equal(ordered.labels["age"], merged.labels["age"])
    np.testing.assert_array_equal((ordered.images[:, 0] * 255).round(), merged.images)
    loader = DataLoader(merged, 50, seed=3)
    epoch1, epoch2 = [b.labels["age"] for b in loader], [b.labels["age"] for b in loader]
    assert not all(np.array_equal(x, y) for x, y in zip(epoch1, epoch2))
    assert len(list(batches(merged, 64, drop_last=True))) == 2


def test_balanced_batches_repeat_the_smaller_set(two_sources):
    merged = MultiTaskDataset(list(two_sources))
    loader = DataLoader(merged, 20, balance_datasets=True, seed=0)
    batches_seen = list(loader)
    assert len(batches_seen) == len(loader) == 10  # 100 of the larger set x 2 sets / 20
    for batch in batches_seen:
        assert batch.masks["smile"].sum() == 10  # half of each batch from each set
    smile_images = np.concatenate([b.images[b.masks["smile"] > 0] for b in batches_seen])
    assert len({image.tobytes() for image in smile_images}) == 40  # every smile image used, repeated


def test_loader_says_synthetic(two_sources, caplog):
    with caplog.at_level(logging.WARNING, logger="minimtl.data"):
        DataLoader(MultiTaskDataset(list(two_sources)), 8)
    assert "SYNTHETIC" in caplog.text


def test_synthetic_is_seeded_and_says_so():
    a, b = SyntheticFaces(16, seed=9), SyntheticFaces(16, seed=9)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, SyntheticFaces(16, seed=10).images)
    assert a.synthetic and "SYNTHETIC" in a.name and "SYNTHETIC" in repr(a)
    with pytest.raises(ValueError, match="tasks"):
        SyntheticFaces(4, tasks=("mood",))


def test_synthetic_cues_are_visible():
    """Smiling and non-smiling faces differ in the mouth region on average: the labels match the drawings."""
    faces = SyntheticFaces(400, seed=0)
    mouth = faces.images[:, 30:44, 14:34].astype(float)
    gap = mouth[faces.labels["smile"] == 1].mean(axis=0) - mouth[faces.labels["smile"] == 0].mean(axis=0)
    assert np.abs(gap).max() > 25


def test_bad_loader_arguments(two_sources):
    merged = MultiTaskDataset(list(two_sources))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(merged, 0)
    with pytest.raises(TypeError, match="MultiTaskDataset"):
        DataLoader(two_sources[0], 8)
    with pytest.raises(ValueError, match="unknown tasks"):
        MultiTaskDataset(list(two_sources), tasks=("smile", "mood"))


def test_loader_throughput_is_far_below_a_training_step():
    data = MultiTaskDataset([SyntheticFaces(1024, seed=0)])
    loader = DataLoader(data, 128, augment=Augment(seed=0))
    started = time.perf_counter()
    count = sum(1 for _ in loader)
    per_batch = (time.perf_counter() - started) / count
    assert per_batch < 0.1  # a training step takes about 1 s
