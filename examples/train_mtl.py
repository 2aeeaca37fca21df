"""The whole job: data archives → face crops → a trained multi-task BKNet → the paper's tables and figures.

    python examples/train_mtl.py                       # Config C: smile on GENKI-4K, gender and age on WIKI
    python examples/train_mtl.py --datasets genki4k,wiki,utkface --epochs 8
    python examples/train_mtl.py --config B --epochs 5
    python examples/train_mtl.py --resume --run-dir runs/config-C
    python examples/train_mtl.py --compare --seeds 0,1,2   # Table 2 over seeds: A (per task), B and C, with intervals
    python examples/train_mtl.py --synthetic --epochs 2 --limit 256   # a quick look, no real data
    mpirun -np 2 python examples/train_mtl.py --distributed            # data-parallel over MPI (minimtl/distributed.py)

Where the data come from, in order: the extracted data sets under the data root
(``--data-root`` or ``$MINIMTL_DATA``, default ``~/.cache/minimtl/data``); the
archives (``genki4k.tar``; ``wiki_crop.tar`` or the part of it in
``wiki_crop_64.tar.gz``; ``imdb_crop.tar``; ``UTKFace.tar.gz``) in
``<data root>/downloads`` or in ``$MINIMTL_SHARED/data`` (default ``../shared``
beside the repository); a download with ``python -m minimtl.data fetch``.  If
none works, the run says so in one line and trains on drawn synthetic faces,
so the pipeline can always be seen working.

Faces: every image of every data set goes through the same framing
(``minimtl.faces.FaceCropper``, ``--detector``): the detector's five landmarks
placed on one template, grayscale, 48×48, as in Section 3.1; a face the
detector misses is cropped at its data set's median face position and named.
Crops are cached under the data root, so a second run starts training at once.
``--scheduler tcp://HOST:PORT`` or ``--cluster local:N`` crops them on a Dask cluster
instead of the local process pool (``pip install "minimtl[distributed]"``, docs/distributed.md).
Splits: GENKI-4K the paper's 1000 test images, WIKI the people of folders
80–89, UTKFace 20%; data sets in ``--eval-datasets`` not trained on are tested
too (the report's cross-data-set rows).

The run folder (``--run-dir``, default ``runs/config-<C>``) receives
config.json, checkpoint.npz (every epoch), model.npz, metrics.csv/json,
figure6_curves.png, figure7_errors.png, confusion_<task>.png, predictions.npz and report.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # run from a checkout without installing

from minimtl import cli, compare, kernels  # noqa: E402
from minimtl.compare import parse_seeds  # noqa: E402
from minimtl.data import (DATASETS, GENKI4K, IMDBWIKI, TASKS, MultiTaskDataset, SyntheticFaces,  # noqa: E402
                          UTKFace, data_root, fetch)
from minimtl.faces.distributed import add_cluster_options, cluster_from_options  # noqa: E402
from minimtl.report import measure_fps, write_report  # noqa: E402
from minimtl.train import NonFiniteLoss, TrainConfig, evaluate_by_dataset, fit  # noqa: E402


PROG = "examples/train_mtl.py"
#: What the default run trains on: smile from GENKI-4K, gender and age from WIKI, as Section 4.3 (with IMDB-WIKI).
DEFAULT_DATASETS = "genki4k,wiki"
#: The data sets the main job can train or test on: ``--datasets`` / ``--eval-datasets`` name them.
#: Each entry: the class, its tasks, the minimtl.data.fetch key, and the archive names to look for.
DATA_SETS = {
    "genki4k": (GENKI4K, ("smile",), "genki4k", ("genki4k.tar",)),
    # The full upstream wiki_crop.tar, or the part of it these machines hold (../shared/data/wiki_crop_64.tar.gz).
    "wiki": (IMDBWIKI, ("gender", "age"), "wiki_crop", ("wiki_crop.tar", "wiki_crop_64.tar.gz")),
    "imdb": (IMDBWIKI, ("gender", "age"), "imdb_crop", ("imdb_crop.tar",)),
    "utkface": (UTKFace, ("gender", "age"), "utkface", ("UTKFace.tar.gz",)),
}


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    # Every TrainConfig field is an option (--batch-size for batch_size), defined once in minimtl/train.py.
    cli.add_config_options(parser, TrainConfig, {"model": parser.add_argument_group("model"),
                                                 "training": parser.add_argument_group("training (defaults: Section 4.3)")})
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", type=Path, default=None, help="default $MINIMTL_DATA or ~/.cache/minimtl/data")
    data.add_argument("--shared", type=Path, default=Path(os.environ.get("MINIMTL_SHARED", REPOSITORY.parent / "shared")),
                      help="folder whose data/ holds the archives (default $MINIMTL_SHARED or ../shared)")
    data.add_argument("--datasets", default=DEFAULT_DATASETS,
                      help=f"data sets to train on, comma-separated from {', '.join(DATA_SETS)} (default {DEFAULT_DATASETS})")
    data.add_argument("--eval-datasets", default="utkface,wiki",
                      help="data sets also tested on when not trained on: the cross-data-set rows of the report")
    data.add_argument("--detector", choices=["mtcnn", "yunet", "res10"], default="mtcnn",
                      help="face detector of the one face framing, for every data set")
    data.add_argument("--split-seed", type=int, default=0,
                      help="which images are held out for testing (GENKI-4K, UTKFace); the same for every --seed, "
                           "so runs of different seeds are tested on the same faces")
    data.add_argument("--synthetic", action="store_true", help="train on drawn faces (no real data needed)")
    data.add_argument("--limit", type=int, default=None, help="use at most this many images per data set (quick runs)")
    add_cluster_options(data, "crop the data sets' faces")
    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", type=Path, default=None, help="default runs/config-<CONFIG>")
    run.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    run.add_argument("--compare", action="store_true",
                     help="train A (per task), B and C for every --seeds and write Table 2 with intervals "
                          "(run folder default runs/compare; finished runs are skipped, an interrupted one resumed)")
    run.add_argument("--seeds", default="0", help="--compare: comma-separated seeds, e.g. 0,1,2")
    run.add_argument("--record", type=Path, default=None,
                     help="--compare: folder of the finished runs' records, from which the tables are made; a "
                          "recorded run is skipped (default <run-dir>/record; a few KB a run, no images: copy or "
                          "commit it to go on with the comparison elsewhere)")
    run.add_argument("--distributed", action="store_true",
                     help="train data-parallel on the processes mpirun started (mpirun -np N --host a,b python "
                          f"{PROG} --distributed ...): each takes a shard of every batch; needs "
                          "pip install \"minimtl[distributed]\"; rank 0 alone writes and prints")
    run.add_argument("--backend", choices=["cython", "numba", "numpy"], default=None, help="kernel backend")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    arguments = parser.parse_args(argv)
    if arguments.limit is not None and arguments.limit < 10:
        parser.error("--limit must be at least 10")
    if arguments.batch_norm_batches < 0:
        parser.error("--batch-norm-batches must be 0 or more")
    try:
        arguments.seeds = parse_seeds(arguments.seeds)
    except ValueError as error:
        parser.error(str(error))
    check_arguments(parser, arguments)
    # where the data sets' faces are cropped: the local process pool (None), or a Dask cluster
    arguments.crop_workers = cluster_from_options(arguments.scheduler, arguments.cluster)
    return arguments


def check_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    """A one-line usage error for every option value training cannot use (before any data is read)."""
    import math

    def bad(option: str, value, wanted: str) -> None:
        parser.error(f"{option} must be {wanted}, got {value}")

    if arguments.epochs < 1:
        bad("--epochs", arguments.epochs, "at least 1 (to add epochs to a run, give the larger total with --resume)")
    if arguments.batch_size < 2:
        bad("--batch-size", arguments.batch_size, "at least 2 (batch-norm needs two faces per batch)")
    a = arguments
    for option, value, fits, wanted in (("--lr", a.lr, 0 < a.lr, "above 0"),
                                        ("--dropout", a.dropout, 0 <= a.dropout < 1, "at least 0 and below 1"),
                                        ("--momentum", a.momentum, 0 <= a.momentum < 1, "at least 0 and below 1"),
                                        ("--decay-rate", a.decay_rate, 0 < a.decay_rate <= 1, "above 0 and at most 1"),
                                        ("--weight-decay", a.weight_decay, 0 <= a.weight_decay, "0 or more"),
                                        ("--weight-average", a.weight_average, 0 <= a.weight_average < 1,
                                         "at least 0 and below 1"),
                                        ("--label-smoothing", a.label_smoothing, 0 <= a.label_smoothing < 1,
                                         "at least 0 and below 1")):
        if not (math.isfinite(value) and fits):
            bad(option, value, f"a finite number {wanted}")
    if arguments.decay_steps is not None and arguments.decay_steps < 1:
        bad("--decay-steps", arguments.decay_steps, "at least 1")
    if arguments.seed < 0 or arguments.split_seed < 0:
        parser.error("--seed and --split-seed must be 0 or more")
    tasks = [t.strip() for t in arguments.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown:
        bad("--tasks", arguments.tasks, f"comma-separated tasks from {','.join(TASKS)}")
    if arguments.distributed and (arguments.scheduler or arguments.cluster):
        parser.error("--scheduler/--cluster with --distributed: every rank would crop the same data sets on the cluster "
                     "at once; crop them first in one run without --distributed (every rank then reads the crop cache)")
    if arguments.distributed and arguments.compare:
        parser.error("--distributed trains one run: leave out --compare (or run the comparison's runs one by one)")
    if arguments.config == "A" and len(tasks) != 1 and not arguments.compare:
        parser.error(f"--config A trains one task: give one --tasks (got {arguments.tasks})")
    for item in filter(None, arguments.task_weights.split(",")):
        task, _, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if task.strip() not in TASKS or not (math.isfinite(weight) and weight >= 0):
            bad("--task-weights", arguments.task_weights, "task=weight pairs such as smile=2,age=1 (weights 0 or more)")


def train_config(arguments: argparse.Namespace, **overrides) -> TrainConfig:
    """The run's ``TrainConfig``: the parsed options, then ``overrides`` (field name -> value)."""
    return cli.config_from_arguments(TrainConfig, arguments, **overrides)


