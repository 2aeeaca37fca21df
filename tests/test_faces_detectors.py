"""YuNet and res10 behind the detector interface; finding and downloading their model files.

Downloads are tested against a threaded ``http.server`` on 127.0.0.1 serving
../shared/weights: nothing here reaches the internet.
"""
import functools
import http.server
import tarfile
import threading
import types

import cv2
import numpy as np
import pytest

import minimtl.faces.opencv_detectors as opencv_detectors
from minimtl.download import ChecksumError, DownloadError
from minimtl.faces import DETECTOR_NAMES, Detections, detect, get_detector, non_maximum_suppression, overlap
from minimtl.faces.boxes import square_boxes
from minimtl.faces.opencv_detectors import (
    RES10_PROTOTXT, RES10_WEIGHTS, YUNET, ModelFile, Res10Detector, YuNetDetector, model_path, require_caffe_importer)

from conftest import require_shared_file

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def weights_dir(shared_dir):
    folder = shared_dir / "weights"
    if not (folder / YUNET.filename).is_file():
        pytest.skip(f"detector models not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def genki_images():
    with tarfile.open(require_shared_file("data/genki4k.tar")) as archive:
        return [cv2.imdecode(np.frombuffer(archive.extractfile(f"genki4k/files/file{n:04d}.jpg").read(), np.uint8),
                             cv2.IMREAD_COLOR) for n in range(7, 4001, 400)]


# ------------------------------------------------------------------------- boxes
def test_overlap_known_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
    np.testing.assert_allclose(overlap(a, b), [[50 / 150, 0, 25 / 100]])
    np.testing.assert_allclose(overlap(a, b, "min"), [[0.5, 0, 1.0]])
    with pytest.raises(ValueError, match="union"):
        overlap(a, b, "max")


def test_non_maximum_suppression_matches_a_brute_force_loop():
    rng = np.random.default_rng(0)
    for _ in range(20):
        corners = rng.uniform(0, 100, (30, 2))
        boxes = np.column_stack([corners, corners + rng.uniform(5, 40, (30, 2))])
        scores = rng.uniform(size=30)
        expected, alive = [], list(np.argsort(-scores))
        while alive:  # the textbook loop, one pair at a time
            best = alive.pop(0)
            expected.append(best)
            alive = [i for i in alive if overlap(boxes[best:best + 1], boxes[i:i + 1])[0, 0] <= 0.4]
        np.testing.assert_array_equal(non_maximum_suppression(boxes, scores, 0.4), expected)


def test_square_boxes_keep_the_centre():
    squared = square_boxes(np.array([[10, 20, 30, 80]]))
    np.testing.assert_allclose(squared, [[-10, 20, 50, 80]])


def test_detections_validate_their_shapes():
    with pytest.raises(ValueError, match="scores"):
        Detections(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="landmark"):
        Detections(np.zeros((2, 4)), np.zeros(2), np.zeros((1, 5, 2)))


# --------------------------------------------------------------------- detectors
def test_get_detector_refuses_unknown_names():
    assert DETECTOR_NAMES == ("mtcnn", "yunet", "res10")
    with pytest.raises(ValueError, match="unknown face detector 'dlib'"):
        get_detector("dlib")
    with pytest.raises(TypeError):
        get_detector(3)


def test_yunet_finds_genki_faces_with_landmarks(weights_dir, genki_images):
    detector = YuNetDetector(weights_dir / YUNET.filename)
    found = [detector.detect(image) for image in genki_images]
    assert sum(len(d) > 0 for d in found) >= len(genki_images) - 1
    for detections in found:
        if len(detections):
            points = detections.landmarks[0]
            assert points[0, 0] < points[1, 0] and points[0, 1] < points[3, 1]  # image-left eye first, eyes above mouth


def test_yunet_and_mtcnn_boxes_overlap(weights_dir, genki_images, monkeypatch):
    monkeypatch.setenv("MINIMTL_WEIGHTS", str(weights_dir))
    agree = both = 0
    for image in genki_images:
        ours, theirs = detect(image, "mtcnn"), detect(image, "yunet", allow_download=False)
        if len(ours) == 1 and len(theirs) == 1:
            both += 1
            agree += overlap(ours.boxes, theirs.boxes)[0, 0] >= 0.5
    assert both >= 8 and agree == both


def test_res10_finds_genki_faces_without_landmarks(weights_dir, genki_images):
    detector = Res10Detector(weights_dir / RES10_WEIGHTS.filename, weights_dir / RES10_PROTOTXT.filename)
    found = [detector.detect(image) for image in genki_images]
    assert sum(len(d) > 0 for d in found) >= len(genki_images) - 1
    assert all(d.landmarks is None for d in found)
    assert "res10" in detector.settings


def test_res10_on_opencv_5_says_it_needs_opencv_4(monkeypatch):
    without_caffe = types.SimpleNamespace(**{k: v for k, v in vars(cv2.dnn).items() if k != "readNetFromCaffe"})
    with pytest.raises(RuntimeError, match=r"needs OpenCV 4\.x"):
        require_caffe_importer(without_caffe)
    monkeypatch.setattr(cv2, "dnn", without_caffe)
    with pytest.raises(RuntimeError, match=r"res10 face detector needs OpenCV 4\.x.*readNetFromCaffe"):
        Res10Detector(allow_download=False)


# ----------------------------------------------------------------- finding files
def test_model_path_order_explicit_then_environment_then_cache(weights_dir, tmp_path, monkeypatch):
    explicit = tmp_path / "mine.onnx"
    explicit.write_bytes(b"anything: an explicit path is trusted")
    monkeypatch.setenv("MINIMTL_WEIGHTS", str(weights_dir))
    assert model_path(YUNET, explicit) == explicit
    assert model_path(YUNET, cache_dir=tmp_path / "cache") == weights_dir / YUNET.filename
    monkeypatch.delenv("MINIMTL_WEIGHTS")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / YUNET.filename).write_bytes((weights_dir / YUNET.filename).read_bytes())
    assert model_path(YUNET, cache_dir=cache, allow_download=False) == cache / YUNET.filename
    with pytest.raises(FileNotFoundError, match="given path"):
        model_path(YUNET, tmp_path / "missing.onnx")


