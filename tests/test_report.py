"""The run report: metrics files, Figures 6 and 7, confusion matrices and report.md with the paper's tables."""
import csv
import json

import numpy as np
import pytest

from minimtl.compare import write_tables
from minimtl.report import write_report
from minimtl.train import fit
from test_train import small_config, tiny_multitask_set

pytestmark = pytest.mark.train


def test_report_and_figures_are_written(tmp_path):
    data, test = tiny_multitask_set(16, 0), tiny_multitask_set(12, 1)
    config = small_config(epochs=2)
    model, history = fit(config, data, test, tmp_path, progress=False)
    path = write_report(tmp_path, config, history, model, test, data_description="synthetic test data",
                        wall_seconds=1.0, fps={1: 10.0, 128: 100.0})
    text = path.read_text()
    assert "| smile | 6 |" in text and "96.63%" in text  # our accuracy beside Table 2's Config C row
    assert "3,953,130 | 3,953,130" in text  # parameters beside Table 3
    for name in ["figure6_curves.png", "figure7_errors.png", "confusion_smile.png", "confusion_age.png"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert {r["split"] for r in rows} == {"train", "test"} and {r["epoch"] for r in rows} == {"1", "2"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == history


def test_comparison_table(tmp_path):
    summary = {"seeds": [0, 1], "accuracy": {
        "A": {"smile": {"seeds": [0, 1], "per_seed": [0.9, 0.92], "mean": 0.91, "sd": 0.0141, "images": 10}},
        "C": {"smile": {"seeds": [0, 1], "per_seed": [0.95, 0.94], "mean": 0.945, "sd": 0.00707, "images": 10},
              "age": {"seeds": [0, 1], "per_seed": [0.5, 0.5], "mean": 0.5, "sd": 0.0, "images": 10}}},
        "differences": {"C-A.smile": {"bootstrap": (0.035, 0.01, 0.06), "t": (0.035, -0.1, 0.17),
                                      "seeds": [0, 1], "per_seed": [0.05, 0.02], "verdict": "not distinguishable"}}}
    text = write_tables(summary, tmp_path / "table2.md", "x").read_text()
    assert "| smile | 91.00 ± 1.41 (s0 90.00, s1 92.00) | — | 94.50 ± 0.71 (s0 95.00, s1 94.00) | 95.08 | 95.60 | 96.63 |" in text
    assert "| gender | — | — | — |" in text
    assert "**In progress:** 6 of 18 (config, task, seed) results recorded" in text  # 9 a seed: 3 A, 3 B, 3 C
    assert ("| C − A | smile | +3.50 | [+1.00, +6.00] | [-10.00, +17.00] | s0 +5.00, s1 +2.00 | +1.55 "
            "| not distinguishable |") in text


def test_report_rows_per_data_set_with_the_majority_class_beside_them(tmp_path):
    from minimtl.data import MultiTaskDataset, SyntheticFaces
    from minimtl.train import evaluate_by_dataset

    data, test = tiny_multitask_set(16, 0), tiny_multitask_set(12, 1)
    config = small_config(epochs=1)
    model, history = fit(config, data, test, tmp_path, progress=False)
    by_dataset = history[-1]["test_datasets"]
    assert list(by_dataset) == [d.name for d in test.datasets]
    smile_set = test.datasets[0]
    counts = np.bincount(smile_set.labels["smile"], minlength=2)
    assert by_dataset[smile_set.name]["smile"]["majority"] == pytest.approx(counts.max() / counts.sum())
    assert by_dataset[smile_set.name]["smile"]["samples"] == len(smile_set)
    unseen = MultiTaskDataset([SyntheticFaces(10, 77, tasks=("gender", "age"))], ("smile", "gender", "age"))
    cross = evaluate_by_dataset(model, unseen)[1]
    text = write_report(tmp_path, config, history, model, test, data_description="synthetic", fps={1: 1.0},
                        cross=cross).read_text()
    gender = by_dataset[test.datasets[1].name]["gender"]
    row = (f"| {test.datasets[1].name} | gender | yes | {gender['samples']} | {100 * gender['accuracy']:.2f}% | "
           f"{100 * gender['majority']:.2f}% | {100 * (gender['accuracy'] - gender['majority']):+.2f} |")
    assert row in text
    unseen_age = cross[unseen.datasets[0].name]["age"]
    assert f"| {unseen.datasets[0].name} | age | **no** | 10 | {100 * unseen_age['accuracy']:.2f}% |" in text
