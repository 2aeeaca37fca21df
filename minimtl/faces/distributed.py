"""Face cropping on a Dask cluster: ``crop_images`` spread over several machines, resumable.

``crop_on_dask`` gives exactly what ``minimtl.faces.crop.crop_images`` gives (the same ``CropResult``
list, in the same order, with the same crops), but the work is done by the workers of a Dask
cluster instead of a local process pool:

1. the driver lists the image names (``list_sources``) and cuts them, in that fixed order, into
   shards of ``files_per_shard`` names;
2. a shard whose file ``shard-00012.npz`` is already in ``shard_folder``, written for the same
   names and the same cropper settings, is done: a run that was interrupted resumes where it stopped;
3. every other shard is one task: the worker reads its own files from ``source``, crops them and
   writes the shard's crops and per-file results to ``shard_folder`` atomically (a temporary file,
   then ``os.replace``), and returns only a small summary;
4. a shard that kills the workers that run it (Dask's ``KilledWorker``: a file that crashes the
   decoder, or takes all the memory) is run again one task per file, and a file whose task loses its
   worker too is run once more alone on the cluster (a dying worker takes the tasks queued beside the
   culprit with it): the file that still kills its worker is reported by name with status ``"error"``,
   as ``crop_many`` does, and every other file is cropped;
5. the driver reads the shard files back, in order, into the list of ``CropResult``.

Every worker must see ``source`` and ``shard_folder`` under the same absolute path as the driver: a
shared file system (NFS, a cluster file system) is assumed, nothing is sent over the network but
names, summaries and the few per-file results of a re-run shard.  Each worker needs minimtl and
``pip install "minimtl[distributed]"``.

On several machines::

    dask scheduler                                   # on HOST; listens on tcp://HOST:8786
    MINIMTL_THREADS=1 NUMBA_NUM_THREADS=1 \\
        dask worker tcp://HOST:8786 --nworkers 4 --nthreads 1   # on every machine, one process per core
    python -m minimtl.faces crop /shared/genki4k.tar /shared/out --scheduler tcp://HOST:8786

or, in Python, ``crop_on_dask(source, shard_folder, scheduler="tcp://HOST:8786")``; ``names=`` crops
only the listed members (the data sets' crop step, ``minimtl.data.base.prepare_images`` given a
``DaskCluster``, does so).  On one
machine, ``--cluster local:4`` (``local_workers=4``) starts a ``LocalCluster`` of 4 worker
processes for the run; the local process pool (``--workers``) stays the default, and is as fast on
one machine.  Workers should run one thread each: the parallelism is across
images, as in ``crop_many``.

A shard is read in one pass: directly for a folder or ``.zip``, and for a ``.tar`` from the start of
the archive to the shard's last member, which costs only seeks over an uncompressed ``.tar`` but
decompressing that much of a ``.tar.gz`` (extract a large ``.tar.gz`` into a folder first).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minimtl.files import atomic_write
from minimtl.faces.crop import (SINGLE_THREAD_ENVIRONMENT, CropCache, CropResult, FaceCropper, crop_with_cache,
                                default_cache_dir, iter_bytes, list_sources)

__all__ = ["DaskCluster", "DistributedNotInstalled", "add_cluster_options", "cluster_from_options", "crop_on_dask",
           "import_distributed", "read_shard", "shard_is_complete", "shard_path", "write_shard"]

SHARD_FORMAT = 1  # bump when the layout of a shard file changes, so old shards are recomputed
FILES_PER_SHARD = 200
DIED_MESSAGE = "the worker process died while cropping this image (killed, or out of memory)"  # as crop_many says


class DistributedNotInstalled(ImportError, ValueError):
    """Dask's ``distributed`` is missing: an ImportError, and a ValueError so the command line makes it one line."""


