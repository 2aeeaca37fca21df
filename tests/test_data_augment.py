"""Augmentation (Section 3.1): keeps shape, dtype, range and labels; reproducible from its seed."""
import numpy as np
import pytest

from minimtl.data import Augment, DataLoader, MultiTaskDataset, SyntheticFaces, random_crop, random_flip, random_rotation

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def faces():
    return SyntheticFaces(64, seed=3)


def test_flip_mirrors_exactly_the_chosen_images():
    images = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    flipped = random_flip(images, np.random.default_rng(0), probability=1.0)
    np.testing.assert_array_equal(flipped, images[:, :, ::-1])
    np.testing.assert_array_equal(random_flip(images, np.random.default_rng(0), probability=0.0), images)
    assert flipped is not images


def test_crop_is_a_shifted_window_of_the_padded_image():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 10, 12), dtype=np.uint8)
    cropped = random_crop(images, np.random.default_rng(7), padding=3)
    padded = np.pad(images, ((0, 0), (3, 3), (3, 3)), mode="reflect")
    draw = np.random.default_rng(7)
    tops, lefts = draw.integers(0, 7, size=6), draw.integers(0, 7, size=6)
    for i in range(6):  # reference: slice each image one by one
        np.testing.assert_array_equal(cropped[i], padded[i, tops[i]:tops[i] + 10, lefts[i]:lefts[i] + 12])


def test_rotation_by_zero_is_identity_and_keeps_range():
    images = np.random.default_rng(2).random((5, 48, 48)).astype(np.float32)
    np.testing.assert_allclose(random_rotation(images, np.random.default_rng(0), max_degrees=0), images, atol=1e-6)
    rotated = random_rotation(images, np.random.default_rng(0), max_degrees=30)
    assert rotated.dtype == np.float32 and rotated.min() >= images.min() - 1e-6 and rotated.max() <= images.max() + 1e-6
    assert not np.allclose(rotated, images)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_augment_keeps_shape_dtype_and_range(faces, dtype):
    images = faces.images.astype(dtype)
    if dtype != np.uint8:
        images = images / 255
    out = Augment(seed=0)(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= images.min() and out.max() <= images.max()
    assert not np.array_equal(out, images)


def test_augment_is_reproducible_from_its_seed(faces):
    first = Augment(seed=11)(faces.images)
    np.testing.assert_array_equal(first, Augment(seed=11)(faces.images))
    assert not np.array_equal(first, Augment(seed=12)(faces.images))


def test_a_flipped_smiling_face_is_still_smiling():
    """Labels come through the augmenting loader untouched, beside exactly mirrored images."""
    smiling = SyntheticFaces(32, seed=5, tasks=("smile",))
    data = MultiTaskDataset([smiling])
    batch = next(iter(DataLoader(data, 32, shuffle=False, augment=Augment(padding=0, flip_probability=1.0,
                                                                          max_degrees=0, seed=0))))
    np.testing.assert_array_equal(batch.labels["smile"], smiling.labels["smile"])
    mirrored = (batch.images[:, 0] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(mirrored, smiling.images[:, :, ::-1])


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        random_flip(np.zeros((48, 48), np.uint8), np.random.default_rng(0))
    with pytest.raises(TypeError, match="uint8 or float"):
        random_crop(np.zeros((1, 8, 8), np.int32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="flip_probability"):
        Augment(flip_probability=2)
