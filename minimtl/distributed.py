"""Data-parallel training over MPI: several processes, one model, the gradient of one global batch.

Every process (an MPI *rank*) holds a full copy of the model, the optimiser
and the weight average.  ``minimtl.train.fit(..., communicator=Communicator())``
then runs the same loop on every rank:

1. Rank 0's initial weights (or the checkpoint every rank loaded, with
   ``resume=True``) are broadcast, so all ranks start identical.
2. Every rank builds the same global batch order and augmentation (they are
   drawn from ``(seed, epoch)`` alone) and takes its *shard* of each global
   batch: a contiguous slice of ``config.batch_size / size`` rows (the sizes
   differ by at most one).  The global batch size stays ``config.batch_size``.
   Contiguous, not ``r::size``: the balanced loader interleaves the data sets
   sample by sample, so with two ranks ``r::2`` would give rank 0 only smiles.
3. Each rank runs forward on its shard.  One tiny ``allreduce`` sums, per
   task, the number of samples carrying the task (and the loss and accuracy
   sums, for the progress report).  Each rank's Eq. (1) loss is then divided
   by the GLOBAL count of its task, not by its own, so the ranks' gradients
   add up to the gradient of the whole batch's Eq. (1) loss.  Eq. (2)'s
   ``λ‖W‖²`` is added on one rank only (the first that has a shard), so it
   is counted once.
4. Backward; the gradients are copied into ONE contiguous float32 buffer
   (``GradientBuffer``) summed over the ranks by a single
   ``Allreduce(MPI.IN_PLACE, buffer)``; every rank applies the same SGD step.
   The buffer carries one more number, the rank's share of the total loss,
   so every rank sees the same Eq. (2) value and stops together on NaN.
5. Dropout masks differ per rank (rank 0 draws what a single process would).
6. Batch-norm, the one place where sharding changes the mathematics: in
   training each shard is normalised by its OWN batch statistics (mean and
   variance over the shard's ``batch_size / size`` faces).  The step is
   therefore exactly what one process computes by accumulating gradients
   over the same shards, each forwarded as a batch of its own, and not what
   one process computes on the whole batch (whose statistics mix all
   faces).  Each rank's running statistics follow its own shards; before
   every evaluation and save they are averaged over the ranks (the
   recomputed "precise" statistics too, each rank computing them on its
   shards of the same batches, weighted by the batches it used), so every
   rank holds the same buffers and the checkpoint is the state of all.
7. Only rank 0 evaluates, prints, and writes ``config.json``, checkpoints,
   ``model.npz`` and the report; the evaluation record is broadcast so every
   rank keeps the same history.  ``resume=True`` makes every rank load the
   checkpoint, so the run folder must be at the same path on every host (a
   shared file system).  A resumed run equals an uninterrupted one when run
   with the same number of ranks (the dropout masks depend on the rank).

Launch (Open MPI; ``pip install "minimtl[distributed]"`` provides ``mpirun``)::

    mpirun -np 2 python examples/train_mtl.py --distributed ...            # one machine, two processes
    mpirun -np 4 --host a:2,b:2 python examples/train_mtl.py --distributed ...   # two machines, two each
    mpirun -np N --host a,b python examples/train_mtl.py --distributed ...

Give each rank one core's worth of threads (``OMP_NUM_THREADS=1
OPENBLAS_NUM_THREADS=1 MINIMTL_THREADS=1``, passed with ``-x NAME``) or as
many cores as a host has divided by its ranks.  As root, Open MPI also wants
``--allow-run-as-root``, and more ranks than cores ``--oversubscribe``.

``LocalCommunicator`` is the same interface for one process (rank 0 of 1,
every operation the identity), so the training loop has one code path and
``fit(..., communicator=LocalCommunicator())`` equals plain ``fit``.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["Communicator", "LocalCommunicator", "GradientBuffer", "INSTALL_HINT", "launched_by_mpirun",
           "mpi_available", "world"]

INSTALL_HINT = 'pip install "minimtl[distributed]"'
#: Environment variables an MPI launcher sets in every process it starts (Open MPI, PMIx, MPICH/Hydra, MVAPICH, Slurm).
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MV2_COMM_WORLD_SIZE",
                      "SLURM_PROCID")


def mpi_available() -> bool:
    """Whether mpi4py can be imported (without starting MPI)."""
    return importlib.util.find_spec("mpi4py") is not None


def launched_by_mpirun() -> bool:
    """Whether this process was started by an MPI launcher (``mpirun``/``mpiexec``/``srun``)."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"distributed training needs mpi4py and an MPI library: {INSTALL_HINT} ({error})") from None
    return MPI


