"""The Numba backend: the same loops as ``kernels/cython_kernels.pyx``, compiled by ``@njit`` at first use.

Each loop is plain Python over NumPy arrays, so with ``NUMBA_DISABLE_JIT=1``
it runs (slowly) as ordinary Python and a debugger can step through it.
``prange`` spreads the batch over the cores when compiled and is ``range``
otherwise.  Compiled code is cached on disk (``cache=True``), so only the
first run on a machine pays the compilation.

Each loop is compiled twice: with ``parallel=True`` for big work and
without it for small work (``threads=1`` from ``compiled.py``), where waking
Numba's OpenMP threads costs more than the loop itself.

Layouts: ``*_planar`` loops take ``x (N, C, H, W)``, ``*_channels_last``
loops take ``x (N, H, W, C)``, both C-contiguous; the column matrix is
``cols_t (N·OH·OW, C·KH·KW)``.  ``minimtl/kernels/compiled.py`` turns them
into the four contract functions documented in ``numpy_backend.py``.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from numba import njit, prange

from minimtl.kernels.compiled import CompiledBackend

parallel_jit = njit(parallel=True, cache=True, nogil=True)
serial_jit = njit(cache=True, nogil=True)  # prange runs as range


def jit(loop):
    """Compile ``loop`` both ways; ``loop.serial`` is the single-threaded one (both are ``loop`` without JIT)."""
    parallel = parallel_jit(loop)
    serial = serial_jit(loop)

    def run(*args, threads: int = 0):
        """``threads == 1``: the serial compilation; otherwise the parallel one with Numba's thread count."""
        return (serial if threads == 1 else parallel)(*args)

    run.__name__, run.__doc__, run.__wrapped__ = loop.__name__, loop.__doc__, loop
    run.parallel, run.serial = parallel, serial
    return run


@jit
def im2col_planar(x, cols_t, kh, kw, sh, sw, pad_top, pad_left, oh, ow):
    """Fill ``cols_t (N·OH·OW, C·KH·KW)`` from ``x (N, C, H, W)``; padding reads as zero."""
    n_images, channels, height, width = x.shape
    for n in prange(n_images):
        for r in range(oh):
            for q in range(ow):
                row = (n * oh + r) * ow + q
                col = 0
                for c in range(channels):
                    for i in range(kh):
                        h = r * sh - pad_top + i
                        for j in range(kw):
                            w = q * sw - pad_left + j
                            if 0 <= h < height and 0 <= w < width:
                                cols_t[row, col] = x[n, c, h, w]
                            else:
                                cols_t[row, col] = 0
                            col += 1


@jit
def im2col_channels_last(x, cols_t, kh, kw, sh, sw, pad_top, pad_left, oh, ow):
    """Fill ``cols_t (N·OH·OW, C·KH·KW)`` from ``x (N, H, W, C)``; padding reads as zero."""
    n_images, height, width, channels = x.shape
    kernel_area = kh * kw
    for n in prange(n_images):
        for r in range(oh):
            for q in range(ow):
                row = (n * oh + r) * ow + q
                for i in range(kh):
                    h = r * sh - pad_top + i
                    for j in range(kw):
                        w = q * sw - pad_left + j
                        offset = i * kw + j
                        inside = 0 <= h < height and 0 <= w < width
                        for c in range(channels):
                            cols_t[row, c * kernel_area + offset] = x[n, h, w, c] if inside else 0


@jit
def col2im_channels_last(cols_t, out, kh, kw, sh, sw, pad_top, pad_left, oh, ow):
    """Add every row of ``cols_t (N·OH·OW, C·KH·KW)`` onto zeroed ``out (N, H, W, C)``; padding is dropped."""
    n_images, height, width, channels = out.shape
    kernel_area = kh * kw
    for n in prange(n_images):
        for r in range(oh):
            for q in range(ow):
                row = (n * oh + r) * ow + q
                for i in range(kh):
                    h = r * sh - pad_top + i
                    if h < 0 or h >= height:
                        continue
                    for j in range(kw):
                        w = q * sw - pad_left + j
                        if w < 0 or w >= width:
                            continue
                        offset = i * kw + j
                        for c in range(channels):
                            out[n, h, w, c] += cols_t[row, c * kernel_area + offset]


