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


# ------------------------------------------------------------- bad input: one line and an exit code
def run_predict(argv, capsys) -> tuple[int, str, str]:
    from minimtl import cli

    code = cli.run(load_example("predict").main, argv, prog="predict.py")
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_nan_weights_are_refused_rather_than_printed_as_nan_percent(genki_photos, tmp_path, capsys):
    config = TrainConfig(config="C", seed=0)
    model = build_model(config)
    next(iter(model.parameters())).data[...] = np.nan
    path = save_model(model, config, tmp_path / "nan.npz")
    code, out, err = run_predict([str(genki_photos), "--weights", str(path), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and err.count("\n") == 1 and "NaN or infinite" in err, err
    assert "nan%" not in out and not (tmp_path / "o").exists()


def test_out_png_is_one_file_for_one_photo_and_refused_for_a_folder(genki_photos, weights, tmp_path, capsys):
    photo = genki_photos / "file0001.jpg"
    code, out, err = run_predict([str(photo), "--weights", str(weights), "--out", str(tmp_path / "x.png")], capsys)
    assert code == 0 and (tmp_path / "x.png").is_file() and cv2.imread(str(tmp_path / "x.png")) is not None
    code, out, err = run_predict([str(genki_photos), "--weights", str(weights), "--out", str(tmp_path / "y.png")],
                                 capsys)
    assert code == 2 and "names an image file" in err and not (tmp_path / "y.png").exists()
    code, out, err = run_predict([str(photo), "--weights", str(weights), "--out", str(tmp_path / "x.jpg")], capsys)
    assert code == 2 and ".png" in err


def _file(name: str, data: bytes):
    def make(folder):
        (folder / name).write_bytes(data)
        return folder / name
    return make


def _empty_folder(folder):
    (folder / "empty").mkdir()
    return folder / "empty"


@pytest.mark.parametrize("make, code, words", [
    (lambda folder: folder / "missing.jpg", 2, "does not exist"),
    (_empty_folder, 1, "holds no photos"),
    (_file("bad.jpg", b"\xff\xd8\xff\xe0 not really"), 1, "no photo could be read"),
    (_file("clip.mp4", b"\0" * 100), 1, "cannot open"),
])
def test_bad_sources_are_one_line(weights, tmp_path, capsys, make, code, words):
    source = make(tmp_path)
    out = tmp_path / ("o.avi" if source.suffix == ".mp4" else "o")
    got, out, err = run_predict([str(source), "--weights", str(weights), "--out", str(out)], capsys)
    assert got == code and err.count("\n") == 1 and words in err, err


def test_weights_that_are_a_pickle_or_truncated_are_one_line(genki_photos, weights, tmp_path, capsys):
    import pickle

    (tmp_path / "model.pt").write_bytes(pickle.dumps({"w": [1, 2]}))
    code, out, err = run_predict([str(genki_photos), "--weights", str(tmp_path / "model.pt")], capsys)
    assert code == 1 and "pickle" in err and "never loaded" in err
    (tmp_path / "cut.npz").write_bytes(weights.read_bytes()[:5000])
    code, out, err = run_predict([str(genki_photos), "--weights", str(tmp_path / "cut.npz")], capsys)
    assert code == 1 and "truncated or damaged" in err
    code, out, err = run_predict([str(genki_photos), "--weights", str(tmp_path / "none.npz")], capsys)
    assert code == 2 and "no such file" in err


def test_captions_of_a_crowded_photo_cover_no_other_caption_and_no_face():
    predict = load_example("predict")
    labels = {"smile": ("smiling", 0.91), "gender": ("female", 0.82), "age": ("26-35", 0.55)}
    for shape, boxes in (((480, 640, 3), [(20 + 60 * i, 100, 70 + 60 * i, 160) for i in range(10)]),
                         ((480, 600, 3), [(40 + 90 * i, 40 + 140 * j, 110 + 90 * i, 120 + 140 * j)
                                          for i in range(6) for j in range(3)]),
                         ((300, 300, 3), [(100, 100, 200, 200), (90, 60, 160, 110)])):
        faces = [dict(labels, box=box) for box in boxes]
        _, _, _, rectangles = predict.layout(shape, faces)
        things = rectangles + [(x1, y1, x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes]
        for i, a in enumerate(rectangles):
            assert 0 <= a[0] and a[0] + a[2] <= shape[1] and 0 <= a[1] and a[1] + a[3] <= shape[0]
            assert all(predict.overlap(a, b) == 0 for j, b in enumerate(things) if j != i), (i, a)


def test_a_file_name_that_is_not_utf8_prints_on_a_strict_terminal(genki_photos, weights, tmp_path):
    import os
    import subprocess
    import sys

    folder = tmp_path / "photos"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.jpg")
    (folder / name).write_bytes((genki_photos / "file0001.jpg").read_bytes())
    script = load_example("predict").__file__
    result = subprocess.run([sys.executable, script, str(folder), "--weights", str(weights), "--out",
                             str(tmp_path / "o")], capture_output=True,
                            env=dict(os.environ, PYTHONIOENCODING="utf-8:strict", LC_ALL="C.UTF-8"), timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"caf\\xe9.jpg" in result.stdout


def test_a_camera_that_is_not_there_is_one_line(weights, capsys):
    code, out, err = run_predict(["--camera", "57", "--weights", str(weights), "--quiet"], capsys)
    assert code == 1 and err.count("\n") == 1 and "no camera 57" in err, err
    code, out, err = run_predict(["--weights", str(weights)], capsys)  # neither a source nor a camera
    assert code == 2 and "--camera" in err
