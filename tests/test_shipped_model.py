"""The model that ships with the package: it loads, float16 changes nothing that matters, and it scores on a
fixed sample what its model card says."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from minimtl.models import SHIPPED_MODEL
from minimtl.train import load_model, predict

pytestmark = pytest.mark.train

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "scripts"))
import export_model  # noqa: E402


def test_the_shipped_model_loads_as_config_c_in_float32():
    assert SHIPPED_MODEL.is_file() and SHIPPED_MODEL.stat().st_size < 10e6
    model, config = load_model(SHIPPED_MODEL)
    assert config.config == "C" and tuple(config.tasks) == ("smile", "gender", "age")
    assert all(p.data.dtype == np.float32 for p in model.parameters())
    with np.load(SHIPPED_MODEL) as stored:
        assert stored["block1.layers.0.weight"].dtype == np.float16
    assert (SHIPPED_MODEL.parent / "MODEL_CARD.md").is_file()


def test_float16_weights_predict_what_float32_ones_do(tmp_path):
    from minimtl.data import MultiTaskDataset, SyntheticFaces
    from minimtl.train import TrainConfig, fit

    data = MultiTaskDataset([SyntheticFaces(48, 0, tasks=("smile",)), SyntheticFaces(48, 1, tasks=("gender", "age"))])
    config = TrainConfig(epochs=1, batch_size=16, batch_norm_batches=2, seed=0)
    model, _ = fit(config, data, data, tmp_path / "run", progress=False)
    export_model.main([str(tmp_path / "run"), "--out", str(tmp_path / "half.npz"), "--shared", str(tmp_path)])
    half, _ = load_model(tmp_path / "half.npz")
    faces = SyntheticFaces(64, 7).images
    full, reduced = predict(model, faces), predict(half, faces)
    for task in full:
        assert np.abs(full[task] - reduced[task]).max() < 0.02, task
        assert np.mean(full[task].argmax(1) == reduced[task].argmax(1)) >= 0.98, task


def test_the_shipped_model_scores_what_its_card_says_on_the_fixed_sample():
    """Crop the sample's photos afresh from the archives, classify them with the shipped file, and find the
    predictions and the accuracy ``scripts/export_model.py`` recorded (labels read from the data sets' metadata)."""
    from minimtl.data import FileSource
    from minimtl.faces import FaceCropper

    recorded = json.loads((SHIPPED_MODEL.parent / export_model.SAMPLE_FILE).read_text())
    model, config = load_model(SHIPPED_MODEL)
    cropper, checked = FaceCropper(), 0
    for name, entry in recorded.items():
        archive = shared_path() / "data" / entry["archive"]
        if not archive.is_file():
            continue
        cls = export_model.ARCHIVES[name][0]
        metadata = cls(archive, load_images=False, progress=False)
        position = {member: i for i, member in enumerate(metadata.names)}
        crops = dict(FileSource(archive).iterate(entry["names"]))
        faces = np.stack([cropper.crop_source(crops[member], member).crop for member in entry["names"]])
        predicted = export_model.accuracies(model, config, _Faces(faces))
        for task, expected in entry["predicted"].items():
            agree = np.mean(predicted[task] == np.asarray(expected))
            assert agree >= 0.97, (name, task, agree)  # crops and float rounding may move a face at a boundary
            truth = metadata.labels[task][[position[member] for member in entry["names"]]]
            accuracy = float(np.mean(predicted[task] == truth))
            assert abs(accuracy - entry["accuracy"][task]) <= 0.03 + 1e-9, (name, task, accuracy)
        checked += 1
    if not checked:
        pytest.skip(f"none of the sample's archives is under {shared_path() / 'data'} (set MINIMTL_SHARED)")


class _Faces:
    """What ``export_model.accuracies`` reads of a data set: its images and which tasks it labels."""

    def __init__(self, images):
        self.images = images
        self.labels = {"smile": None, "gender": None, "age": None}


def test_export_refuses_a_folder_without_a_model_in_one_line(tmp_path, capsys):
    from minimtl import cli

    assert cli.run(export_model.main, [str(tmp_path)], prog="export_model.py") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no model.npz" in err
