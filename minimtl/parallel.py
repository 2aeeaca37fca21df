"""Every core at once: the chunks of a convolution, and slices of the batch for element-wise passes.

A convolution cuts its batch into chunks (``minimtl.conv.Conv2dFunction``); each
chunk is an im2col and a matrix product.  Left alone, OpenBLAS splits every one
of those products over both cores, and our kernels split every im2col the same
way.  For this network's shapes that scales badly: a product of
``(chunk·OH·OW × 288) @ (288 × 32)`` is too thin to share well, and each chunk
wakes and joins the threads again.  Here the chunks themselves are spread over
the cores instead: ``map_chunks`` runs ``function(chunk)`` for every chunk on a
pool of ``threads()`` workers, with BLAS limited to one thread (threadpoolctl)
and the compiled kernels told to run single-threaded (``in_worker()``, read by
``minimtl.kernels.compiled.thread_count``).  NumPy's matrix product and our
kernels release the GIL, so the workers do run at the same time.

Batch-norm and ReLU use the same workers for their element-wise passes over
large activations: ``elementwise`` runs a function on ``batch_slices`` of
the batch (NumPy's loops release the GIL too).

Results come back in chunk order whatever worker ran them, and
``add_in_order`` adds them up in that order, so a sum gets the same bits run
after run (what makes a resumed training run equal an uninterrupted one).

The number of workers is the number of cores this process may use, or the
environment variable ``MINIMTL_THREADS``; ``set_threads(1)`` turns it off.
"""
from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable, Sequence, TypeVar

import numpy as np

Chunk = TypeVar("Chunk")
Result = TypeVar("Result")

_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_blas = None  # threadpoolctl.ThreadpoolController, made at first use (it inspects the loaded libraries)
_blas_modules = 0  # len(sys.modules) when it was made


def _default_threads() -> int:
    value = os.environ.get("MINIMTL_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"MINIMTL_THREADS must be a positive integer, got {value!r}")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_threads = _default_threads()


def threads() -> int:
    """How many chunks run at once."""
    return _threads


def set_threads(count: int) -> int:
    """Run ``count`` chunks at once (1: one after another, with BLAS threading as it is). Returns the old count."""
    global _threads, _pool
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"thread count must be a positive integer, got {count!r}")
    with _pool_lock:
        old, _threads = _threads, count
        if _pool is not None and _pool._max_workers != count:
            _pool.shutdown(wait=True)
            _pool = None
    return old


def in_worker() -> bool:
    """Whether the calling thread is one of ``map_chunks``'s workers (compiled kernels then use one thread)."""
    return getattr(_local, "worker", False)


def _mark_worker() -> None:
    _local.worker = True


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_threads, thread_name_prefix="minimtl-chunk", initializer=_mark_worker)
        return _pool


def single_threaded_blas():
    """A context in which the calling thread's BLAS calls run on that thread alone, while minimtl's workers are on.

    For a product made on the calling thread just before ``map_chunks``: after
    a threaded call OpenBLAS's own threads keep spinning for about 0.1 s,
    waiting for more work, and the workers would then share a core with one
    of them (a Winograd layer's filter transform made a 128-channel layer take
    34 ms instead of 17).  With one worker (``set_threads(1)``) it does
    nothing: BLAS threading stays as it is.
    """
    if _threads < 2 or in_worker():
        return nullcontext()
    return _single_threaded_blas()


def _single_threaded_blas():
    """A context in which BLAS runs on one thread (threadpoolctl; nothing if it is not installed)."""
    global _blas, _blas_modules
    # The controller limits the BLAS libraries loaded when it is made.  A module imported since (PyTorch,
    # OpenCV, ...) may have loaded another, so it is made again when the count of imported modules changes:
    # a cheap sign, where listing the loaded libraries on every call would cost milliseconds.
    if _blas is None or (_blas and len(sys.modules) != _blas_modules):
        # Besides NumPy's, the compiled shifted products call SciPy's BLAS (scipy.linalg.cython_blas;
        # Numba's np.dot does too): load it first.
        import scipy.linalg.cython_blas  # noqa: F401
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency; keep working without it
            _blas = False
        else:
            _blas = ThreadpoolController()
        _blas_modules = len(sys.modules)
    return _blas.limit(limits=1, user_api="blas") if _blas else nullcontext()


def chunk_count(images: int, chunk: int) -> int:
    """How many chunks ``images`` images make at most ``chunk`` per chunk, rounded up to keep every worker busy.

    With two workers, 128 images at most 50 a chunk make 3 chunks, rounded up
    to 4 (of 32 images): three would leave one core idle a third of the time.
    """
    count = -(-images // max(chunk, 1))
    workers = min(_threads, images)
    return -(-count // workers) * workers if workers > 1 else count


def even_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of ``parts`` consecutive ranges covering ``range(total)``, sizes differing by one at most.

    >>> from minimtl.parallel import even_bounds
    >>> even_bounds(10, 4)
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    base, extra = divmod(total, parts)
    bounds, start = [], 0
    for index in range(parts):
        stop = start + base + (index < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def add_in_order(shares: Sequence[np.ndarray]) -> np.ndarray:
    """``shares[0] + shares[1] + …``, always in that order, as a new array (the shares are left as they are).

    A large sum is cut along its first axis over the workers (``elementwise``);
    every value is still added in share order, so the bits do not change.
    """
    total = np.empty_like(shares[0])

    def add(part) -> None:
        total[part] = shares[0][part]
        for share in shares[1:]:
            total[part] += share[part]

    elementwise(add, total)
    return total


# Below this many values an element-wise pass stays on the calling thread: handing work to a pool
# costs tens of microseconds, about what one core needs for 2¹⁸ float32 values.
SPLIT_MIN_VALUES = 1 << 18


def map_chunks(function: Callable[[Chunk], Result], chunks: Sequence[Chunk], *, limit_blas: bool = True) -> list[Result]:
    """``[function(c) for c in chunks]``, run on the worker pool when there are two chunks or more.

    Called from inside a worker (nested), or with one worker, it runs the chunks
    one after another on the calling thread.  ``limit_blas``: hold BLAS to one
    thread meanwhile (needed when ``function`` multiplies matrices).
    """
    if len(chunks) < 2 or _threads < 2 or in_worker():
        return [function(chunk) for chunk in chunks]
    with _single_threaded_blas() if limit_blas else nullcontext():
        return list(_get_pool().map(function, chunks))


def batch_slices(array) -> list:
    """Slices of axis 0 of ``array``, one per worker, for an element-wise pass; ``[...]`` (all of it) if it is small.

    NumPy's element-wise loops release the GIL, so ``map_chunks`` over these
    slices runs a pass over a large activation on every core.
    """
    rows = array.shape[0] if array.ndim else 1
    count = min(_threads, rows)
    if count < 2 or array.size < SPLIT_MIN_VALUES or in_worker():
        return [Ellipsis]
    return [slice(start, stop) for start, stop in even_bounds(rows, count)]


def elementwise(function: Callable[..., Result], array) -> list[Result]:
    """``function(part)`` for each of ``batch_slices(array)``, on every core; results in slice order."""
    return map_chunks(function, batch_slices(array), limit_blas=False)