@jit
def max_pool_forward_planar(x, out, indices, kh, kw, sh, sw, pad_top, pad_left):
    """Window maxima of ``x (N, C, H, W)`` into ``out``/``indices (N, C, OH, OW)``; the first maximum wins ties.

    ``indices`` holds ``h·W + w`` in the input plane.  A window that sees only
    padding (or only -inf) keeps -inf and the index of its top-left offset, as
    the reference does.
    """
    n_images, channels, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for n in prange(n_images):
        for c in range(channels):
            for r in range(oh):
                for q in range(ow):
                    best = -np.inf
                    best_index = (r * sh - pad_top) * width + (q * sw - pad_left)
                    for i in range(kh):
                        h = r * sh - pad_top + i
                        if h < 0 or h >= height:
                            continue
                        for j in range(kw):
                            w = q * sw - pad_left + j
                            if w < 0 or w >= width:
                                continue
                            if x[n, c, h, w] > best:
                                best = x[n, c, h, w]
                                best_index = h * width + w
                    out[n, c, r, q] = best
                    indices[n, c, r, q] = best_index


@jit
def max_pool_forward_channels_last(x, out, indices, kh, kw, sh, sw, pad_top, pad_left):
    """Window maxima of ``x (N, H, W, C)`` into ``out``/``indices (N, OH, OW, C)``; same rules as the planar one."""
    n_images, height, width, channels = x.shape
    oh, ow = out.shape[1], out.shape[2]
    for n in prange(n_images):
        for r in range(oh):
            for q in range(ow):
                for c in range(channels):
                    out[n, r, q, c] = -np.inf
                    indices[n, r, q, c] = (r * sh - pad_top) * width + (q * sw - pad_left)
                for i in range(kh):
                    h = r * sh - pad_top + i
                    if h < 0 or h >= height:
                        continue
                    for j in range(kw):
                        w = q * sw - pad_left + j
                        if w < 0 or w >= width:
                            continue
                        for c in range(channels):
                            if x[n, h, w, c] > out[n, r, q, c]:
                                out[n, r, q, c] = x[n, h, w, c]
                                indices[n, r, q, c] = h * width + w


