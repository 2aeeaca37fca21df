"""MTCNN on minimtl's layers against an independent NumPy/SciPy reference, and on real photos.

The reference below reads the weights in their *Keras* layout straight from
``mtcnn.npz`` and follows Keras semantics (NHWC tensors, TensorFlow "same"
max-pooling, ``Permute((2, 1, 3))`` before the first dense layer), using
``scipy.signal.correlate`` for convolution.  It shares no code with minimtl's
conv2d, pooling or with ``keras_to_minimtl``, so it also checks the weight
rearrangement.
"""
import math
import tarfile

import cv2
import numpy as np
import pytest
from scipy.signal import correlate

from minimtl.autograd import Tensor, no_grad
from minimtl.faces.mtcnn import MTCNN, WEIGHTS_PATH, load_networks, pyramid_scales

from conftest import require_shared_file

pytestmark = pytest.mark.faces


# ---------------------------------------------------------------- reference
def reference_conv(x, kernel, bias):
    """NHWC valid cross-correlation: x (N, H, W, C), kernel (KH, KW, C, F) → (N, OH, OW, F)."""
    n, h, w, _ = x.shape
    kh, kw, _, f = kernel.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, f))
    for i in range(n):
        for j in range(f):
            out[i, :, :, j] = correlate(x[i], kernel[:, :, :, j], mode="valid")[:, :, 0] + bias[j]
    return out


def reference_prelu(x, alpha):
    return np.where(x > 0, x, np.reshape(alpha, (-1,)) * x)


def reference_max_pool(x, size, stride, padding):
    """TensorFlow max-pooling on NHWC; "same" pads -inf, the odd pixel at the end."""
    n, h, w, c = x.shape
    if padding == "same":
        out_h, out_w = math.ceil(h / stride), math.ceil(w / stride)
        pad_h, pad_w = max((out_h - 1) * stride + size - h, 0), max((out_w - 1) * stride + size - w, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
                   constant_values=-np.inf)
    else:
        out_h, out_w = (h - size) // stride + 1, (w - size) // stride + 1
    out = np.empty((n, out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j, :] = x[:, i * stride:i * stride + size, j * stride:j * stride + size, :].max(axis=(1, 2))
    return out


def reference_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def keras_weights():
    with np.load(WEIGHTS_PATH) as archive:
        return {k: archive[k].astype(np.float64) for k in archive.files}


@pytest.fixture(scope="module")
def networks():
    return load_networks()


def block(x, w, name, pool=None):
    """conv → PReLU (→ max-pool) for ``name`` like ``"pnet/1"``: layers ``pnet/conv1`` and ``pnet/prelu1``."""
    network, number = name.split("/")
    x = reference_conv(x, w[f"{network}/conv{number}/kernel"], w[f"{network}/conv{number}/bias"])
    x = reference_prelu(x, w[f"{network}/prelu{number}/alpha"])
    return reference_max_pool(x, *pool) if pool else x


def reference_pnet(x, w):
    x = block(x, w, "pnet/1", (2, 2, "same"))
    x = block(x, w, "pnet/2")
    x = block(x, w, "pnet/3")
    offsets = reference_conv(x, w["pnet/conv4_1/kernel"], w["pnet/conv4_1/bias"])
    return offsets, reference_softmax(reference_conv(x, w["pnet/conv4_2/kernel"], w["pnet/conv4_2/bias"]))


def reference_dense(x, w, name):
    return x @ w[f"{name}/kernel"] + w[f"{name}/bias"]


def reference_rnet(x, w):
    x = block(x, w, "rnet/1", (3, 2, "same"))
    x = block(x, w, "rnet/2", (3, 2, "valid"))
    x = block(x, w, "rnet/3")
    x = x.transpose(0, 2, 1, 3).reshape(len(x), -1)  # Keras: Permute((2, 1, 3)) then Flatten
    x = reference_prelu(reference_dense(x, w, "rnet/fc4"), w["rnet/prelu4/alpha"])
    return reference_dense(x, w, "rnet/fc5_1"), reference_softmax(reference_dense(x, w, "rnet/fc5_2"))


def reference_onet(x, w):
    x = block(x, w, "onet/1", (3, 2, "same"))
    x = block(x, w, "onet/2", (3, 2, "valid"))
    x = block(x, w, "onet/3", (2, 2, "same"))
    x = block(x, w, "onet/4")
    x = x.transpose(0, 2, 1, 3).reshape(len(x), -1)
    x = reference_prelu(reference_dense(x, w, "onet/fc5"), w["onet/prelu5/alpha"])
    return (reference_dense(x, w, "onet/fc6_1"), reference_dense(x, w, "onet/fc6_2"),
            reference_softmax(reference_dense(x, w, "onet/fc6_3")))


def run(network, nhwc):
    with no_grad():
        outputs = network(Tensor(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)).astype(np.float32)))
    return [o.data for o in outputs]


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("height, width", [(12, 12), (31, 37), (50, 23)])
def test_pnet_matches_reference(networks, keras_weights, height, width):
    x = np.random.default_rng(height).uniform(-1, 1, (2, height, width, 3))
    offsets, probability = run(networks[0], x)
    expected_offsets, expected_probability = reference_pnet(x, keras_weights)
    np.testing.assert_allclose(offsets, expected_offsets.transpose(0, 3, 1, 2), atol=1e-4)
    np.testing.assert_allclose(probability, expected_probability.transpose(0, 3, 1, 2), atol=1e-4)