def import_distributed():
    """The ``distributed`` module, or ``DistributedNotInstalled`` saying what to install."""
    try:
        import distributed
    except ImportError as error:
        raise DistributedNotInstalled(f'cropping on a Dask cluster needs Dask\'s distributed ({error}): '
                                      f'pip install "minimtl[distributed]"') from None
    return distributed


# -------------------------------------------------------------------------------- which cluster
@dataclass(frozen=True)
class DaskCluster:
    """Where a crop runs on Dask: a running scheduler, or a ``LocalCluster`` started for the run.

    Attributes:
        scheduler: address of a running scheduler, ``"tcp://HOST:8786"``; or
        local_workers: a ``LocalCluster`` of this many one-thread worker processes on this machine.

    Exactly one of them is given.  ``crop_on_dask(..., **cluster.arguments())`` crops there; the data
    sets take it as ``workers=`` (``GENKI4K(..., workers=DaskCluster(local_workers=2))``).
    """

    scheduler: str | None = None
    local_workers: int | None = None

    def __post_init__(self):
        if (self.scheduler is None) == (self.local_workers is None):
            raise ValueError("a DaskCluster needs one of scheduler='tcp://HOST:PORT' and local_workers=N")
        if self.local_workers is not None and int(self.local_workers) < 1:
            raise ValueError(f"local_workers must be at least 1, got {self.local_workers}")

    def arguments(self) -> dict:
        """``{"scheduler": ...}`` or ``{"local_workers": ...}``: the keyword arguments of ``crop_on_dask``."""
        if self.scheduler is not None:
            return {"scheduler": self.scheduler}
        return {"local_workers": int(self.local_workers)}