class LocalCommunicator:
    """One process: rank 0 of 1.  Every collective operation returns its input unchanged."""

    rank, size = 0, 1

    def broadcast_state(self, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(state)

    def broadcast_object(self, value: Any) -> Any:
        return value

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        return values

    def allreduce_gradients(self, buffer: np.ndarray) -> None:
        pass

    def average_arrays(self, arrays: Iterable[np.ndarray], weight: float = 1.0) -> None:
        pass

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class Communicator(LocalCommunicator):
    """The processes of ``MPI.COMM_WORLD`` (or ``comm``), through mpi4py.

    ``rank`` and ``size`` are this process's number and the number of
    processes.  ``ImportError`` with the install command if mpi4py is missing.
    """

    def __init__(self, comm=None):
        self.MPI = _mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def broadcast_state(self, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rank 0's arrays, on every rank (names, shapes and dtypes must agree; checked on all ranks together)."""
        if self.size == 1:
            return dict(state)
        layout = [(name, np.shape(value), np.asarray(value).dtype.str) for name, value in state.items()]
        root_layout = self.comm.bcast(layout, root=0)
        if self.allreduce_sum(np.array([float(layout != root_layout)]))[0]:
            raise ValueError("broadcast_state: the ranks hold different models (names, shapes or dtypes differ)")
        result = {}
        for name, value in state.items():
            array = np.ascontiguousarray(value).copy()
            self.comm.Bcast(array, root=0)
            result[name] = array
        return result

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object, e.g. an evaluation record) on every rank."""
        return self.comm.bcast(value, root=0)

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum over the ranks of a small float64 array (e.g. per-task label counts)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        total = np.empty_like(values)
        self.comm.Allreduce(values, total, op=self.MPI.SUM)
        return total

    def allreduce_gradients(self, buffer: np.ndarray) -> None:
        """Sum ``buffer`` (one contiguous float32 array: every gradient) over the ranks, in place, in one call."""
        if not (buffer.flags.c_contiguous and buffer.dtype == np.float32):
            raise ValueError("allreduce_gradients needs one contiguous float32 buffer")
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def average_arrays(self, arrays: Iterable[np.ndarray], weight: float = 1.0) -> None:
        """Replace each array, in place, by its average over the ranks, rank r counting ``weight`` (its own).

        Used for batch-norm's running statistics (``weight`` 1) and the recomputed ones (``weight``: the
        number of batches the rank used).  Summed in float64; if every weight is 0, the plain mean.
        """
        arrays = list(arrays)
        if self.size == 1 or not arrays:
            return
        flat = np.concatenate([np.ravel(a).astype(np.float64) for a in arrays] + [np.ones(1)])
        total = self.allreduce_sum(flat * float(weight))
        if total[-1] == 0:
            total = self.allreduce_sum(flat)
        offset = 0
        for array in arrays:
            array[...] = (total[offset:offset + array.size] / total[-1]).reshape(array.shape)
            offset += array.size

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank at once (an error on one rank would otherwise leave the others waiting)."""
        self.comm.Abort(code)


def world() -> Communicator:
    """The communicator of the processes ``mpirun`` started; ``RuntimeError``/``ImportError`` in one line
    if mpi4py is missing or this process was not started by an MPI launcher."""
    if not mpi_available():
        raise ImportError(f"distributed training needs mpi4py and an MPI library: {INSTALL_HINT}")
    if not launched_by_mpirun():
        raise RuntimeError("distributed training must be started by an MPI launcher, e.g. "
                           "mpirun -np 2 python examples/train_mtl.py --distributed ...")
    return Communicator()


class GradientBuffer:
    """Every parameter's gradient in one contiguous float32 array, plus ``extra`` trailing numbers.

    ``pack()`` copies each ``p.grad`` into its slice (zeros where a gradient
    is None) and returns the buffer; after the allreduce ``unpack()`` points
    each ``p.grad`` at its slice (a view: the buffer is reused next step, by
    when the optimiser has consumed the gradient).  A parameter without a
    gradient is packed as zeros and gets a zero gradient back, which SGD's
    momentum still applies; a ``BKNet`` gives every parameter a gradient at
    every step (a task absent from a shard contributes zeros), so for it the
    step is the one a single process takes.
    """

    def __init__(self, parameters: Iterable, extra: int = 1):
        self.parameters = list(parameters)
        sizes = [p.data.size for p in self.parameters]
        if any(p.data.dtype != np.float32 for p in self.parameters):
            raise TypeError("GradientBuffer packs float32 parameters only")
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.buffer = np.zeros(int(self.offsets[-1]) + extra, dtype=np.float32)

    @property
    def extra(self) -> np.ndarray:
        """The trailing numbers after the gradients (a view)."""
        return self.buffer[self.offsets[-1]:]

    def pack(self) -> np.ndarray:
        for p, start, stop in zip(self.parameters, self.offsets[:-1], self.offsets[1:]):
            if p.grad is None:
                self.buffer[start:stop] = 0
            else:
                self.buffer[start:stop] = p.grad.reshape(-1)
        return self.buffer

    def unpack(self) -> None:
        for p, start, stop in zip(self.parameters, self.offsets[:-1], self.offsets[1:]):
            p.grad = self.buffer[start:stop].reshape(p.data.shape)