@jit
def max_pool_backward_planar(grad_out, indices, grad_x):
    """Add ``grad_out (N, C, OH, OW)`` onto zeroed ``grad_x (N, C, H, W)`` at the winners ``indices``."""
    n_images, channels, oh, ow = grad_out.shape
    width = grad_x.shape[3]
    for n in prange(n_images):
        for c in range(channels):
            for r in range(oh):
                for q in range(ow):
                    k = indices[n, c, r, q]
                    grad_x[n, c, k // width, k % width] += grad_out[n, c, r, q]


@jit
def max_pool_backward_channels_last(grad_out, indices, grad_x):
    """Add ``grad_out (N, OH, OW, C)`` onto zeroed ``grad_x (N, H, W, C)`` at the winners ``indices``."""
    n_images, oh, ow, channels = grad_out.shape
    width = grad_x.shape[2]
    for n in prange(n_images):
        for r in range(oh):
            for q in range(ow):
                for c in range(channels):
                    k = indices[n, r, q, c]
                    grad_x[n, k // width, k % width, c] += grad_out[n, r, q, c]


@serial_jit
def shifted_matmul(rows, weights, offsets, out, tile):
    """``out[p] = Σ_k rows[p + offsets[k]] @ weights[k]`` for ``out (P, F)``, ``tile`` rows of ``out`` at a time.

    Single-threaded: ``minimtl.parallel`` runs one call per chunk of images on
    each core.  ``np.dot`` is BLAS here too; it cannot add into its output,
    so each tap's product lands in ``part`` (cache-sized) and is added from there.
    """
    count, features = out.shape
    part = np.empty((min(tile, count), features), dtype=out.dtype)
    for start in range(0, count, tile):
        stop = min(count, start + tile)
        target = out[start:stop]
        np.dot(rows[start + offsets[0] : stop + offsets[0]], weights[0], target)
        for k in range(1, len(offsets)):
            product = part[: stop - start]
            np.dot(rows[start + offsets[k] : stop + offsets[k]], weights[k], product)
            target += product


@serial_jit
def shifted_matmul_grad_weights(rows, grad, offsets, result, tile):
    """``result[k] = rows[offsets[k] : offsets[k] + P]ᵀ @ grad`` for ``grad (P, F)`` and zeroed ``result``, ``tile`` rows at a time."""
    count = grad.shape[0]
    part = np.empty(result.shape[1:], dtype=result.dtype)
    for start in range(0, count, tile):
        stop = min(count, start + tile)
        for k in range(len(offsets)):
            np.dot(rows[start + offsets[k] : stop + offsets[k]].T, grad[start:stop], part)
            result[k] += part


@serial_jit
def batch_norm_relu_forward(x, mean, scale, shift, y):
    """``y = max(0, (x − mean) · scale + shift)`` for pixel rows ``x (M, C)``; one pass, single-threaded."""
    rows, channels = x.shape
    for r in range(rows):
        for c in range(channels):
            value = (x[r, c] - mean[c]) * scale[c] + shift[c]
            y[r, c] = value if value > 0 else 0


@serial_jit
def batch_norm_relu_sums(grad, x, y, mean, inv_std, sum_g, sum_gx):
    """Add ``Σ g'`` and ``Σ g' · x̂`` per channel into ``sum_g``, ``sum_gx`` (float64), ``g' = g · [y > 0]``."""
    rows, channels = x.shape
    for r in range(rows):
        for c in range(channels):
            g_masked = grad[r, c] * (y[r, c] > 0)  # no branch: half the pixels pass a ReLU, at random
            sum_g[c] += g_masked
            sum_gx[c] += g_masked * ((x[r, c] - mean[c]) * inv_std[c])


@serial_jit
def batch_norm_relu_backward(grad, x, y, mean, inv_std, mean_g, mean_gx, scale, grad_x):
    """``grad_x = scale · (g' − mean_g − x̂ · mean_gx)`` for pixel rows; one pass, single-threaded."""
    rows, channels = x.shape
    for r in range(rows):
        for c in range(channels):
            g_masked = grad[r, c] * (y[r, c] > 0)
            grad_x[r, c] = scale[c] * (g_masked - mean_g[c] - (x[r, c] - mean[c]) * inv_std[c] * mean_gx[c])


_backend = CompiledBackend(SimpleNamespace(
    im2col_planar=im2col_planar,
    im2col_channels_last=im2col_channels_last,
    col2im_channels_last=col2im_channels_last,
    max_pool_forward_planar=max_pool_forward_planar,
    max_pool_forward_channels_last=max_pool_forward_channels_last,
    max_pool_backward_planar=max_pool_backward_planar,
    max_pool_backward_channels_last=max_pool_backward_channels_last,
    shifted_matmul=shifted_matmul,
    shifted_matmul_grad_weights=shifted_matmul_grad_weights,
    batch_norm_relu_forward=batch_norm_relu_forward,
    batch_norm_relu_sums=batch_norm_relu_sums,
    batch_norm_relu_backward=batch_norm_relu_backward,
))

im2col = _backend.im2col
col2im = _backend.col2im
max_pool2d_forward = _backend.max_pool2d_forward
max_pool2d_backward = _backend.max_pool2d_backward
shifted_matmul = _backend.shifted_matmul
shifted_matmul_grad_weights = _backend.shifted_matmul_grad_weights
batch_norm_relu_forward = _backend.batch_norm_relu_forward
batch_norm_relu_sums = _backend.batch_norm_relu_sums
batch_norm_relu_backward = _backend.batch_norm_relu_backward
FAST_SHIFTED_MATMUL = True
FAST_BATCH_NORM_RELU = True

__all__ = ["im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward", "shifted_matmul",
           "shifted_matmul_grad_weights", "batch_norm_relu_forward", "batch_norm_relu_sums", "batch_norm_relu_backward",
           "FAST_SHIFTED_MATMUL", "FAST_BATCH_NORM_RELU"]