SCHEDULER_ADDRESS = re.compile(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")
LOCAL_CLUSTER = re.compile(r"local:(\d+)")


def add_cluster_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "crop") -> None:
    """``--scheduler tcp://HOST:PORT`` and ``--cluster local:N`` (mutually exclusive), read by
    ``cluster_from_options``; ``what`` names the step they move to Dask in the help texts."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                       help=f"{what} on the Dask cluster of this scheduler (its workers must share the paths)")
    group.add_argument("--cluster", metavar="local:N", default=None,
                       help=f"{what} on a Dask cluster of N worker processes started on this machine")


def cluster_from_options(scheduler: str | None, cluster: str | None) -> DaskCluster | None:
    """The ``DaskCluster`` that ``--scheduler`` / ``--cluster`` name; None for the local process pool.

    Raises:
        minimtl.cli.UsageError: a malformed value (the command line says it in one line, exit code 2).
    """
    from minimtl import cli

    if scheduler is not None:
        match = SCHEDULER_ADDRESS.fullmatch(scheduler)
        if match is None or not 0 < int(match.group(3)) < 65536:
            raise cli.UsageError(f"--scheduler {scheduler!r}: give the scheduler's address as tcp://HOST:PORT "
                                 f"(`dask scheduler` prints it; the port is 8786 by default)")
        return DaskCluster(scheduler=scheduler)
    if cluster is not None:
        match = LOCAL_CLUSTER.fullmatch(cluster)
        if match is None or int(match.group(1)) < 1:
            raise cli.UsageError(f"--cluster {cluster!r}: give local:N, N worker processes on this machine "
                                 f"(e.g. local:4); for a cluster of several machines use --scheduler tcp://HOST:PORT")
        return DaskCluster(local_workers=int(match.group(1)))
    return None


# -------------------------------------------------------------------------------- shard files
def shard_path(folder: str | os.PathLike, index: int) -> Path:
    """``folder/shard-00012.npz`` for shard 12."""
    return Path(folder) / f"shard-{index:05d}.npz"


def write_shard(path: str | os.PathLike, results: list[CropResult], settings: str, size: int) -> None:
    """Write one shard's ``CropResult`` list to ``path`` (``.npz``, atomically), under the cropper's ``settings``.

    Arrays, one row per file: ``names``, ``status`` str; ``faces`` int64; ``box`` (n, 4) and ``landmarks``
    (n, 5, 2) float32, ``score`` float64, ``image_size`` (n, 2) int64, each with a ``has_...`` bool mask for
    None; ``notes`` as a JSON list per file; ``crops`` (m, size, size) uint8 for the ``has_crop`` rows only.
    """
    count = len(results)

    def column(values, shape, dtype):
        mask = np.array([v is not None for v in values], dtype=bool)
        array = np.zeros((count,) + shape, dtype)
        for row, value in enumerate(values):
            if value is not None:
                array[row] = value
        return array, mask

    boxes, has_box = column([r.box for r in results], (4,), np.float32)
    landmarks, has_landmarks = column([r.landmarks for r in results], (5, 2), np.float32)
    scores, has_score = column([r.score for r in results], (), np.float64)
    image_sizes, has_image_size = column([r.image_size for r in results], (2,), np.int64)
    crops = [r.crop for r in results if r.crop is not None]
    with atomic_write(path) as stream:
        np.savez(stream, format=np.array(SHARD_FORMAT), settings=np.array(settings),
                 names=np.array([r.source for r in results], dtype=str).reshape(count),
                 status=np.array([r.status for r in results], dtype=str).reshape(count),
                 faces=np.array([r.faces for r in results], dtype=np.int64).reshape(count),
                 box=boxes, has_box=has_box, landmarks=landmarks, has_landmarks=has_landmarks,
                 score=scores, has_score=has_score, image_size=image_sizes, has_image_size=has_image_size,
                 notes=np.array([json.dumps(list(r.notes)) for r in results], dtype=str).reshape(count),
                 has_crop=np.array([r.crop is not None for r in results], dtype=bool).reshape(count),
                 crops=np.stack(crops) if crops else np.zeros((0, size, size), np.uint8))


def read_shard(path: str | os.PathLike) -> tuple[str, list[CropResult]]:
    """``(settings, results)`` of a shard file written by ``write_shard``."""
    with np.load(path, allow_pickle=False) as shard:
        if int(shard["format"]) != SHARD_FORMAT:
            raise ValueError(f"{path} is a shard of format {int(shard['format'])}, not {SHARD_FORMAT}")
        columns = {key: shard[key] for key in shard.files}
    crops = iter(columns["crops"])
    results = []
    for row, name in enumerate(columns["names"].tolist()):
        def optional(key, convert=lambda value: value):
            return convert(columns[key][row]) if columns[f"has_{key}"][row] else None  # noqa: B023  (called in this iteration)

        results.append(CropResult(
            name, str(columns["status"][row]), next(crops) if columns["has_crop"][row] else None,
            int(columns["faces"][row]), optional("box"), optional("score", float),
            tuple(json.loads(str(columns["notes"][row]))), optional("landmarks"),
            optional("image_size", lambda value: (int(value[0]), int(value[1])))))
    return str(columns["settings"]), results


def shard_is_complete(path: str | os.PathLike, names: list[str], settings: str) -> bool:
    """Whether ``path`` holds the results of exactly ``names`` under ``settings``, none of them ``"error"``
    (which may be transient: such a shard is computed again, as ``CropCache`` does not keep errors)."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as shard:  # closed also when damaged
            return (int(shard["format"]) == SHARD_FORMAT and str(shard["settings"]) == settings
                    and shard["names"].tolist() == list(names) and "error" not in shard["status"].tolist())
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return False


