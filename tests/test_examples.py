"""The examples run end to end (on synthetic faces, so without the data archives)."""
import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.train
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_mtl_on_synthetic_faces_writes_the_whole_run_folder(tmp_path, capsys):
    train_mtl = load_example("train_mtl")
    run = tmp_path / "run"
    train_mtl.main(["--synthetic", "--limit", "40", "--epochs", "2", "--batch-size", "16", "--quiet", "--run-dir", str(run)])
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out
    for name in ["config.json", "checkpoint.npz", "model.npz", "metrics.csv", "metrics.json", "report.md",
                 "figure6_curves.png", "figure7_errors.png", "confusion_smile.png", "confusion_gender.png", "confusion_age.png"]:
        assert (run / name).is_file(), name
    assert len(json.loads((run / "metrics.json").read_text())) == 2
    assert "SYNTHETIC" in (run / "report.md").read_text()
    # --resume with a larger epoch count continues from the checkpoint instead of starting over
    train_mtl.main(["--synthetic", "--limit", "40", "--epochs", "3", "--batch-size", "16", "--quiet", "--run-dir", str(run),
                    "--resume"])
    assert [r["epoch"] for r in json.loads((run / "metrics.json").read_text())] == [1, 2, 3]


@pytest.mark.slow
def test_compare_writes_table2_for_configs_a_b_c(tmp_path):
    train_mtl = load_example("train_mtl")
    train_mtl.main(["--synthetic", "--limit", "24", "--epochs", "1", "--batch-size", "12", "--quiet", "--compare",
                    "--run-dir", str(tmp_path)])
    table = (tmp_path / "table2.md").read_text()
    assert "| smile |" in table and "| age |" in table
    for folder in ["A-smile", "A-gender", "A-age", "B", "C"]:
        assert (tmp_path / folder / "report.md").is_file(), folder


def test_bad_arguments_are_refused():
    train_mtl = load_example("train_mtl")
    with pytest.raises(SystemExit):
        train_mtl.main(["--config", "D"])
    with pytest.raises(SystemExit):
        train_mtl.main(["--limit", "3"])
    with pytest.raises(SystemExit):
        train_mtl.main(["--batch-norm-batches", "-1"])


def test_batch_norm_batches_reaches_the_training_configuration():
    train_mtl = load_example("train_mtl")
    assert train_mtl.train_config(train_mtl.parse_arguments([])).batch_norm_batches == 50
    assert train_mtl.train_config(train_mtl.parse_arguments(["--batch-norm-batches", "0"])).batch_norm_batches == 0
