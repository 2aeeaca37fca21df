"""minimtl.parallel: chunks of a convolution on several workers give the serial result, in the same bits every run."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimtl import conv
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
        bounds = conv.chunk_bounds(images, chunk)
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
        blas = {lib["filepath"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"}
        return index, threading.current_thread().name, parallel.in_worker(), compiled.thread_count(64, 1 << 30), blas

    import scipy.linalg.cython_blas  # noqa: F401  the BLAS the compiled shifted products call: limited as well
    loaded = {lib["filepath"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"}
    results = parallel.map_chunks(job, list(range(6)))
    assert all(set(blas) == loaded for *_, blas in results)
    assert [r[0] for r in results] == list(range(6))
    assert all(name.startswith("minimtl-chunk") and inside for _, name, inside, _, _ in results)
    assert all(threads == 1 for *_, threads, _ in results)  # compiled kernels: one thread inside a worker
    assert all(all(n == 1 for n in blas.values()) for *_, blas in results)
    assert not parallel.in_worker() and compiled.thread_count(64, 1 << 30) == 0  # the caller's own thread: default


def test_single_threaded_blas_holds_the_calling_thread_to_one_blas_thread_while_workers_are_on(workers):
    """Used before handing work to the workers: a threaded BLAS call leaves OpenBLAS's threads spinning on the cores."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return {lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"}

    before = blas_threads()
    workers(2)
    with parallel.single_threaded_blas():
        assert blas_threads() == {1}
    assert blas_threads() == before
    workers(1)  # one worker: BLAS threading as it is
    with parallel.single_threaded_blas():
        assert blas_threads() == before


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
def test_parallel_chunks_equal_serial_chunks_and_repeat_bit_for_bit(workers, threads):
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((11, 16, 12, 12)).astype(np.float32)
    weight = (rng.standard_normal((24, 16, 3, 3)) / 12).astype(np.float32)
    upstream = rng.standard_normal((11, 24, 12, 12)).astype(np.float32)
    with conv.settings(chunk_bytes={"im2col": 2 * 16 * 9 * 144 * 4}):  # two images a chunk: six chunks or more
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


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_and_relu_split_over_the_batch_equal_the_plain_numpy_formulas(workers, threads, channels_last):
    """Large enough (≥ SPLIT_MIN_VALUES) to be split: forward, backward and statistics against one-line NumPy."""
    from minimtl import ops

    workers(threads)
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((13, 10, 48, 48)) * 3 + 1  # float64; 13 rows: uneven slices
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert x.size >= parallel.SPLIT_MIN_VALUES and len(parallel.batch_slices(x)) == min(threads, 13)
    upstream = rng.standard_normal(x.shape)
    axes, shape = (0, 2, 3), (1, -1, 1, 1)

    mean, var = F.channel_mean_var(x)
    np.testing.assert_allclose(mean, x.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(var, x.var(axis=axes), rtol=1e-12)

    xt, bias = Tensor(x, requires_grad=True), Tensor(rng.standard_normal(10), requires_grad=True)
    y = ops.relu(F.batch_norm(xt, np.zeros(10), np.ones(10), None, bias, training=True))
    y.backward(upstream)
    x_hat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)
    expected = np.maximum(x_hat + bias.data.reshape(shape), 0)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    g = upstream * (expected > 0)
    expected_grad = (g - g.mean(axis=axes, keepdims=True)
                     - x_hat * (g * x_hat).mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(xt.grad, expected_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bias.grad, g.sum(axis=axes), rtol=1e-12)
    assert y.data.strides == np.empty_like(x).strides  # the layout of x is kept


@pytest.mark.parametrize("with_weight", [False, True])
def test_batch_norm_inference_pass_equals_the_differentiable_composition(workers, with_weight):
    """Evaluation mode is one affine pass (``BatchNormAffineFunction``) with gradients on and under no_grad:
    the same values, split over the workers, against the formula composed of primitive ops."""
    from minimtl import ops
    from minimtl.autograd import no_grad

    workers(2)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 12, 40, 40)).astype(np.float32)
    mean, var = rng.standard_normal(12), rng.random(12) + 0.5
    weight = Tensor(rng.standard_normal(12).astype(np.float32), requires_grad=True) if with_weight else None
    bias = Tensor(rng.standard_normal(12).astype(np.float32), requires_grad=True)
    recorded = F.batch_norm(Tensor(x, requires_grad=True), mean, var, weight, bias, training=False)
    assert recorded._node.function is F.BatchNormAffineFunction
    shape = (1, -1, 1, 1)
    composed = (Tensor(x) - Tensor(mean.astype(np.float32).reshape(shape))) * Tensor(
        (1 / np.sqrt(var + 1e-5)).astype(np.float32).reshape(shape))
    if weight is not None:
        composed = composed * ops.reshape(weight, shape)
    composed = composed + ops.reshape(bias, shape)
    np.testing.assert_allclose(recorded.data, composed.data, rtol=1e-5, atol=1e-5)
    with no_grad():
        fused = F.batch_norm(Tensor(x), mean, var, weight, bias, training=False)
    assert fused.dtype == composed.dtype == np.float32 and not fused.requires_grad
    np.testing.assert_allclose(fused.data, composed.data, rtol=1e-5, atol=1e-5)
