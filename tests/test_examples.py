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


# ------------------------------------------------------------- bad input: one line and an exit code, nothing lost
SYNTHETIC_RUN = ["--synthetic", "--limit", "40", "--epochs", "1", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    load_example("train_mtl").main(SYNTHETIC_RUN + ["--run-dir", str(run)])
    return run


def run_train_mtl(argv, capsys) -> tuple[int, str]:
    from minimtl import cli

    train_mtl = load_example("train_mtl")
    code = cli.run(train_mtl.main, argv, prog="train_mtl.py")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("extra, words", [
    (["--epochs", "0"], "--epochs must be"),
    (["--epochs", "-1"], "--epochs must be"),
    (["--batch-size", "1"], "--batch-size must be at least 2"),
    (["--tasks", "smile,beard"], "--tasks"),
    (["--datasets", "genki4k,celeba"], "unknown data set celeba"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--label-smoothing", "1"], "--label-smoothing must be a finite number at least 0 and below 1"),
    (["--seeds", "0,x", "--compare"], "seed"),
])
def test_train_mtl_refuses_what_it_cannot_train_without_touching_a_finished_run(finished_run, extra, words, capsys):
    before = {name: (finished_run / name).read_bytes() for name in ("model.npz", "checkpoint.npz")}
    code, err = run_train_mtl(SYNTHETIC_RUN + ["--run-dir", str(finished_run), "--resume"] + extra, capsys)
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert {name: (finished_run / name).read_bytes() for name in before} == before


def test_train_mtl_never_overwrites_a_run_and_resumes_only_what_exists(finished_run, tmp_path, capsys):
    checkpoint = (finished_run / "checkpoint.npz").read_bytes()
    code, err = run_train_mtl(SYNTHETIC_RUN + ["--run-dir", str(finished_run)], capsys)  # no --resume
    assert code == 2 and "already holds a run" in err
    code, err = run_train_mtl(SYNTHETIC_RUN + ["--run-dir", str(finished_run.with_name("rnu")), "--resume"], capsys)
    assert code == 2 and "no run to continue" in err and "run" in err  # names the runs beside it
    assert not finished_run.with_name("rnu").exists()
    code, err = run_train_mtl(SYNTHETIC_RUN + ["--run-dir", str(finished_run), "--resume", "--lr", "0.5"], capsys)
    assert code == 2 and "lr 0.01 there, 0.5 here" in err
    (tmp_path / "afile").write_text("x")
    code, err = run_train_mtl(SYNTHETIC_RUN + ["--run-dir", str(tmp_path / "afile")], capsys)
    assert code == 2 and "is a file" in err
    assert (finished_run / "checkpoint.npz").read_bytes() == checkpoint


def test_train_mtl_refuses_a_damaged_checkpoint_in_one_line(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    data = (run / "checkpoint.npz").read_bytes()
    (run / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    code, err = run_train_mtl(SYNTHETIC_RUN + ["--run-dir", str(run), "--resume"], capsys)
    assert code == 1 and err.count("\n") == 1 and "checkpoint.npz is not a readable .npz" in err, err
    shutil.copy(run / "model.npz", run / "checkpoint.npz")  # a model copied over the checkpoint
    code, err = run_train_mtl(SYNTHETIC_RUN + ["--run-dir", str(run), "--resume"], capsys)
    assert code == 1 and "is a trained model" in err, err