# -------------------------------------------------------------------------------- what a worker runs
def _crop_names(source: str, names: list[str], cropper_class: type, options: dict, use_cache: bool,
                cache_folder: str | None, shown_source: str | None,
                cropper: FaceCropper | None = None) -> tuple[FaceCropper, list[CropResult]]:
    """Read ``names`` from ``source`` in one pass and crop them, as ``crop._crop_one`` does, in name order.

    ``cropper``, when given (sent once to every worker by ``crop_on_dask``), is used instead of
    ``cropper_class(**options)``.  A read error names the source as ``shown_source`` (as the user gave it,
    perhaps relative), as ``crop_images`` does.
    """
    import cv2

    cv2.setNumThreads(1)
    if not os.path.exists(source):
        raise FileNotFoundError(f"the worker on {socket.gethostname()} finds no {source}: the source must be on a "
                                f"file system every worker shares, under the same path")
    if cropper is None:
        cropper = cropper_class(**options)  # the detector is loaded once per worker process (get_detector shares it)
    cache = CropCache(cache_folder if cache_folder is not None else default_cache_dir()) if use_cache else None
    results = {}
    items = iter_bytes(source, names)
    try:
        for name, data, error in items:  # a .tar is read from its start only as far as this shard's last member
            if data is None:
                status, message = error if isinstance(error, tuple) else ("unreadable", error or "could not be read")
                if shown_source is not None:
                    message = message.replace(source, shown_source)
                results[name] = CropResult(name, status, notes=(message,))
            else:
                results[name] = crop_with_cache(cropper, data, name, cache)
            if len(results) == len(names):
                break
    finally:
        items.close()
    for name in names:  # as crop_images: a name listed but not yielded is still reported
        results.setdefault(name, CropResult(name, "unreadable", notes=("not found when reading the archive",)))
    return cropper, [results[name] for name in names]


def crop_shard(source: str, names: list[str], path: str, cropper_class: type = FaceCropper, options: dict | None = None,
               use_cache: bool = False, cache_folder: str | None = None, shown_source: str | None = None,
               cropper: FaceCropper | None = None) -> dict:
    """One task: crop ``names`` of ``source``, write them to the shard file ``path``; a small summary back."""
    start = time.perf_counter()
    cropper, results = _crop_names(source, names, cropper_class, dict(options or {}), use_cache, cache_folder,
                                   shown_source, cropper)
    write_shard(path, results, cropper.settings, cropper.size)
    return {"path": path, "files": len(results), "faces": sum(r.has_face for r in results),
            "seconds": time.perf_counter() - start, "host": socket.gethostname()}


def crop_files(source: str, names: list[str], cropper_class: type = FaceCropper, options: dict | None = None,
               use_cache: bool = False, cache_folder: str | None = None, shown_source: str | None = None,
               cropper: FaceCropper | None = None) -> list[CropResult]:
    """One task of a shard run again file by file: the ``CropResult`` themselves come back (a few kB each)."""
    return _crop_names(source, names, cropper_class, dict(options or {}), use_cache, cache_folder, shown_source,
                       cropper)[1]


# -------------------------------------------------------------------------------- the driver
def restore_environment(saved: dict[str, str | None]) -> None:
    """Put back the variables ``saved`` (``{name: value or None}``) in this process's environment.

    A nanny applies ``distributed.nanny.pre-spawn-environ`` to the environment of the process that runs it
    (here: the driver) before it spawns a worker, and leaves it there; Numba and OpenBLAS in the driver would
    then start their thread pools on one thread for the rest of the process.
    """
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _local_cluster(distributed, workers: int):
    import dask

    # Each worker process gets the single-thread environment before it starts (the nanny sets it at every
    # spawn, also when it restarts a killed worker): the parallelism is across images.
    environment = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    environment.update(SINGLE_THREAD_ENVIRONMENT)
    # No dashboard; the scheduler's own small HTTP server (health checks) on a free port rather than on 8787,
    # which another cluster on this machine may hold.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environment}):
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                        dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