def dataset_names(text: str, option: str) -> tuple[str, ...]:
    """``"genki4k,wiki"`` → ``("genki4k", "wiki")``; an unknown name is a one-line usage error."""
    names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in DATA_SETS]
    if unknown:
        raise cli.UsageError(f"{option}: unknown data set {', '.join(unknown)}; choose from {', '.join(DATA_SETS)}")
    return names


def locate(name: str, arguments: argparse.Namespace, quiet_failure: bool = False) -> Path | None:
    """Where data set ``name`` can be read from: its extracted folder, a local archive, or a fresh download."""
    fetch_name, archives = DATA_SETS[name][2], DATA_SETS[name][3]
    source = DATASETS[fetch_name]
    root = data_root(arguments.data_root)
    if (root / source.folder).is_dir():
        return root / source.folder
    for archive in archives:
        for candidate in (root / "downloads" / archive, arguments.shared / "data" / archive):
            if candidate.is_file():
                return candidate
    try:
        return fetch(fetch_name, root=root, progress=not arguments.quiet)
    except Exception as error:  # offline, no upstream address, refused: fall back below
        if not quiet_failure:
            print(f"{source.title}: not under {root} or {arguments.shared / 'data'}, and fetching failed: {error}")
        return None


def limited(dataset, limit: int | None, seed: int):
    if limit is None or len(dataset) <= limit:
        return dataset
    import numpy as np

    return dataset.subset(np.sort(np.random.default_rng(seed).choice(len(dataset), limit, replace=False)))