def test_without_download_a_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIMTL_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="MINIMTL_WEIGHTS"):
        model_path(YUNET, cache_dir=tmp_path, allow_download=False)


class _Handler(http.server.SimpleHTTPRequestHandler):
    cut_after: int | None = None  # send only this many bytes of the body, then drop the connection

    def log_message(self, *args):
        pass

    def copyfile(self, source, destination):
        if self.cut_after is None:
            return super().copyfile(source, destination)
        destination.write(source.read(self.cut_after))
        self.close_connection = True


@pytest.fixture()
def server(weights_dir):
    """A threaded HTTP server on 127.0.0.1 serving ../shared/weights; yields (base_url, handler_class)."""
    handler = type("Handler", (_Handler,), {"cut_after": None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(weights_dir)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def local(model: ModelFile, base: str, **changes) -> ModelFile:
    fields = {"filename": model.filename, "url": f"{base}/{model.filename}", "sha256": model.sha256, "sha1": model.sha1}
    fields.update(changes)
    return ModelFile(**fields)


def test_download_stores_a_verified_file_and_the_detector_uses_it(server, tmp_path, monkeypatch, weights_dir):
    base, _ = server
    monkeypatch.delenv("MINIMTL_WEIGHTS", raising=False)
    monkeypatch.setattr(opencv_detectors, "YUNET", local(YUNET, base))
    cache = tmp_path / "cache"
    detector = YuNetDetector(cache_dir=cache)
    assert detector.model == cache / YUNET.filename
    assert detector.model.read_bytes() == (weights_dir / YUNET.filename).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [YUNET.filename]


def test_res10_download_checks_sha1(server, tmp_path, monkeypatch):
    base, _ = server
    monkeypatch.delenv("MINIMTL_WEIGHTS", raising=False)
    path = model_path(local(RES10_WEIGHTS, base), cache_dir=tmp_path, progress=False)
    assert path.stat().st_size > 10_000_000


def test_wrong_checksum_is_refused_and_leaves_nothing(server, tmp_path, monkeypatch):
    base, _ = server
    monkeypatch.delenv("MINIMTL_WEIGHTS", raising=False)
    wrong = local(YUNET, base, sha256="0" * 64)
    with pytest.raises(ChecksumError):
        model_path(wrong, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_leaves_no_file_in_place(server, tmp_path, monkeypatch):
    base, handler = server
    handler.cut_after = 50_000
    monkeypatch.delenv("MINIMTL_WEIGHTS", raising=False)
    with pytest.raises(DownloadError):
        model_path(local(YUNET, base), cache_dir=tmp_path, progress=False)
    assert not (tmp_path / YUNET.filename).exists()
    # a later complete transfer resumes or restarts and ends verified
    handler.cut_after = None
    assert model_path(local(YUNET, base), cache_dir=tmp_path, progress=False).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [YUNET.filename]


def test_damaged_cached_copy_is_downloaded_again(server, tmp_path, monkeypatch, weights_dir):
    base, _ = server
    monkeypatch.delenv("MINIMTL_WEIGHTS", raising=False)
    (tmp_path / YUNET.filename).write_bytes(b"damaged")
    path = model_path(local(YUNET, base), cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == (weights_dir / YUNET.filename).read_bytes()