def test_rnet_matches_reference(networks, keras_weights):
    x = np.random.default_rng(1).uniform(-1, 1, (3, 24, 24, 3))
    for got, expected in zip(run(networks[1], x), reference_rnet(x, keras_weights)):
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_onet_matches_reference(networks, keras_weights):
    x = np.random.default_rng(2).uniform(-1, 1, (3, 48, 48, 3))
    for got, expected in zip(run(networks[2], x), reference_onet(x, keras_weights)):
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_networks_agree_on_a_real_face_crop(networks, keras_weights):
    """Random inputs give near-0.5 probabilities; a real face exercises the saturated end too."""
    path = require_shared_file("data/genki4k.tar")
    with tarfile.open(path) as archive:
        data = archive.extractfile("genki4k/files/file0001.jpg").read()
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    face = (cv2.resize(rgb[52:150, 50:134], (48, 48), interpolation=cv2.INTER_AREA) - 127.5) / 128
    got = run(networks[2], face[None])
    expected = reference_onet(face[None].astype(np.float64), keras_weights)
    assert expected[2][0, 1] > 0.9, "the reference O-Net should call this crop a face"
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-4)


def test_pyramid_scales_cover_min_face_to_whole_image():
    scales = pyramid_scales(200, 300, min_face_size=20, scale_factor=0.709)
    assert scales[0] == pytest.approx(12 / 20)
    assert all(b / a == pytest.approx(0.709) for a, b in zip(scales, scales[1:]))
    assert 200 * scales[-1] >= 12 > 200 * scales[-1] * 0.709
    assert pyramid_scales(11, 400, 20, 0.709) == []


def test_mtcnn_rejects_bad_settings_and_images():
    with pytest.raises(ValueError, match="min_face_size"):
        MTCNN(min_face_size=5)
    with pytest.raises(ValueError, match="scale_factor"):
        MTCNN(scale_factor=1.5)
    detector = MTCNN()
    with pytest.raises(TypeError, match="uint8"):
        detector.detect(np.zeros((40, 40, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detector.detect(np.zeros((40, 40), np.uint8))


def test_mtcnn_finds_nothing_in_a_blank_image():
    detections = MTCNN().detect(np.full((120, 160, 3), 128, np.uint8))
    assert len(detections) == 0 and detections.landmarks.shape == (0, 5, 2)


@pytest.fixture(scope="module")
def genki_sample():
    """Every 200th GENKI-4K photo (20 images) as BGR arrays."""
    path = require_shared_file("data/genki4k.tar")
    images = {}
    with tarfile.open(path) as archive:
        for number in range(1, 4001, 200):
            data = archive.extractfile(f"genki4k/files/file{number:04d}.jpg").read()
            images[number] = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return images


def test_mtcnn_finds_faces_in_genki_sample(genki_sample):
    detector = MTCNN()
    found = 0
    for image in genki_sample.values():
        detections = detector.detect(image)
        if len(detections):
            found += 1
            box, points = detections.boxes[0], detections.landmarks[0]
            height, width = image.shape[:2]
            assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
            # landmarks lie in the box, eyes above the nose above the mouth, left eye left of the right one
            assert np.all((points[:, 0] > box[0] - 2) & (points[:, 0] < box[2] + 2))
            assert points[0, 0] < points[1, 0]
            assert max(points[0, 1], points[1, 1]) < points[2, 1] < min(points[3, 1], points[4, 1])
    assert found >= 19, f"MTCNN found a face in only {found} of {len(genki_sample)} GENKI photos"


def test_boxes_are_in_original_pixels_after_shrinking(genki_sample):
    image = genki_sample[1]
    small = MTCNN().detect(image)
    big_image = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    big = MTCNN(max_side=image.shape[0]).detect(big_image)  # shrunk back to the original size inside
    assert len(small) == len(big) == 1
    # The shrunk copy is not pixel-identical to the original (cubic up, area down), so allow a few pixels.
    np.testing.assert_allclose(big.boxes[0] / 4, small.boxes[0], atol=6)
    np.testing.assert_allclose(big.landmarks[0] / 4, small.landmarks[0], atol=5)