def load_dataset(name: str, path: Path, arguments: argparse.Namespace):
    """Data set ``name`` read from ``path``, every image through the one face framing, cropping timed."""
    from minimtl.faces import FaceCropper

    weights = arguments.shared / "weights"
    if arguments.detector != "mtcnn" and weights.is_dir():
        os.environ.setdefault("MINIMTL_WEIGHTS", str(weights))
    cls = DATA_SETS[name][0]
    options = {"part": "imdb" if name == "imdb" else "wiki"} if cls is IMDBWIKI else {}
    started = time.perf_counter()
    dataset = cls(path, root=arguments.data_root, crop=FaceCropper(detector=arguments.detector),
                  progress=not arguments.quiet, workers=arguments.crop_workers, **options)
    seconds = time.perf_counter() - started
    print(f"{dataset.name}: {len(dataset)} faces ({len(dataset.fallbacks)} by the fallback crop, "
          f"{len(dataset.rejected)} left out) in {seconds:.0f} s")
    return dataset, (f"{dataset.name}: {len(dataset)} faces cropped with {arguments.detector} in {seconds:.0f} s "
                     f"({len(dataset.fallbacks)} at the data set's median face position because the detector missed "
                     f"them, {len(dataset.rejected)} left out)")


def split_member(dataset, arguments: argparse.Namespace):
    """``(train, test)`` of one data set: its ``default_split`` (GENKI-4K 1000 test images, IMDB-WIKI whole folders
    80–89, UTKFace 20%); with ``--limit``, a random quarter."""
    if arguments.limit is not None:
        return dataset.split(max(len(dataset) // 4, 1), seed=arguments.split_seed)
    return dataset.default_split(seed=arguments.split_seed)


def load_data(arguments: argparse.Namespace, tasks: tuple[str, ...]) -> tuple[MultiTaskDataset, MultiTaskDataset,
                                                                              MultiTaskDataset | None, str]:
    """``(train, test, cross-test or None, description)`` for ``tasks``.

    Trains on ``--datasets`` (those carrying one of ``tasks``); the test
    halves of ``--eval-datasets`` that are found, and not trained on, form
    the cross-data-set test set (None when there are none).
    """
    names = [name for name in dataset_names(arguments.datasets, "--datasets") if set(DATA_SETS[name][1]) & set(tasks)]
    if not names:
        raise cli.UsageError(f"--datasets {arguments.datasets}: none of them labels {', '.join(tasks)}")
    cross_names = [name for name in dataset_names(arguments.eval_datasets, "--eval-datasets")
                   if name not in names and set(DATA_SETS[name][1]) & set(tasks)]
    sources = {} if arguments.synthetic else {name: locate(name, arguments) for name in names}
    if arguments.synthetic or None in sources.values():
        count = arguments.limit or 2000
        print(f"Using SYNTHETIC drawn faces ({count} per source), not real photos"
              + ("" if arguments.synthetic else ": the real data could not be found or fetched (see above)"))
        members = []
        if "smile" in tasks:
            members.append(SyntheticFaces(count, arguments.seed, tasks=("smile",)))
        if {"gender", "age"} & set(tasks):
            members.append(SyntheticFaces(count, arguments.seed + 1, tasks=tuple(t for t in ("gender", "age") if t in tasks)))
        data = MultiTaskDataset(members, tasks)
        train, test = data.split(0.2, seed=arguments.seed)
        return train, test, None, "SYNTHETIC drawn faces (minimtl.data.SyntheticFaces), not real photos"

    trains, tests, notes = [], [], []
    for name in names:
        dataset, note = load_dataset(name, sources[name], arguments)
        notes.append(note)
        train, test = split_member(limited(dataset, arguments.limit, arguments.split_seed), arguments)
        trains.append(train)
        tests.append(test)
    cross = []
    for name in cross_names:
        path = locate(name, arguments, quiet_failure=True)
        if path is None:
            print(f"{name}: not found, so no cross-data-set test on it")
            continue
        dataset, note = load_dataset(name, path, arguments)
        notes.append(note + " (test only)")
        cross.append(split_member(limited(dataset, arguments.limit, arguments.split_seed), arguments)[1])
    train, test = MultiTaskDataset(trains, tasks), MultiTaskDataset(tests, tasks)
    cross_test = MultiTaskDataset(cross, tasks) if cross else None
    description = " + ".join(f"{d.name} ({len(d)} train / {len(t)} test)" for d, t in zip(train.datasets, test.datasets))
    if cross_test is not None:
        description += "; tested without training on: " + ", ".join(f"{d.name} ({len(d)} test)" for d in cross)
    return train, test, cross_test, description + "; " + "; ".join(notes)


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` and check it can be written: a full or read-only disk fails now, not after the data load."""
    import tempfile

    if run_dir.exists() and not run_dir.is_dir():
        raise cli.UsageError(f"--run-dir {run_dir} is a file: give a folder (it is created if absent)")
    run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=run_dir) as probe:
        probe.write(b"\0" * 65536)
        probe.flush()
        os.fsync(probe.fileno())


def check_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    """Refuse, in one line, a run that would overwrite another, or a --resume that has nothing (or something else) to
    continue; then ``prepare_run_dir``."""
    from minimtl.train import config_differences, read_checkpoint

    if run_dir.exists() and not run_dir.is_dir():
        raise cli.UsageError(f"--run-dir {run_dir} is a file: give a folder (it is created if absent)")
    checkpoint = run_dir / "checkpoint.npz"
    if resume:
        if not checkpoint.is_file():
            others = sorted(p.parent.name for p in run_dir.parent.glob("*/checkpoint.npz")) if run_dir.parent.is_dir() else []
            raise cli.UsageError(f"--resume: there is no run to continue in {run_dir} (no checkpoint.npz): check "
                                 f"--run-dir" + (f" (runs beside it: {', '.join(others[:5])})" if others else "")
                                 + ", or leave out --resume to start a new run")
        saved, done = read_checkpoint(checkpoint)
        if config.epochs < done:
            raise cli.UsageError(f"--resume: {run_dir} has already trained {done} epochs; give --epochs {done} to "
                                 f"rewrite its report, or more to train further")
        ignore = ("epochs",) + (("decay_steps",) if config.decay_steps is None else ())
        differences = config_differences(saved, config, ignore)
        if differences:
            raise cli.UsageError(f"--resume: {run_dir} was trained with other options (" + "; ".join(differences)
                                 + "): give the options it was trained with, or choose another --run-dir")
    elif checkpoint.exists() or (run_dir / "model.npz").exists():
        raise cli.UsageError(f"{run_dir} already holds a run: add --resume to continue it, or choose another "
                             f"--run-dir (or remove that folder) to start a new one")
    prepare_run_dir(run_dir)


def run_one(config: TrainConfig, train: MultiTaskDataset, test: MultiTaskDataset, run_dir: Path,
            arguments: argparse.Namespace, description: str, cross_test: MultiTaskDataset | None = None,
            resume: bool | None = None, communicator=None) -> dict[str, float]:
    print(f"\nConfig {config.config}, tasks {', '.join(config.tasks)} → {run_dir}")
    train.print_class_counts()
    if resume is None:
        resume = arguments.resume and (run_dir / "checkpoint.npz").exists()
    started = time.perf_counter()
    try:
        model, history = fit(config, train, test, run_dir, resume=resume, progress=not arguments.quiet,
                             communicator=communicator)
    except NonFiniteLoss as error:
        sys.exit(f"training stopped: {error}")
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted; every finished epoch is in {run_dir / 'checkpoint.npz'}: "
                 f"continue with the same command plus --resume --run-dir {run_dir}")
    wall = time.perf_counter() - started
    if communicator is not None and communicator.rank != 0:  # rank 0 alone measures and writes the report
        return {task: values["accuracy"] for task, values in history[-1]["test"].items()}
    config = TrainConfig.from_json((run_dir / "config.json").read_text())  # as run: with the fitted decay_steps
    print(f"trainable parameters: {model.num_parameters():,}")
    fps = measure_fps(model, (1, 128), seconds=2.0)
    cross = None
    if cross_test is not None:
        cross_test = MultiTaskDataset(cross_test.datasets, tuple(t for t in config.tasks if t in cross_test.tasks))
        cross = evaluate_by_dataset(model, cross_test, config.test_flip)[1]
    report = write_report(run_dir, config, history, model, test, data_description=description, wall_seconds=wall,
                          fps=fps, notes=[f"kernel backend: {kernels.backend_name()}"], cross=cross)
    print(f"report: {report}")
    return {task: values["accuracy"] for task, values in history[-1]["test"].items()}


def distributed_communicator():
    """``--distributed``: the MPI processes' communicator; a one-line usage error without mpi4py or mpirun."""
    from minimtl import distributed

    if not distributed.mpi_available():
        raise cli.UsageError(f"--distributed needs mpi4py and an MPI library: {distributed.INSTALL_HINT}")
    if not distributed.launched_by_mpirun():
        raise cli.UsageError(f"--distributed: start the processes with mpirun, e.g. mpirun -np 2 python {PROG} "
                             f"--distributed ... (one process is fine: mpirun -np 1)")
    return distributed.Communicator()


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    if not arguments.distributed:
        return train_and_report(arguments)
    communicator = distributed_communicator()
    if communicator.size == 1:
        return train_and_report(arguments, communicator)
    if communicator.rank != 0:
        sys.stdout = open(os.devnull, "w")  # rank 0 alone prints
    try:
        return train_and_report(arguments, communicator)
    except (cli.UsageError, SystemExit, NonFiniteLoss) as error:  # raised alike on every rank: rank 0 says it once
        if communicator.rank != 0:
            code = error.code if isinstance(error, SystemExit) else None
            raise SystemExit(cli.USAGE_EXIT if isinstance(error, cli.UsageError) else
                             code if isinstance(code, int) else cli.DATA_EXIT) from None
        raise
    except Exception as error:  # perhaps on this rank alone, while the others wait in a collective: end them all
        if os.environ.get(cli.DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0") or "--debug" in (argv or sys.argv):
            import traceback

            traceback.print_exc()
        print(f"{PROG}: error on rank {communicator.rank} of {communicator.size}: {cli.error_line(error)}",
              file=sys.stderr, flush=True)
        communicator.abort(cli.DATA_EXIT)


def train_and_report(arguments: argparse.Namespace, communicator=None) -> None:
    if arguments.backend:
        kernels.set_backend(arguments.backend)
    config = train_config(arguments)
    run_dir = arguments.run_dir or REPOSITORY / "runs" / f"config-{config.config}"
    if arguments.compare:
        prepare_run_dir(arguments.run_dir or REPOSITORY / "runs" / "compare")
    else:
        check_run_dir(run_dir, config, arguments.resume)
    train, test, cross_test, description = load_data(arguments, config.tasks if not arguments.compare
                                                     else TASKS)
    print(f"data: {description}")
    if not arguments.compare:
        run_one(config, train, test, run_dir, arguments, description, cross_test, communicator=communicator)
        return
    run_comparison(arguments, train, test, cross_test, description)


def single_task_part(data: MultiTaskDataset, task: str) -> MultiTaskDataset:
    """The member data sets of ``data`` that carry ``task``, labelled for it alone."""
    return MultiTaskDataset([d for d in data.datasets if task in d.tasks], (task,))


def comparison_config(arguments: argparse.Namespace, run: compare.Run, seed: int, train: MultiTaskDataset) -> TrainConfig:
    """The recipe of the default run for ``run``; Config A sees as many samples of its task per epoch as B and C.

    ``train``: the whole multi-task training set that B and C train on (not A's part of it).  With balanced
    batches, B and C give each of their data sets the longest one's length per epoch (GENKI-4K's 3,000 faces
    are drawn 30,494 times, as many as WIKI has); Config A gives each of its (fewer) data sets the same."""
    overrides = dict(config=run.config, tasks=run.tasks, seed=seed)
    if run.config == "A":
        longest = max(len(d) for d in train.datasets)
        overrides["epoch_samples"] = longest * len(single_task_part(train, run.tasks[0]).datasets)
    return train_config(arguments, **overrides)


def seconds_per_step(config: TrainConfig, train: MultiTaskDataset, steps: int = 3) -> float:
    """Time a few training steps of ``config`` on real batches (the first is a warm-up)."""
    from minimtl.train import build_model, build_optimizer, fit_schedule, train_loader, train_step

    config = fit_schedule(config, 1)
    model, batches = build_model(config), iter(train_loader(train, config, 0))
    optimizer = build_optimizer(model, config)
    train_step(model, optimizer, next(batches), config)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, next(batches), config)
    return (time.perf_counter() - started) / steps


def run_comparison(arguments: argparse.Namespace, train: MultiTaskDataset, test: MultiTaskDataset,
                   cross_test: MultiTaskDataset | None, description: str) -> None:
    """Table 2 over ``--seeds``: every run of ``compare.RUNS`` per seed, resumable; then the tables and figure."""
    from minimtl.train import train_loader

    root = arguments.run_dir or REPOSITORY / "runs" / "compare"
    record = arguments.record or root / "record"
    timings_file = root / "timings.json"  # wall time per run folder, summed over its resumed pieces
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    compare.record_finished(root, record, arguments.seeds, timings)
    plan = compare.comparison_plan(arguments.seeds)
    parts = {run.label: (train, test) if run.config != "A" else
             (single_task_part(train, run.tasks[0]), single_task_part(test, run.tasks[0])) for run, _ in plan}
    remaining = 0
    for run, seed in plan:
        folder = run.folder(root, seed)
        if run.record(record, seed).is_file():
            continue
        config = comparison_config(arguments, run, seed, train)
        done = 0
        if (folder / "checkpoint.npz").is_file():
            from minimtl import serialization

            done = int(serialization.load(folder / "checkpoint.npz")["epoch"]) + 1
        remaining += max(config.epochs - done, 0) * len(train_loader(parts[run.label][0], config, 0))
    finished = sum(run.record(record, seed).is_file() for run, seed in plan)
    if remaining:
        step = seconds_per_step(comparison_config(arguments, compare.RUNS[-1], arguments.seeds[0], train), train)
        print(f"\n--compare: {len(plan)} runs ({finished} already recorded in {record}), {remaining:,} training "
              f"steps to go at {step:.2f} s a step: about {remaining * step / 3600:.1f} hours before evaluation. "
              f"Interrupt at any time; the same command resumes.")
    for run, seed in plan:
        folder = run.folder(root, seed)
        if run.record(record, seed).is_file():
            continue
        if not compare.is_finished(folder):
            run_train, run_test = parts[run.label]
            started = time.perf_counter()
            run_one(comparison_config(arguments, run, seed, train), run_train, run_test, folder, arguments,
                    description, cross_test, resume=(folder / "checkpoint.npz").is_file())
            timings[folder.name] = timings.get(folder.name, 0.0) + time.perf_counter() - started
            root.mkdir(parents=True, exist_ok=True)
            timings_file.write_text(json.dumps(timings, indent=2))
        compare.record_run(folder, run.record(record, seed), timings.get(folder.name))
    summary = compare.summarize(record, arguments.seeds)
    table3 = table3_rows(arguments)
    seconds, timed = compare.recorded_seconds(record, arguments.seeds)
    wall = (f"Wall time of {timed} of the {len(plan)} runs: {seconds / 3600:.1f} hours of training and "
            f"evaluation, as recorded with each run.") if timed else ""
    table = compare.write_tables(summary, root / "table2_seeds.md", description, table3, wall)
    compare.plot_comparison(summary, root / "table2_seeds.png")
    print(table.read_text())


def table3_rows(arguments: argparse.Namespace) -> list[str]:
    """Table 3 for A, B and C measured in this process: parameters, images/s at batch 1 and 128, and the cost
    of three single-task A models against one C."""
    from minimtl.models import PAPER_FPS, PAPER_PARAMETERS, BKNet

    measured = {}
    for config, tasks in (("A", ("smile",)), ("B", TASKS), ("C", TASKS)):
        model = BKNet(config, tasks, init="he", seed=0)
        measured[config] = (model.num_parameters(), measure_fps(model, (1, 128), seconds=2.0))
    rows = ["| | parameters | paper | images/s, batch 1 | images/s, batch 128 | paper FPS |",
            "|---|---:|---:|---:|---:|---:|"]
    for config, (parameters, fps) in measured.items():
        rows.append(f"| Config {config} | {parameters:,} | {PAPER_PARAMETERS[config]:,} | {fps[1]:.1f} | "
                    f"{fps[128]:.1f} | {PAPER_FPS[config]} |")
    a_parameters, a_fps = measured["A"]
    c_parameters, c_fps = measured["C"]
    rows += ["", f"Three single-task A networks (one per task) against one C: {3 * a_parameters:,} against "
                 f"{c_parameters:,} parameters ({3 * a_parameters / c_parameters:.2f}×); per face, "
                 f"{3 * 1000 / a_fps[1]:.1f} against {1000 / c_fps[1]:.1f} ms at batch 1 "
                 f"({3 * c_fps[1] / a_fps[1]:.2f}×) and {3 * 1000 / a_fps[128]:.2f} against {1000 / c_fps[128]:.2f} ms "
                 f"a face at batch 128 ({3 * c_fps[128] / a_fps[128]:.2f}×)."]
    return rows


if __name__ == "__main__":
    sys.exit(cli.run(main, prog=PROG))
