"""Table 2 over seeds: the intervals against cases worked by hand, and --compare on drawn faces: seeds differ,
a seed repeats itself, finished runs are skipped and an interrupted one finishes to the same result."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from minimtl import compare

pytestmark = pytest.mark.train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import train_mtl  # noqa: E402


# ------------------------------------------------------------------------------------------- statistics
def test_t_interval_worked_by_hand():
    mean, low, high = compare.t_interval([0.01, 0.03, 0.02])
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2 degrees of freedom) · sd / √n
    assert mean == pytest.approx(0.02) and low == pytest.approx(0.02 - half) and high == pytest.approx(0.02 + half)
    assert compare.t_interval([0.5]) == (0.5, -math.inf, math.inf)  # one seed: no spread to measure


def test_paired_bootstrap_worked_by_hand():
    # two images: the better run gets the first right and the second wrong, the worse one both wrong, on both
    # seeds. Per-image differences (1, 0); a resample of two images has mean 0, 0.5 or 1 with chances ¼, ½, ¼.
    better = np.array([[True, False], [True, False]])
    worse = np.zeros((2, 2), bool)
    mean, low, high = compare.paired_bootstrap(better, worse, draws=20_000)
    assert mean == 0.5 and low == 0.0 and high == 1.0
    constant = compare.paired_bootstrap(np.ones((3, 50), bool), np.zeros((3, 50), bool), draws=500)
    assert constant == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="seeds, images"):
        compare.paired_bootstrap(np.ones((2, 3)), np.ones((3, 2)))


def test_verdicts():
    assert compare.verdict((0.02, 0.005, 0.03), (0.02, 0.001, 0.04)) == "confirmed"
    assert compare.verdict((-0.02, -0.03, -0.01), (-0.02, -0.05, -0.001)) == "refuted"
    assert compare.verdict((0.02, 0.005, 0.03), (0.02, -0.01, 0.05)) == "not distinguishable"


def test_seed_lists():
    assert compare.parse_seeds("0,1,2") == (0, 1, 2)
    for bad in ("0,x", "", "1,1", "-1"):
        with pytest.raises(ValueError, match="--seeds"):
            compare.parse_seeds(bad)


# --------------------------------------------------------------------------------- --compare end to end
ARGUMENTS = ["--synthetic", "--compare", "--epochs", "2", "--limit", "40", "--batch-size", "16", "--quiet",
             "--batch-norm-batches", "2"]


def predictions(folder: Path) -> dict:
    return {task: values["predicted"] for task, values in compare.read_predictions(folder).items()}


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    train_mtl.main(ARGUMENTS + ["--seeds", "0,1", "--run-dir", str(root)])
    return root


def test_compare_writes_table2_over_seeds_and_a_figure(comparison):
    text = (comparison / "table2_seeds.md").read_text()
    assert "over 2 seeds (0, 1)" in text and "| C − A | smile |" in text and "bootstrap over test images" in text
    assert "## Table 3, measured in this process" in text and "Three single-task A networks" in text
    assert (comparison / "table2_seeds.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((comparison / "table2_seeds.json").read_text())
    assert len(summary["accuracy"]["C"]["age"]["per_seed"]) == 2
    folders = sorted(p.name for p in comparison.iterdir() if p.is_dir())
    runs = sorted(f"{run.label}-seed{seed}" for run, seed in compare.comparison_plan([0, 1]))
    assert folders == sorted(runs + ["record"])
    assert sorted(p.stem for p in (comparison / "record").iterdir()) == runs


def test_seeds_give_different_runs_and_a_seed_repeats_itself(comparison, tmp_path):
    first = predictions(comparison / "C-seed0")
    with np.load(comparison / "C-seed0" / "model.npz") as a, np.load(comparison / "C-seed1" / "model.npz") as b:
        assert not np.array_equal(a["block1.layers.0.weight"], b["block1.layers.0.weight"])
    train_mtl.main(ARGUMENTS + ["--seeds", "0", "--run-dir", str(tmp_path)])
    again = predictions(tmp_path / "C-seed0")
    for task in first:
        np.testing.assert_array_equal(again[task], first[task])
    assert set(first) == {"smile", "gender", "age"} and set(predictions(comparison / "A-age-seed1")) == {"age"}


def test_finished_runs_are_skipped_and_an_interrupted_one_finishes_the_same(comparison, tmp_path, monkeypatch):
    import shutil

    from minimtl import train

    root = tmp_path / "resumed"
    shutil.copytree(comparison, root)
    interrupted = root / "B-seed1"  # made again, as if stopped after its first of two epochs
    shutil.rmtree(interrupted)
    (root / "record" / "B-seed1.npz").unlink()
    arguments = train_mtl.parse_arguments(ARGUMENTS + ["--seeds", "0,1", "--run-dir", str(root)])
    data, test, _, _ = train_mtl.load_data(arguments, ("smile", "gender", "age"))
    config = train_mtl.comparison_config(arguments, compare.RUNS[3], 1, data)
    assert compare.RUNS[3].label == "B"
    train.fit(config, data, test, interrupted, progress=False, stop_after_epoch=1)
    assert not compare.is_finished(interrupted)
    trained = []
    real_fit = train.fit

    def counting_fit(config, *args, **kwargs):
        trained.append((config.config, config.seed, kwargs.get("resume")))
        return real_fit(config, *args, **kwargs)

    monkeypatch.setattr(train_mtl, "fit", counting_fit)
    train_mtl.main(ARGUMENTS + ["--seeds", "0,1", "--run-dir", str(root)])
    assert trained == [("B", 1, True)]  # everything else was finished; B of seed 1 resumed from its checkpoint
    resumed, straight = predictions(interrupted), predictions(comparison / "B-seed1")
    for task in straight:
        np.testing.assert_array_equal(resumed[task], straight[task])


def test_a_record_holds_each_images_correctness_and_no_names(comparison):
    recorded, seconds = compare.read_record(comparison / "record" / "C-seed0.npz")
    straight = compare.read_predictions(comparison / "C-seed0")
    for task, values in straight.items():
        order = np.argsort(values["names"])
        correct, digest = recorded[task]
        np.testing.assert_array_equal(correct, values["predicted"][order] == values["truth"][order])
        assert digest == compare.names_digest(values["names"][::-1])  # the order of the names does not matter
    assert seconds > 0
    with np.load(comparison / "record" / "C-seed0.npz") as stored:
        assert all(stored[key].dtype.kind in "bfu" for key in stored.files)  # numbers only: no names, no labels
        assert sorted(stored.files) == sorted(["seconds"] + [f"{kind}.{task}" for task in straight
                                                             for kind in ("correct", "digest")])


def test_the_records_alone_continue_a_comparison_elsewhere(comparison, tmp_path, monkeypatch):
    """A new machine with only the committed records: nothing is trained again and the tables are the same;
    a record tested on other images is refused by name."""
    import shutil

    shutil.copytree(comparison / "record", tmp_path / "kept")
    monkeypatch.setattr(train_mtl, "fit", lambda *args, **kwargs: pytest.fail("a recorded run was trained again"))
    train_mtl.main(ARGUMENTS + ["--seeds", "0,1", "--run-dir", str(tmp_path / "new"), "--record", str(tmp_path / "kept")])
    again = json.loads((tmp_path / "new" / "table2_seeds.json").read_text())
    assert again == json.loads((comparison / "table2_seeds.json").read_text())

    path = tmp_path / "kept" / "B-seed0.npz"
    state = dict(np.load(path))
    state["digest.age"] = np.zeros_like(state["digest.age"])
    np.savez(path, **state)
    with pytest.raises(ValueError, match="B-seed0.npz was tested on other age images"):
        compare.summarize(tmp_path / "kept", [0, 1])


def test_a_comparison_in_progress_is_summarized_over_the_seeds_recorded(comparison, tmp_path):
    import shutil

    shutil.copytree(comparison / "record", tmp_path / "kept")
    (tmp_path / "kept" / "A-smile-seed1.npz").unlink()
    summary = compare.summarize(tmp_path / "kept", [0, 1, 2], draws=200)
    assert summary["accuracy"]["A"]["smile"]["seeds"] == [0] and summary["accuracy"]["C"]["smile"]["seeds"] == [0, 1]
    assert summary["differences"]["C-A.smile"]["seeds"] == [0] and summary["differences"]["C-A.age"]["seeds"] == [0, 1]
    table = compare.write_tables(summary, tmp_path / "table.md", "drawn faces").read_text()
    # 9 (config, task) results a seed: the 3 A runs, and B and C with 3 tasks each; seed 1 lacks A-smile
    assert "**In progress:** 17 of 27 (config, task, seed) results recorded" in table


def test_a_record_that_is_not_one_is_refused_by_name(tmp_path):
    np.savez(tmp_path / "C-seed0.npz", **{"correct.smile": np.ones(3, bool)})  # no digest, no seconds
    (tmp_path / "B-seed0.npz").write_bytes(b"PK\x03\x04 cut short")
    for name in ("C-seed0.npz", "B-seed0.npz"):
        with pytest.raises(ValueError, match=name):
            compare.read_record(tmp_path / name)


def test_mistyped_seeds_or_config_is_one_line(capsys):
    for bad in (["--seeds", "0,one"], ["--config", "D"]):
        with pytest.raises(SystemExit) as exit:
            train_mtl.parse_arguments(["--compare"] + bad)
        assert exit.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert error[-1].startswith("train_mtl.py: error:") or "error:" in error[-1]
        assert "Traceback" not in "\n".join(error)


def test_config_a_draws_as_many_faces_of_its_task_per_epoch_as_c(tmp_path):
    """B and C fill half of every batch from each data set, so a small one (GENKI-4K's 3,000 faces against
    WIKI's 30,494) is drawn as often as the large one in an epoch; A on the small set alone must be too."""
    from minimtl.data import MultiTaskDataset, SyntheticFaces
    from minimtl.train import train_loader

    small, large = SyntheticFaces(30, 0, tasks=("smile",)), SyntheticFaces(300, 1, tasks=("gender", "age"))
    train = MultiTaskDataset([small, large])
    arguments = train_mtl.parse_arguments(["--batch-size", "10"])
    c = train_mtl.comparison_config(arguments, compare.RUNS[-1], 0, train)
    a = train_mtl.comparison_config(arguments, compare.Run("A-smile", "A", ("smile",)), 0, train)
    smile_in_c = len(train_loader(train, c, 0)) * 10 / 2  # half of each balanced batch
    smile_in_a = len(train_loader(train_mtl.single_task_part(train, "smile"), a, 0)) * 10
    assert smile_in_a == smile_in_c == 300

    class Stop(Exception):
        pass

    trained = []

    def first_run_only(config, run_train, *rest, **keywords):  # what --compare would train first: A-smile
        trained.append(len(train_loader(run_train, config, 0)) * 10)
        raise Stop

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(train_mtl, "run_one", first_run_only)
    monkeypatch.setattr(train_mtl, "seconds_per_step", lambda *args: 0.1)
    try:
        with pytest.raises(Stop):
            train_mtl.run_comparison(dict_namespace(arguments, seeds=(0,), run_dir=tmp_path), train, train, None, "")
    finally:
        monkeypatch.undo()
    assert trained == [300]


def dict_namespace(namespace, **changes):
    import argparse

    return argparse.Namespace(**{**vars(namespace), **changes})
