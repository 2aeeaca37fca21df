"""The run's report: the paper's Tables 2 and 3 and Figures 6 and 7, reproduced from a trained model.

``write_report(run_dir, ...)`` writes into the run folder:

- ``metrics.csv`` and ``metrics.json``: per epoch, per task, train and test loss and accuracy;
- ``figure6_curves.png``: loss and accuracy per task, train and test (the paper's Figure 6);
- ``figure7_errors.png``: misclassified test faces with true and predicted labels, one row per task (Figure 7);
- ``confusion_<task>.png``: confusion matrices of the test split;
- ``predictions.npz``: each test image's true and predicted class per task (for comparing runs);
- ``report.md``: accuracy beside Table 2's row for the same configuration, parameters and
  frames per second beside Table 3.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from minimtl.metrics import confusion_matrix
from minimtl.data import CLASS_NAMES, TASKS, MultiTaskDataset
from minimtl.models import PAPER_ACCURACY, PAPER_FPS, PAPER_PARAMETERS, BKNet
from minimtl.train import TrainConfig, predict


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen needed
    import matplotlib.pyplot as plt

    return plt


def write_metrics(history: list[dict], run_dir: Path) -> None:
    """``metrics.json`` (the history as is) and ``metrics.csv`` (one row per epoch, split and task)."""
    (run_dir / "metrics.json").write_text(json.dumps(history, indent=2))
    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "split", "task", "loss", "accuracy", "samples", "lr"])
        for record in history:
            for split in ("train", "test"):
                for task, values in record[split].items():
                    writer.writerow([record["epoch"], split, task, f"{values['loss']:.6f}", f"{values['accuracy']:.6f}",
                                     values["samples"], f"{record['lr']:.6g}"])


def plot_curves(history: list[dict], path: Path) -> Path:
    """Figure 6: for each task, loss (top) and accuracy (bottom) per epoch, train and test."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    tasks = [t for t in TASKS if any(t in r["test"] or t in r["train"] for r in history)]
    figure, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.5), squeeze=False)
    for column, task in enumerate(tasks):
        for split, style in (("train", "-"), ("test", "--")):
            epochs = [r["epoch"] for r in history if task in r[split]]
            losses = [r[split][task]["loss"] for r in history if task in r[split]]
            accuracies = [100 * r[split][task]["accuracy"] for r in history if task in r[split]]
            axes[0, column].plot(epochs, losses, style, marker="o", markersize=3, label=split)
            axes[1, column].plot(epochs, accuracies, style, marker="o", markersize=3, label=split)
        axes[0, column].set_title(f"{task}: loss")
        axes[1, column].set_title(f"{task}: accuracy (%)")
        for row in (0, 1):
            axes[row, column].xaxis.set_major_locator(MaxNLocator(integer=True))
            axes[row, column].set_xlabel("epoch")
            axes[row, column].grid(alpha=0.3)
            axes[row, column].legend()
    figure.suptitle("Loss and accuracy per task (cf. the paper's Figure 6)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_errors(test_data: MultiTaskDataset, probabilities: dict[str, np.ndarray], path: Path, per_task: int = 8) -> Path:
    """Figure 7: up to ``per_task`` misclassified test faces per task (one row each), most confident mistakes first."""
    plt = _pyplot()
    tasks = list(probabilities)
    figure, axes = plt.subplots(len(tasks), per_task, figsize=(1.6 * per_task, 2.0 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        present = np.flatnonzero(test_data.masks[task] == 1)
        predicted = probabilities[task].argmax(1)
        wrong = present[predicted[present] != test_data.labels[task][present]]
        wrong = wrong[np.argsort(-probabilities[task][wrong].max(1))][:per_task]
        names = CLASS_NAMES[task]
        for column in range(per_task):
            axis = axes[row, column]
            axis.axis("off")
            if column < len(wrong):
                i = wrong[column]
                axis.imshow(test_data.images[i], cmap="gray", vmin=0, vmax=255)
                axis.set_title(f"true: {names[test_data.labels[task][i]]}\npred: {names[predicted[i]]}", fontsize=7)
        axes[row, 0].text(-0.15, 0.5, task, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right")
    figure.suptitle("Misclassified test faces: smile, gender, age (cf. the paper's Figure 7)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_confusion(matrix: np.ndarray, task: str, path: Path) -> Path:
    """A confusion matrix with counts in the cells (rows: true class, columns: predicted)."""
    plt = _pyplot()
    names = CLASS_NAMES[task]
    figure, axis = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.7 * len(names)))
    axis.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"{task}: test confusion matrix")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def measure_fps(model: BKNet, batch_sizes: Sequence[int] = (1, 128), seconds: float = 2.0) -> dict[int, float]:
    """Inference images per second at each batch size (evaluation mode, repeated for about ``seconds``).

    The model is folded for inference once, before the clock starts (``BKNet.fuse_for_inference``), as a
    predictor would be.
    """
    model = model if model.inference_only else model.fuse_for_inference()
    rng = np.random.default_rng(0)
    results = {}
    for batch in batch_sizes:
        images = rng.standard_normal((batch, 1, 48, 48)).astype(np.float32)
        predict(model, images, batch_size=batch)  # warm-up (JIT, caches)
        count, started = 0, time.perf_counter()
        while True:
            predict(model, images, batch_size=batch)
            count += batch
            elapsed = time.perf_counter() - started
            if elapsed >= seconds and count >= 2 * batch:
                break
        results[batch] = count / elapsed
    return results


def dataset_rows(by_dataset: dict[str, dict], trained_on: bool) -> list[str]:
    """Markdown rows ``| data set | task | trained on it | samples | accuracy | majority class | margin |``."""
    rows = []
    for name, tasks in by_dataset.items():
        for task, values in tasks.items():
            ours, majority = 100 * values["accuracy"], 100 * values["majority"]
            rows.append(f"| {name} | {task} | {'yes' if trained_on else '**no**'} | {values['samples']} | "
                        f"{ours:.2f}% | {majority:.2f}% | {ours - majority:+.2f} |")
    return rows


def save_predictions(path: Path, test_data: MultiTaskDataset, probabilities: dict[str, np.ndarray]) -> Path:
    """``predictions.npz``: per task, the names (``<data set>:<image>``), true and predicted class and the
    probabilities of the test samples carrying that task, so runs can be compared image by image."""
    from minimtl import serialization

    names = np.array([f"{test_data.datasets[o].name}:{n}" for o, n in
                      zip(test_data.origin, np.concatenate([d.names for d in test_data.datasets]))])
    state = {}
    for task, p in probabilities.items():
        present = test_data.masks[task] == 1
        state[f"names.{task}"] = names[present]
        state[f"truth.{task}"] = test_data.labels[task][present]
        state[f"predicted.{task}"] = p[present].argmax(1)
        state[f"probabilities.{task}"] = p[present].astype(np.float32)
    return serialization.save(state, path)


def write_report(run_dir: Path, config: TrainConfig, history: list[dict], model: BKNet, test_data: MultiTaskDataset, *,
                 data_description: str, wall_seconds: float | None = None, fps: dict[int, float] | None = None,
                 notes: Sequence[str] = (), cross: dict[str, dict] | None = None) -> Path:
    """Write metrics, Figures 6 and 7, confusion matrices and ``report.md`` into ``run_dir``; return the report's path.

    ``cross``: ``{data set name: {task: metrics}}`` (``minimtl.train.evaluate_by_dataset``) of data sets the
    model was tested on but not trained on: the report's cross-data-set rows.
    """
    run_dir = Path(run_dir)
    write_metrics(history, run_dir)
    plot_curves(history, run_dir / "figure6_curves.png")
    probabilities = predict(model, test_data.images, flip=config.test_flip)
    save_predictions(run_dir / "predictions.npz", test_data, probabilities)
    plot_errors(test_data, probabilities, run_dir / "figure7_errors.png")
    final = history[-1]["test"]
    for task in model.tasks:
        present = test_data.masks[task] == 1
        matrix = confusion_matrix(probabilities[task].argmax(1), test_data.labels[task], len(CLASS_NAMES[task]), present)
        plot_confusion(matrix, task, run_dir / f"confusion_{task}.png")
    fps = fps if fps is not None else measure_fps(model)

    paper_row = PAPER_ACCURACY[config.config]
    lines = [f"# minimtl run: Config {config.config} ({', '.join(model.tasks)})", "",
             f"Data: {data_description}", "",
             f"Command configuration: `{json.dumps(json.loads(config.to_json()))}`", ""]
    if wall_seconds is not None:
        lines += [f"Wall time of training and evaluation: {wall_seconds / 60:.1f} min over {len(history)} epochs "
                  f"({history[-1]['steps']} steps).", ""]
    lines += ["## Accuracy on the test split beside the paper's Table 2", "",
              f"| task | test samples | minimtl (this run) | paper, Config {config.config} | difference |",
              "|---|---:|---:|---:|---:|"]
    for task in model.tasks:
        if task in final:
            ours = 100 * final[task]["accuracy"]
            lines.append(f"| {task} | {final[task]['samples']} | {ours:.2f}% | {paper_row[task]:.2f}% "
                         f"| {ours - paper_row[task]:+.2f} |")
    lines += ["", "The paper measures smile on GENKI-4K and gender and age on IMDB-WIKI; the data of this run are "
              "named above.", ""]
    by_dataset = history[-1].get("test_datasets", {})
    if by_dataset or cross:
        lines += ["## Accuracy per data set, beside always answering the majority class", "",
                  "Each data set's own test split (IMDB-WIKI: the people of folders 80–89, whom training never saw). "
                  "Rows not trained on test the model on a data set it never saw any image of: how well it "
                  "carries over to another collection's photos, framing and age distribution.", "",
                  "| data set | task | trained on it | test samples | accuracy | majority class | margin |",
                  "|---|---|---|---:|---:|---:|---:|"]
        lines += dataset_rows(by_dataset, True) + dataset_rows(cross or {}, False) + [""]
    lines += [
              "## Parameters and speed beside the paper's Table 3", "",
              "| | minimtl | paper |", "|---|---:|---:|"]
    paper_tasks = ["smile"] if config.config == "A" else list(TASKS)
    paper_parameters = f"{PAPER_PARAMETERS[config.config]:,}" if list(model.tasks) == paper_tasks else "—"
    lines.append(f"| trainable parameters | {model.num_parameters():,} | {paper_parameters} |")
    for batch, value in fps.items():
        lines.append(f"| inference, images/s at batch {batch} | {value:.1f} | "
                     f"{PAPER_FPS[config.config] if batch == 1 else '—'} |")
    lines += ["", "The paper's FPS (Table 3) comes from its own hardware and framework; ours is measured on this "
              "machine's CPU, one face at a time (batch 1) and in batches of 128.", "",
              "## Figures", "", "- Figure 6, loss and accuracy per epoch: ![curves](figure6_curves.png)",
              "- Figure 7, misclassified test faces: ![errors](figure7_errors.png)"]
    lines += [f"- Confusion matrix, {task}: ![{task}](confusion_{task}.png)" for task in model.tasks]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
