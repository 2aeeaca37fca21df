"""The whole job: data archives → face crops → a trained multi-task BKNet → the paper's tables and figures.

    python examples/train_mtl.py                       # Config C on GENKI-4K + UTKFace, Section 4.3's settings
    python examples/train_mtl.py --config B --epochs 5
    python examples/train_mtl.py --resume --run-dir runs/config-C
    python examples/train_mtl.py --compare             # Table 2: A (one per task), B and C on the same data
    python examples/train_mtl.py --synthetic --epochs 2 --limit 256   # a quick look, no real data

Where the data come from, in order: the extracted data sets under the data root
(``--data-root`` or ``$MINIMTL_DATA``, default ``~/.cache/minimtl/data``); the
archives ``genki4k.tar`` and ``UTKFace.tar.gz`` in ``<data root>/downloads`` or in
``$MINIMTL_SHARED/data`` (default ``../shared`` beside the repository); a download
with ``python -m minimtl.data fetch``.  If none works, the run says so in one
line and trains on drawn synthetic faces, so the pipeline can always be seen working.

Faces: GENKI-4K photos are cropped with MTCNN (``--detector``), converted to
grayscale and resized to 48×48 as in Section 3.1; UTKFace images are already
aligned face crops and are only converted and resized.  Crops are cached under
the data root, so a second run starts training at once.

The run folder (``--run-dir``, default ``runs/config-<C>``) receives
config.json, checkpoint.npz (every epoch), model.npz, metrics.csv/json,
figure6_curves.png, figure7_errors.png, confusion_<task>.png and report.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # run from a checkout without installing

from minimtl import kernels  # noqa: E402
from minimtl.data import DATASETS, GENKI4K, MultiTaskDataset, SyntheticFaces, UTKFace, data_root, fetch  # noqa: E402
from minimtl.report import measure_fps, write_comparison, write_report  # noqa: E402
from minimtl.train import NonFiniteLoss, TrainConfig, fit  # noqa: E402


def parse_arguments(argv=None) -> argparse.Namespace:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    model = parser.add_argument_group("model")
    model.add_argument("--config", choices="ABC", default=defaults.config, help="A single task, B multi-task, C multi-task with fused features")
    model.add_argument("--tasks", default=",".join(defaults.tasks), help="comma-separated: smile,gender,age (Config A: one)")
    model.add_argument("--init", choices=["paper", "he"], default=defaults.init, help="paper: Gaussian with variance 0.01 (Section 4.3)")
    model.add_argument("--dropout", type=float, default=defaults.dropout)
    model.add_argument("--batch-norm-scale", action="store_true", help="learn a batch-norm scale too (beyond Table 3's counts)")
    training = parser.add_argument_group("training (defaults: Section 4.3)")
    training.add_argument("--epochs", type=int, default=defaults.epochs)
    training.add_argument("--batch-size", type=int, default=defaults.batch_size)
    training.add_argument("--lr", type=float, default=defaults.lr, help="initial learning rate of Eq. (4)")
    training.add_argument("--decay-rate", type=float, default=defaults.decay_rate, help="Eq. (4)")
    training.add_argument("--decay-steps", type=int, default=defaults.decay_steps,
                          help="Eq. (4); default: fitted to the run (ten periods), 2000 is Section 4.3's")
    training.add_argument("--staircase", action="store_true", help="decay in steps rather than continuously")
    training.add_argument("--momentum", type=float, default=defaults.momentum)
    training.add_argument("--nesterov", action="store_true")
    training.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="λ of Eq. (2)")
    training.add_argument("--task-weights", default="", help="μ_t of Eq. (2), e.g. smile=2,age=1 (default 1 each)")
    training.add_argument("--normalize", choices=["present", "all"], default=defaults.normalize,
                          help="Eq. (1) denominator: samples carrying the task, or the whole batch M")
    training.add_argument("--no-augment", action="store_true", help="no random crop, flip or rotation")
    training.add_argument("--no-balance", action="store_true",
                          help="draw batches from the merged set as it is, instead of an equal share of each data set")
    training.add_argument("--batch-norm-batches", type=int, default=defaults.batch_norm_batches,
                          help="recompute batch-norm's statistics over this many training batches before each "
                               "evaluation (0: keep the running averages)")
    training.add_argument("--seed", type=int, default=defaults.seed)
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", type=Path, default=None, help="default $MINIMTL_DATA or ~/.cache/minimtl/data")
    data.add_argument("--shared", type=Path, default=Path(os.environ.get("MINIMTL_SHARED", REPOSITORY.parent / "shared")),
                      help="folder whose data/ holds the archives (default $MINIMTL_SHARED or ../shared)")
    data.add_argument("--detector", choices=["mtcnn", "yunet", "res10"], default="mtcnn", help="face detector for GENKI-4K")
    data.add_argument("--synthetic", action="store_true", help="train on drawn faces (no real data needed)")
    data.add_argument("--limit", type=int, default=None, help="use at most this many images per data set (quick runs)")
    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", type=Path, default=None, help="default runs/config-<CONFIG>")
    run.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    run.add_argument("--compare", action="store_true", help="train A (per task), B and C and write Table 2")
    run.add_argument("--backend", choices=["cython", "numba", "numpy"], default=None, help="kernel backend")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    arguments = parser.parse_args(argv)
    if arguments.limit is not None and arguments.limit < 10:
        parser.error("--limit must be at least 10")
    if arguments.batch_norm_batches < 0:
        parser.error("--batch-norm-batches must be 0 or more")
    return arguments


def train_config(arguments: argparse.Namespace, **overrides) -> TrainConfig:
    task_weights = {}
    for item in filter(None, arguments.task_weights.split(",")):
        task, _, value = item.partition("=")
        task_weights[task.strip()] = float(value)
    values = dict(config=arguments.config, tasks=tuple(t.strip() for t in arguments.tasks.split(",") if t.strip()),
                  epochs=arguments.epochs, batch_size=arguments.batch_size, lr=arguments.lr,
                  decay_rate=arguments.decay_rate, decay_steps=arguments.decay_steps, staircase=arguments.staircase,
                  momentum=arguments.momentum, nesterov=arguments.nesterov, weight_decay=arguments.weight_decay,
                  task_weights=task_weights, dropout=arguments.dropout, init=arguments.init,
                  batch_norm_scale=arguments.batch_norm_scale, normalize=arguments.normalize,
                  augment=not arguments.no_augment, balance=not arguments.no_balance,
                  batch_norm_batches=arguments.batch_norm_batches, seed=arguments.seed)
    values.update(overrides)
    return TrainConfig(**values)


def locate(name: str, arguments: argparse.Namespace) -> Path | None:
    """Where data set ``name`` can be read from: its extracted folder, a local archive, or a fresh download."""
    source = DATASETS[name]
    root = data_root(arguments.data_root)
    if (root / source.folder).is_dir():
        return root / source.folder
    for candidate in (root / "downloads" / source.archive_name, arguments.shared / "data" / source.archive_name):
        if candidate.is_file():
            return candidate
    try:
        return fetch(name, root=root, progress=not arguments.quiet)
    except Exception as error:  # offline, no upstream address, refused: fall back below
        print(f"{source.title}: not under {root} or {arguments.shared / 'data'}, and fetching failed: {error}")
        return None


def limited(dataset, limit: int | None, seed: int):
    if limit is None or len(dataset) <= limit:
        return dataset
    import numpy as np

    return dataset.subset(np.sort(np.random.default_rng(seed).choice(len(dataset), limit, replace=False)))


def load_data(arguments: argparse.Namespace, tasks: tuple[str, ...]) -> tuple[MultiTaskDataset, MultiTaskDataset, str]:
    """``(train, test, description)`` for ``tasks``: GENKI-4K for smile, UTKFace for gender and age."""
    progress = not arguments.quiet
    want_smile, want_faces = "smile" in tasks, bool({"gender", "age"} & set(tasks))
    sources = {}
    if not arguments.synthetic:
        if want_smile:
            sources["genki4k"] = locate("genki4k", arguments)
        if want_faces:
            sources["utkface"] = locate("utkface", arguments)
    if arguments.synthetic or None in sources.values():
        count = arguments.limit or 2000
        print(f"Using SYNTHETIC drawn faces ({count} per source), not real photos"
              + ("" if arguments.synthetic else ": the real data could not be found or fetched (see above)"))
        members = []
        if want_smile:
            members.append(SyntheticFaces(count, arguments.seed, tasks=("smile",)))
        if want_faces:
            members.append(SyntheticFaces(count, arguments.seed + 1, tasks=tuple(t for t in ("gender", "age") if t in tasks)))
        data = MultiTaskDataset(members, tasks)
        train, test = data.split(0.2, seed=arguments.seed)
        return train, test, "SYNTHETIC drawn faces (minimtl.data.SyntheticFaces), not real photos"

    members, notes = [], []
    if want_smile:
        from minimtl.faces import FaceCropper

        started = time.perf_counter()
        weights = arguments.shared / "weights"
        if arguments.detector != "mtcnn" and weights.is_dir():
            os.environ.setdefault("MINIMTL_WEIGHTS", str(weights))
        genki = GENKI4K(sources["genki4k"], root=arguments.data_root, crop=FaceCropper(detector=arguments.detector),
                        progress=progress)
        seconds = time.perf_counter() - started
        print(f"GENKI-4K: {len(genki)} faces cropped with {arguments.detector} ({len(genki.rejected)} images without a face) "
              f"in {seconds:.0f} s")
        notes.append(f"GENKI-4K cropped with {arguments.detector}: {len(genki)} of {len(genki) + len(genki.rejected)} "
                     f"images kept, {seconds:.0f} s (0 s means the crop cache was used)")
        members.append(limited(genki, arguments.limit, arguments.seed))
    if want_faces:
        started = time.perf_counter()
        utk = UTKFace(sources["utkface"], root=arguments.data_root, progress=progress)
        print(f"UTKFace: {len(utk)} faces in {time.perf_counter() - started:.0f} s")
        members.append(limited(utk, arguments.limit, arguments.seed))
    data = MultiTaskDataset(members, tasks)
    # GENKI-4K: the paper's 1000 test images (fewer with --limit); UTKFace: 20%.
    sizes = {"GENKI-4K": 1000 if arguments.limit is None else max(len(members[0]) // 4, 1)} if want_smile else None
    train, test = data.split(sizes, seed=arguments.seed)
    description = " + ".join(f"{d.name} ({len(d)} train / {len(t)} test)" for d, t in zip(train.datasets, test.datasets))
    return train, test, description + ("" if not notes else "; " + "; ".join(notes))


def run_one(config: TrainConfig, train: MultiTaskDataset, test: MultiTaskDataset, run_dir: Path,
            arguments: argparse.Namespace, description: str) -> dict[str, float]:
    print(f"\nConfig {config.config}, tasks {', '.join(config.tasks)} → {run_dir}")
    train.print_class_counts()
    started = time.perf_counter()
    try:
        model, history = fit(config, train, test, run_dir, resume=arguments.resume and (run_dir / "checkpoint.npz").exists(),
                             progress=not arguments.quiet)
    except NonFiniteLoss as error:
        sys.exit(f"training stopped: {error}")
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted; every finished epoch is in {run_dir / 'checkpoint.npz'}: "
                 f"continue with the same command plus --resume --run-dir {run_dir}")
    wall = time.perf_counter() - started
    config = TrainConfig.from_json((run_dir / "config.json").read_text())  # as run: with the fitted decay_steps
    print(f"trainable parameters: {model.num_parameters():,}")
    fps = measure_fps(model, (1, 128), seconds=2.0)
    report = write_report(run_dir, config, history, model, test, data_description=description, wall_seconds=wall,
                          fps=fps, notes=[f"kernel backend: {kernels.backend_name()}"])
    print(f"report: {report}")
    return {task: values["accuracy"] for task, values in history[-1]["test"].items()}


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    if arguments.backend:
        kernels.set_backend(arguments.backend)
    config = train_config(arguments)
    run_dir = arguments.run_dir or REPOSITORY / "runs" / f"config-{config.config}"
    train, test, description = load_data(arguments, config.tasks if not arguments.compare else ("smile", "gender", "age"))
    print(f"data: {description}")
    if not arguments.compare:
        run_one(config, train, test, run_dir, arguments, description)
        return
    results = {}
    for task in ("smile", "gender", "age"):  # Config A: one network per task, on that task's data alone
        members = [i for i, d in enumerate(train.datasets) if task in d.tasks]
        task_train = MultiTaskDataset([train.datasets[i] for i in members], (task,))
        task_test = MultiTaskDataset([test.datasets[i] for i in members], (task,))
        accuracy = run_one(train_config(arguments, config="A", tasks=(task,)), task_train, task_test,
                           run_dir / f"A-{task}", arguments, description)
        results.setdefault("A", {}).update(accuracy)
    for name in ("B", "C"):
        results[name] = run_one(train_config(arguments, config=name, tasks=("smile", "gender", "age")), train, test,
                                run_dir / name, arguments, description)
    table = write_comparison(results, run_dir / "table2.md", description)
    print(table.read_text())


if __name__ == "__main__":
    main()