def crop_on_dask(source: str | os.PathLike, shard_folder: str | os.PathLike, cropper_options: dict | None = None, *,
                 scheduler: str | None = None, local_workers: int | None = None, names: list[str] | None = None,
                 cropper: FaceCropper | None = None,
                 files_per_shard: int = FILES_PER_SHARD, retries: int = 2, use_cache: bool = True,
                 cache_folder: str | os.PathLike | None = None, cropper_class: type = FaceCropper,
                 progress: bool = True) -> tuple[list[CropResult], list[str]]:
    """Crop every image of a folder or archive on a Dask cluster; what ``crop_images`` returns.

    Args:
        source: folder, ``.tar``, ``.tar.gz`` or ``.zip``, at the same path on every worker.
        shard_folder: where the shard files go (created), on a file system every worker shares.
            A shard already there for the same names and settings is not computed again.
        cropper_options: keyword arguments of ``FaceCropper`` (of ``cropper_class``).
        scheduler: address of a running scheduler, ``"tcp://HOST:8786"``.
        local_workers: instead, start a ``LocalCluster`` of this many one-thread worker processes
            on this machine for the run (one of ``scheduler`` and ``local_workers`` is needed).
        names: crop only these members of ``source``, in this order (``ignored`` is then empty);
            default: every image ``list_sources`` finds.
        cropper: an already built ``FaceCropper`` to use instead of ``cropper_class(**cropper_options)``
            (the data sets' crop step passes its own); sent with every task.
        files_per_shard: names per shard and task; the shards are cut in ``list_sources`` order,
            so a re-run must use the same number to find its shards.
        retries: how often Dask runs a task again that raised (e.g. a shard file that could not be written).
        use_cache, cache_folder: ``CropCache`` on each worker (default folder: each worker's
            ``default_cache_dir()``, on its own machine).
        cropper_class: ``FaceCropper`` or a subclass, importable by the workers.
        progress: tqdm progress bar, counting images.

    Returns:
        ``(results, ignored)``: one ``CropResult`` per image name, in ``list_sources`` order (or that of
        ``names``), and the names skipped because they are not named as images; the same as ``crop_images``.

    Raises:
        DistributedNotInstalled: without Dask's ``distributed``.
        ValueError: without a cluster, or with both; an unreadable source.
        OSError: the scheduler cannot be reached; the source or shard folder is not shared with a worker.
    """
    distributed = import_distributed()
    from tqdm.auto import tqdm

    if (scheduler is None) == (local_workers is None):
        raise ValueError("crop_on_dask needs one of scheduler='tcp://HOST:PORT' and local_workers=N")
    if local_workers is not None and int(local_workers) < 1:
        raise ValueError(f"local_workers must be at least 1, got {local_workers}")
    files_per_shard = int(files_per_shard)
    if files_per_shard < 1:
        raise ValueError(f"files_per_shard must be at least 1, got {files_per_shard}")
    options = dict(cropper_options or {})
    built = cropper  # sent to the workers as it is
    if cropper is None:
        cropper = cropper_class(**options)  # bad options fail here, before any worker is asked
    settings, size = cropper.settings, cropper.size
    shown_source, source = str(source), os.path.abspath(source)  # the workers' working folders are not ours
    shard_folder = Path(os.path.abspath(shard_folder))
    if names is None:
        names, ignored = list_sources(source)
    else:
        names, ignored = list(names), []
        if len(set(names)) != len(names):
            raise ValueError("crop_on_dask: names= lists a member more than once")
    shards = [names[start:start + files_per_shard] for start in range(0, len(names), files_per_shard)]
    todo = [index for index, shard in enumerate(shards)
            if not shard_is_complete(shard_path(shard_folder, index), shard, settings)]
    task_options = dict(cropper_class=cropper_class, options=options, use_cache=bool(use_cache),
                        cache_folder=None if cache_folder is None else os.path.abspath(cache_folder),
                        shown_source=shown_source)
    if built is not None:  # with every task (~2 MB with MTCNN's weights, against seconds of cropping per shard):
        task_options["cropper"] = built  # data scattered once would be lost with the workers that held it
    bar = tqdm(total=len(names), initial=len(names) - sum(len(shards[i]) for i in todo), unit="image",
               desc="cropping faces on Dask", disable=not progress)
    cluster = client = None
    saved = {key: os.environ.get(key) for key in SINGLE_THREAD_ENVIRONMENT}  # see restore_environment
    try:
        if todo:
            if local_workers is not None:
                cluster = _local_cluster(distributed, int(local_workers))
            try:
                client = distributed.Client(cluster if cluster is not None else scheduler, set_as_default=False)
            except OSError as error:
                raise OSError(f"cannot reach the Dask scheduler at {scheduler}: {error} (start one with "
                              f"`dask scheduler`, and workers with `dask worker {scheduler}`)") from None
            shard_folder.mkdir(parents=True, exist_ok=True)
            _run_shards(distributed, client, source, shards, todo, shard_folder, task_options, settings, size, retries,
                        bar)
    finally:
        bar.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
            restore_environment(saved)
    results = []
    for index, shard in enumerate(shards):
        path = shard_path(shard_folder, index)
        shard_settings, shard_results = read_shard(path)
        if shard_settings != settings or [r.source for r in shard_results] != shard:
            raise ValueError(f"{path} was overwritten during the run (by another run into the same folder?)")
        results += shard_results
    return results, ignored


