"""minimtl.parallel: chunks of a convolution on several workers give the serial result, in the same bits every run."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimtl import functional as F
from minimtl import parallel
from minimtl.autograd import Tensor
from minimtl.kernels import compiled

pytestmark = pytest.mark.kernels


@pytest.fixture
def workers():
    """Set the worker count for one test and restore it after."""
    previous = parallel.threads()
    yield parallel.set_threads
    parallel.set_threads(previous)


@settings(deadline=None, max_examples=200)
@given(images=st.integers(1, 300), chunk=st.integers(1, 300), threads=st.integers(1, 4))
def test_chunk_bounds_cover_the_batch_once_in_near_equal_chunks(images, chunk, threads):
    previous = parallel.set_threads(threads)
    try:
        bounds = F.chunk_bounds(images, chunk)
    finally:
        parallel.set_threads(previous)
    assert bounds[0][0] == 0 and bounds[-1][1] == images
    assert all(stop == next_start for (_, stop), (next_start, _) in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert min(sizes) >= 1 and max(sizes) <= chunk and max(sizes) - min(sizes) <= 1
    if threads > 1:
        assert len(bounds) == images or len(bounds) % min(threads, images) == 0  # no worker left idle at the end


def test_map_chunks_keeps_the_order_and_runs_on_the_workers_with_one_blas_thread(workers):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    workers(2)

    def job(index):
        blas = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
        return index, threading.current_thread().name, parallel.in_worker(), compiled.thread_count(64, 1 << 30), blas

    results = parallel.map_chunks(job, list(range(6)))
    assert [r[0] for r in results] == list(range(6))
    assert all(name.startswith("minimtl-chunk") and inside for _, name, inside, _, _ in results)
    assert all(threads == 1 for *_, threads, _ in results)  # compiled kernels: one thread inside a worker
    assert all(all(n == 1 for n in blas) for *_, blas in results)
    assert not parallel.in_worker() and compiled.thread_count(64, 1 << 30) == 0  # the caller's own thread: default


def test_one_worker_or_one_chunk_runs_on_the_calling_thread(workers):
    here = threading.current_thread().name
    workers(1)
    assert parallel.map_chunks(lambda _: threading.current_thread().name, [0, 1, 2]) == [here] * 3
    workers(2)
    assert parallel.map_chunks(lambda _: threading.current_thread().name, [0]) == [here]


def convolve(x, weight, upstream):
    xt, wt = Tensor(x.copy(), requires_grad=True), Tensor(weight.copy(), requires_grad=True)
    y = F.conv2d(xt, wt, None, 1, "same")
    y.backward(upstream)
    return y.data, xt.grad, wt.grad


@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_chunks_equal_serial_chunks_and_repeat_bit_for_bit(workers, monkeypatch, threads):
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((11, 16, 12, 12)).astype(np.float32)
    weight = (rng.standard_normal((24, 16, 3, 3)) / 12).astype(np.float32)
    upstream = rng.standard_normal((11, 24, 12, 12)).astype(np.float32)
    monkeypatch.setattr(F, "CONV_CHUNK_BYTES", 2 * 16 * 9 * 144 * 4)  # two images a chunk: six chunks or more
    workers(1)
    serial = convolve(x, weight, upstream)
    workers(threads)
    first, second = convolve(x, weight, upstream), convolve(x, weight, upstream)
    for a, b, s in zip(first, second, serial):
        np.testing.assert_array_equal(a, b)  # the same bits: what an exact --resume needs
        np.testing.assert_allclose(a, s, rtol=1e-5, atol=1e-5 * float(np.abs(s).max()))


def test_a_bad_thread_count_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="positive integer"):
        parallel.set_threads(0)
    monkeypatch.setenv("MINIMTL_THREADS", "two")
    with pytest.raises(ValueError, match="MINIMTL_THREADS"):
        parallel._default_threads()
    monkeypatch.setenv("MINIMTL_THREADS", "3")
    assert parallel._default_threads() == 3
