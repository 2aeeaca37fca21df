"""examples/predict.py on real GENKI-4K photos, a folder, and a video (with an untrained model: the pipeline, not accuracy)."""
import tarfile

import cv2
import numpy as np
import pytest

from conftest import require_shared_file
from minimtl.train import TrainConfig, build_model, save_model
from test_examples import load_example

pytestmark = [pytest.mark.train, pytest.mark.faces]


@pytest.fixture(scope="module")
def genki_photos(tmp_path_factory):
    archive = require_shared_file("data/genki4k.tar")
    folder = tmp_path_factory.mktemp("photos")
    with tarfile.open(archive) as tar:
        for number in (1, 2, 3):
            data = tar.extractfile(f"genki4k/files/file{number:04d}.jpg").read()
            (folder / f"file{number:04d}.jpg").write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    config = TrainConfig(config="C", seed=0)
    return save_model(build_model(config), config, tmp_path_factory.mktemp("model") / "model.npz")


def test_predict_labels_every_face_in_a_folder(genki_photos, weights, tmp_path, capsys):
    predict = load_example("predict")
    predict.main([str(genki_photos), "--weights", str(weights), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("file000")]
    assert len(rows) >= 3 and all("%)" in row for row in rows)  # one row per face with probabilities
    assert "frames per second" in out
    for number in (1, 2, 3):
        labelled = cv2.imread(str(tmp_path / f"file{number:04d}_labelled.png"))
        original = cv2.imread(str(genki_photos / f"file{number:04d}.jpg"))
        assert labelled.shape == original.shape and not np.array_equal(labelled, original)  # boxes drawn


def test_predict_on_a_video(genki_photos, weights, tmp_path, capsys):
    frame = cv2.imread(str(genki_photos / "file0001.jpg"))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (frame.shape[1], frame.shape[0]))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    predict = load_example("predict")
    predict.main([str(video), "--weights", str(weights), "--out", str(tmp_path / "labelled.avi")])
    assert "3 frames" in capsys.readouterr().out
    capture = cv2.VideoCapture(str(tmp_path / "labelled.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_predict_refuses_weights_that_are_not_a_model(tmp_path, genki_photos):
    np.savez(tmp_path / "other.npz", w=np.zeros(2))
    predict = load_example("predict")
    with pytest.raises(ValueError, match="__config__"):
        predict.main([str(genki_photos), "--weights", str(tmp_path / "other.npz")])