def _run_shards(distributed, client, source: str, shards: list[list[str]], todo: list[int], shard_folder: Path,
                task_options: dict, settings: str, size: int, retries: int, bar) -> None:
    """Run the shards ``todo`` until every one is written, in three steps:

    1. one task per shard, all at once;
    2. a shard that lost its workers (``KilledWorker``) again one task per file;
    3. a file whose task lost its worker too, alone on the cluster, one at a time: a worker dies with
       every task it holds, so only a task that kills a worker with nothing beside it is the culprit.
       It is reported with status ``"error"``.
    """
    pending = {}  # future -> ("shard", index) or ("file", index, name)
    by_file: dict[int, dict[str, CropResult]] = {}  # the results of the shards being run file by file
    suspects: list[tuple[int, str]] = []

    def submit_file(index: int, name: str):
        future = client.submit(crop_files, source, [name], retries=retries, pure=False, **task_options)
        pending[future] = ("file", index, name)
        return future

    def outcome_of(future):
        try:
            return future.result()
        except distributed.KilledWorker:
            return None
        finally:
            pending.pop(future, None)
            future.release()  # the scheduler may forget the task and its result

    def file_done(index: int, result: CropResult) -> None:
        by_file[index][result.source] = result
        bar.update()
        if len(by_file[index]) == len(shards[index]):
            done = by_file.pop(index)
            write_shard(shard_path(shard_folder, index), [done[name] for name in shards[index]], settings, size)

    for index in todo:
        future = client.submit(crop_shard, source, shards[index], str(shard_path(shard_folder, index)),
                               retries=retries, pure=False, **task_options)
        pending[future] = ("shard", index)
    completed = distributed.as_completed(list(pending), loop=client.loop)
    try:
        for future in completed:
            task = pending[future]
            outcome = outcome_of(future)
            index = task[1]
            if task[0] == "file":
                if outcome is None:
                    suspects.append((index, task[2]))
                else:
                    file_done(index, outcome[0])
            elif outcome is None:  # step 2: which of the shard's files kills its worker?
                by_file[index] = {}
                for name in shards[index]:
                    completed.add(submit_file(index, name))
            elif Path(outcome["path"]).is_file():
                bar.update(outcome["files"])
            else:
                raise OSError(f"the worker on {outcome['host']} wrote {outcome['path']}, which this machine does not "
                              f"see: the shard folder must be on a file system every worker shares")
        for index, name in suspects:  # step 3
            outcome = outcome_of(submit_file(index, name))
            file_done(index, outcome[0] if outcome is not None else CropResult(name, "error", notes=(DIED_MESSAGE,)))
    except BaseException:  # an error in a task, or Ctrl-C: leave no task running for nothing
        client.cancel(list(pending))
        raise
