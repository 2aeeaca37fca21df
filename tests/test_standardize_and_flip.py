"""Per-image standardisation before the trunk, and flip test-time augmentation: references, gradients, use."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimtl import functional as F
from minimtl.autograd import Tensor
from minimtl.gradcheck import gradcheck
from minimtl.models import BKNet
from minimtl.train import predict
from strategies import random_array

pytestmark = pytest.mark.layers


@settings(deadline=None, max_examples=20)
@given(st.sampled_from([(1, 1, 3, 3), (2, 1, 4, 5), (3, 2, 2, 3)]), st.integers(0, 2**16))
def test_standardize_images_against_numpy_and_gradient(shape, seed):
    x = random_array(shape, seed) * 5 + 3
    out = F.standardize_images(Tensor(x), eps=1e-3).data
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    reference = (x - mean) / np.sqrt(x.var(axis=(1, 2, 3), keepdims=True) + 1e-3)
    np.testing.assert_allclose(out, reference, rtol=1e-10, atol=1e-12)
    gradcheck(lambda t: F.standardize_images(t, eps=1e-3), [x], seed=seed)


def test_standardize_makes_brightness_and_contrast_irrelevant():
    rng = np.random.default_rng(0)
    faces = rng.uniform(0.2, 0.6, (2, 1, 48, 48)).astype(np.float32)
    model = BKNet("C", standardize=True, init="he", seed=0).eval()
    brighter = np.clip(faces * 1.5 + 0.1, 0, None).astype(np.float32)
    first, second = predict(model, faces), predict(model, brighter)
    for task in first:
        np.testing.assert_allclose(first[task], second[task], atol=2e-4)
    assert not np.allclose(predict(BKNet("C", init="he", seed=0), faces)["age"],
                           predict(BKNet("C", init="he", seed=0), brighter)["age"], atol=2e-4)


def test_flip_averages_a_face_and_its_mirror_image():
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    model = BKNet("C", init="he", seed=0)
    plain, mirrored = predict(model, faces), predict(model, np.ascontiguousarray(faces[:, :, ::-1]))
    both = predict(model, faces, flip=True)
    for task in plain:
        np.testing.assert_allclose(both[task], (plain[task] + mirrored[task]) / 2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(both[task].sum(1), 1, rtol=1e-5)
