"""Table 2 over seeds: does multi-task learning help?  Configs A, B and C trained alike, compared with intervals.

The paper's central claim (Table 2) is that one network trained on all three
tasks (Config C; B without the fused first-block features) beats one network
per task (Config A) on every task.  One run per configuration cannot show a
difference of 1.5 points: two seeds of the same configuration differ by about
that much.  So every configuration is trained with several seeds, on the same
data, splits and recipe, and each difference is given with a 95 % interval.

The runs, per seed: ``A-smile``, ``A-gender``, ``A-age`` (Config A, one task
each, on that task's data sets only), ``B`` and ``C`` (all three tasks).  A
single-task run sees exactly as many samples of its task as the multi-task
run does (``TrainConfig.epoch_samples``): with balanced batches the
multi-task run gives each of its ``k`` data sets ``1/k`` of every batch, so
Config A takes the same number of epochs of ``1/k`` of the steps.  What Config
C has beyond A is then only the other tasks' data and the shared trunk.

Each run is its own folder ``<root>/<label>-seed<seed>`` holding what a
normal run holds (checkpoint, model, report) plus ``predictions.npz``; an
interrupted run is resumed from its checkpoint.  A finished run is kept as a
*record* (:func:`record_run`, ``<record>/<label>-seed<seed>.npz``): per task,
whether each test image was classified right, the SHA-256 of the images'
names and the run's wall time.  The tables are made from the records alone,
and a recorded run is skipped, so a comparison can be run in pieces, on
several machines or sittings: the record folder is a few kilobytes a run,
holds no image, name, label or weight, and can be committed or copied.

Two intervals for a difference ``C − A`` of a task's accuracy:

* **paired bootstrap over test images** (:func:`paired_bootstrap`): the
  per-image correctness of both configurations, averaged over seeds, is
  resampled image by image (the same images for both): how much the
  difference could move with another test set of the same size;
* **t-interval over seeds** (:func:`t_interval`): the per-seed differences
  and Student's t with ``seeds − 1`` degrees of freedom: how much it moves
  with the training's randomness.

A claim is called *confirmed* when both intervals lie above zero, *refuted*
when both lie below, and *not distinguishable at this sample size* otherwise.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from minimtl.data import TASKS

__all__ = ["COMPARISONS", "RUNS", "Run", "comparison_plan", "paired_bootstrap", "record_finished", "record_run",
           "t_interval", "verdict"]


@dataclass(frozen=True)
class Run:
    """One training run of the comparison: ``label`` (``"A-smile"``, ``"B"``, ``"C"``), its config and tasks."""

    label: str
    config: str
    tasks: tuple[str, ...]

    def folder(self, root: Path, seed: int) -> Path:
        """The run folder: checkpoint, model, report and predictions of this run with ``seed``."""
        return Path(root) / f"{self.label}-seed{seed}"

    def record(self, record: Path, seed: int) -> Path:
        """The record of this run with ``seed`` once finished (:func:`record_run`)."""
        return Path(record) / f"{self.label}-seed{seed}.npz"


#: The runs of one seed: Config A once per task, then B and C on all tasks.
RUNS = tuple(Run(f"A-{task}", "A", (task,)) for task in TASKS) + (Run("B", "B", TASKS), Run("C", "C", TASKS))
#: The differences reported, ``(better, worse)`` as the paper claims them: C − A, B − A, C − B.
COMPARISONS = (("C", "A"), ("B", "A"), ("C", "B"))


def comparison_plan(seeds: Sequence[int]) -> list[tuple[Run, int]]:
    """Every ``(run, seed)`` in the order they are trained: all runs of the first seed, then the next."""
    return [(run, seed) for seed in seeds for run in RUNS]


def is_finished(folder: Path) -> bool:
    """A run is finished once its model and its test predictions are written."""
    return (Path(folder) / "model.npz").is_file() and (Path(folder) / "predictions.npz").is_file()


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` → ``(0, 1, 2)``; ValueError naming the problem for anything else."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers such as 0,1,2; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds needs distinct non-negative integers, got {text!r}")
    return seeds


# ------------------------------------------------------------------------------------- statistics
def t_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``differences`` (one per seed) by Student's t with ``n − 1`` degrees of freedom.

    With one seed there is no spread to measure: the interval is ``(-inf, inf)``.
    """
    from scipy import stats

    values = np.asarray(differences, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def paired_bootstrap(correct_better: np.ndarray, correct_worse: np.ndarray, draws: int = 10_000,
                     confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(mean difference, low, high)`` of accuracy, by resampling test images with their pairs.

    Args:
        correct_better, correct_worse: ``(seeds, images)`` bool, whether each run got each test image right;
            row ``s`` of both is seed ``s``, column ``i`` the same image in both.
        draws: bootstrap resamples.

    The difference of image ``i`` is its correctness averaged over seeds, better minus worse; a
    resample draws ``images`` of those with replacement and takes their mean.  Percentile interval.
    """
    better, worse = np.asarray(correct_better, np.float64), np.asarray(correct_worse, np.float64)
    if better.shape != worse.shape or better.ndim != 2:
        raise ValueError(f"expected two (seeds, images) arrays of one shape, got {better.shape} and {worse.shape}")
    per_image = (better - worse).mean(axis=0)  # (images,)
    rng = np.random.default_rng(seed)
    means = np.empty(draws)
    for start in range(0, draws, 1000):  # in blocks: (1000, images) indices at a time
        count = min(1000, draws - start)
        means[start:start + count] = per_image[rng.integers(0, len(per_image), (count, len(per_image)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(per_image.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def verdict(bootstrap: tuple[float, float, float], over_seeds: tuple[float, float, float]) -> str:
    """"confirmed" if both intervals lie above zero, "refuted" if both below, else "not distinguishable"."""
    lows, highs = (bootstrap[1], over_seeds[1]), (bootstrap[2], over_seeds[2])
    if min(lows) > 0:
        return "confirmed"
    if max(highs) < 0:
        return "refuted"
    return "not distinguishable"


# ------------------------------------------------------------------------------------- records of runs
def read_predictions(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{task: {"names": (N,) str, "truth": (N,), "predicted": (N,)}}`` from a run's ``predictions.npz``."""
    with np.load(Path(folder) / "predictions.npz", allow_pickle=False) as stored:
        tasks = [key[len("truth."):] for key in stored.files if key.startswith("truth.")]
        return {task: {"names": stored[f"names.{task}"], "truth": stored[f"truth.{task}"],
                       "predicted": stored[f"predicted.{task}"]} for task in tasks}


def names_digest(names: np.ndarray) -> str:
    """SHA-256 of the sorted test image names: two runs with one digest were tested on the same images."""
    return hashlib.sha256("\n".join(sorted(str(name) for name in names)).encode()).hexdigest()


def record_run(folder: Path, path: Path, seconds: float | None = None) -> Path:
    """Keep what the tables need of the finished run in ``folder``: ``path`` (.npz) holds, per task,
    ``correct.<task>`` ((N,) bool: was test image ``i`` classified right, images in the order of their sorted
    names) and ``digest.<task>`` (:func:`names_digest`), and ``seconds``, the run's wall time (NaN if unknown).
    """
    from minimtl import serialization

    state = {"seconds": np.float64(np.nan if seconds is None else seconds)}
    for task, values in read_predictions(folder).items():
        order = np.argsort(values["names"], kind="stable")
        state[f"correct.{task}"] = values["predicted"][order] == values["truth"][order]
        state[f"digest.{task}"] = np.frombuffer(bytes.fromhex(names_digest(values["names"])), np.uint8)
    return serialization.save(state, path)


def read_record(path: Path) -> tuple[dict[str, tuple[np.ndarray, str]], float]:
    """``({task: (correct (N,) bool, names digest)}, seconds)`` from a record written by :func:`record_run`."""
    from minimtl import serialization

    stored = serialization.load(path)  # ValueError naming the file if it is not an .npz
    tasks = [key[len("correct."):] for key in stored if key.startswith("correct.")]
    wanted = ["seconds"] + [f"digest.{task}" for task in tasks]
    if not tasks or any(key not in stored for key in wanted):
        raise ValueError(f"{path} is not a --compare record (it needs seconds, and correct.<task> with digest.<task>): "
                         f"delete it and the run is trained and recorded again")
    return ({task: (stored[f"correct.{task}"].astype(bool), stored[f"digest.{task}"].tobytes().hex()) for task in tasks},
            float(stored["seconds"]))


def record_finished(root: Path, record: Path, seeds: Sequence[int], seconds: dict[str, float] | None = None) -> int:
    """Record every run of ``seeds`` that is finished in ``root`` but not yet in ``record``; return how many.

    ``seconds``: ``{run folder name: wall time}`` for the records, where known."""
    made = 0
    for run, seed in comparison_plan(seeds):
        folder, path = run.folder(root, seed), run.record(record, seed)
        if is_finished(folder) and not path.is_file():
            record_run(folder, path, (seconds or {}).get(folder.name))
            made += 1
    return made


def correctness(record: Path, seeds: Sequence[int]) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """``{config "A"|"B"|"C": {task: {seed: (images,) bool}}}`` of the recorded runs among ``seeds``.

    Runs not recorded yet are left out, so a comparison in progress can be summarized.  ValueError if a run
    was tested on other images than the others of its task."""
    found: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    digests: dict[str, str] = {}
    for run, seed in comparison_plan(seeds):
        path = run.record(record, seed)
        if not path.is_file():
            continue
        for task, (correct, digest) in read_record(path)[0].items():
            if task not in run.tasks:
                continue
            if digests.setdefault(task, digest) != digest:
                raise ValueError(f"{path} was tested on other {task} images than the other runs")
            found.setdefault(run.config, {}).setdefault(task, {})[seed] = correct
    return found


def recorded_seconds(record: Path, seeds: Sequence[int]) -> tuple[float, int]:
    """``(total wall time, runs)`` over the recorded runs of ``seeds`` whose time is known."""
    times = [read_record(run.record(record, seed))[1] for run, seed in comparison_plan(seeds)
             if run.record(record, seed).is_file()]
    known = [t for t in times if math.isfinite(t)]
    return float(sum(known)), len(known)


def summarize(record: Path, seeds: Sequence[int], draws: int = 10_000) -> dict:
    """Accuracy per config, task and seed; mean ± sd; and every difference of ``COMPARISONS`` with both
    intervals, over the seeds both configurations have recorded."""
    correct = correctness(record, seeds)
    summary = {"seeds": list(seeds), "accuracy": {}, "differences": {}}
    for config, tasks in correct.items():
        for task, by_seed in tasks.items():
            per_seed = np.array([by_seed[seed].mean() for seed in sorted(by_seed)])
            summary["accuracy"].setdefault(config, {})[task] = {
                "seeds": sorted(by_seed), "per_seed": per_seed.tolist(), "mean": float(per_seed.mean()),
                "sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
                "images": int(next(iter(by_seed.values())).size)}
    for better, worse in COMPARISONS:
        for task in TASKS:
            both = sorted(set(correct.get(better, {}).get(task, {})) & set(correct.get(worse, {}).get(task, {})))
            if not both:
                continue
            a = np.stack([correct[better][task][seed] for seed in both])  # (seeds, images)
            b = np.stack([correct[worse][task][seed] for seed in both])
            bootstrap = paired_bootstrap(a, b, draws)
            over_seeds = t_interval(a.mean(axis=1) - b.mean(axis=1))
            summary["differences"][f"{better}-{worse}.{task}"] = {
                "seeds": both, "bootstrap": bootstrap, "t": over_seeds, "verdict": verdict(bootstrap, over_seeds),
                "per_seed": (a.mean(axis=1) - b.mean(axis=1)).tolist()}
    return summary


# ------------------------------------------------------------------------------------- writing
def _percent(value: float) -> str:
    return "−∞" if value == -math.inf else "∞" if value == math.inf else f"{100 * value:+.2f}"


def _per_seed(seeds: Sequence[int], values: Sequence[float], form: str = "") -> str:
    """``"s0 94.90, s1 95.10"``: each seed's value, as a percentage (``form``) or as signed points."""
    return ", ".join(f"s{seed} " + (format(100 * value, form) if form else _percent(value))
                     for seed, value in zip(seeds, values))


def write_tables(summary: dict, path: Path, description: str, table3: list[str] = (), wall: str = "") -> Path:
    """``table2_seeds.md``: Table 2 as mean ± sd per config and task, each run's own figure, the paired
    differences with both intervals and a verdict, and Table 3's rows measured in this process."""
    from minimtl.models import PAPER_ACCURACY

    seeds = summary["seeds"]
    lines = [f"# Does multi-task learning help? Table 2 over {len(seeds)} seeds ({', '.join(map(str, seeds))})", "",
             f"Data: {description}", ""]
    if wall:
        lines += [wall, ""]
    recorded = sum(len(values["seeds"]) for tasks in summary["accuracy"].values() for values in tasks.values())
    expected = len(seeds) * sum(len(run.tasks) for run in RUNS)
    if recorded < expected:
        lines += [f"**In progress:** {recorded} of {expected} (config, task, seed) results recorded; each "
                  "difference is over the seeds both configurations have.", ""]
    lines += ["## Accuracy (%), mean ± standard deviation over seeds, each seed's run in brackets", "",
              "| task | A | B | C | paper A | paper B | paper C |", "|---|---|---|---|---:|---:|---:|"]
    for task in TASKS:
        cells = []
        for config in "ABC":
            values = summary["accuracy"].get(config, {}).get(task)
            cells.append("—" if values is None else f"{100 * values['mean']:.2f} ± {100 * values['sd']:.2f} "
                         f"({_per_seed(values['seeds'], values['per_seed'], '.2f')})")
        lines.append(f"| {task} | " + " | ".join(cells) + " | "
                     + " | ".join(f"{PAPER_ACCURACY[c][task]:.2f}" for c in "ABC") + " |")
    lines += ["", "## Paired differences (points), with 95 % intervals", "",
              "| difference | task | mean | bootstrap over test images | t over seeds | per seed | paper | verdict |",
              "|---|---|---:|---|---|---|---:|---|"]
    for key, values in summary["differences"].items():
        pair, task = key.split(".")
        better, worse = pair.split("-")
        paper = PAPER_ACCURACY[better][task] - PAPER_ACCURACY[worse][task]
        boot, t = values["bootstrap"], values["t"]
        lines.append(f"| {better} − {worse} | {task} | {_percent(boot[0])} | [{_percent(boot[1])}, {_percent(boot[2])}] "
                     f"| [{_percent(t[1])}, {_percent(t[2])}] | {_per_seed(values['seeds'], values['per_seed'])} "
                     f"| {paper:+.2f} | {values['verdict']} |")
    lines += ["", "Bootstrap: 10,000 resamples of the test images, each image's correctness averaged over seeds, "
              "the same images for both configurations. t: Student's t over the per-seed differences. "
              "Confirmed: both intervals above zero; refuted: both below; otherwise not distinguishable."]
    if table3:
        lines += ["", "## Table 3, measured in this process", ""] + list(table3)
    Path(path).write_text("\n".join(lines) + "\n")
    (Path(path).with_suffix(".json")).write_text(json.dumps(summary, indent=2))
    return Path(path)


def plot_comparison(summary: dict, path: Path) -> Path:
    """Accuracy per task and config, one dot per seed, the mean with its t-interval over seeds."""
    from minimtl.report import _pyplot

    plt = _pyplot()
    tasks = [task for task in TASKS if any(task in summary["accuracy"].get(c, {}) for c in "ABC")]
    figure, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for position, config in enumerate("ABC"):
            values = summary["accuracy"].get(config, {}).get(task)
            if values is None:
                continue
            per_seed = 100 * np.asarray(values["per_seed"])
            axis.scatter(np.full(len(per_seed), position) + np.linspace(-0.08, 0.08, len(per_seed)), per_seed,
                         s=18, color="#1f77b4", zorder=3)
            mean, low, high = t_interval(per_seed)
            if math.isfinite(low):
                axis.errorbar(position + 0.22, mean, yerr=[[mean - low], [high - mean]], fmt="s", color="#d62728",
                              capsize=4, markersize=5)
            else:
                axis.plot(position + 0.22, mean, "s", color="#d62728", markersize=5)
        axis.set_xticks(range(3), ["A\nsingle task", "B\nmulti-task", "C\nmulti-task,\nfused"])
        axis.set_title(task)
        axis.set_ylabel("test accuracy (%)")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("One dot per seed; red: mean with its 95 % t-interval over seeds", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
