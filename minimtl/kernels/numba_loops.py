"""The Numba loops: the same loops as ``kernels/cython_kernels.pyx``, compiled by ``@njit`` at first use.

``numba_backend.py`` turns them into the contract functions (it is to this
module what ``cython_backend.py`` is to the Cython extension).

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
``cols_t (N·OH·OW, C·KH·KW)``.  The signatures are those of
``kernels/cython_kernels.pyx``, which ``compiled.CompiledBackend`` documents.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

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
    """Add ``grad_out (N, OH, OW, C)`` onto zeroed ``grad_x (N, H, W, C)`` at the winners ``indices``.

    Winner ``k = h·W + w`` of channel ``c`` is value ``k·C + c`` of its image in
    channels-last memory: no division per value.
    """
    n_images, oh, ow, channels = grad_out.shape
    for n in prange(n_images):
        image = grad_x[n].reshape(-1)  # a view: grad_x is C-contiguous
        for r in range(oh):
            for q in range(ow):
                for c in range(channels):
                    image[indices[n, r, q, c] * channels + c] += grad_out[n, r, q, c]


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
    """``result[k] = rows[offsets[k] : offsets[k] + P]ᵀ @ grad`` for ``grad (P, F)`` and zeroed ``result``,
    ``tile`` rows at a time."""
    count = grad.shape[0]
    part = np.empty(result.shape[1:], dtype=result.dtype)
    for start in range(0, count, tile):
        stop = min(count, start + tile)
        for k in range(len(offsets)):
            np.dot(rows[start + offsets[k] : stop + offsets[k]].T, grad[start:stop], part)
            result[k] += part


# Winograd F(2×2, 3×3) and F(4×4, 3×3): the products with Bᵀ and Aᵀ (small integers; the matrices are in
# numpy_backend.py) spelled out as additions, in two stages per tile (along columns, then rows), each a loop
# over channels innermost that reads and writes contiguous memory; between the stages a small array, ``LANES``
# channels at a time, as in kernels/cython_kernels.pyx.  ``*_tile`` is one tile of F(2×2, 3×3) and ``*_tile4``
# one of F(4×4, 3×3); the loops over tiles take ``tile`` (2 or 4) and call one or the other.
LANES = 64
# F(4×4, 3×3)'s multipliers as float32 constants: a plain 4 is an int64, and int64 · float32 is float64 in
# Numba, which would take float32 tiles through double precision (and out of vector registers).  These are
# exact in either precision, and float32 · float64 stays float64.
TWO, FOUR, FIVE, EIGHT = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


@serial_jit
def input_tile(x, n, i, j, tiles, index, t):
    """``tiles[:, index]`` ← ``Bᵀ d B`` of the 4×4 tile ``d = x[n, 2i : 2i + 4, 2j : 2j + 4]``; ``t (4, 4, LANES)`` scratch."""
    channels = x.shape[3]
    for start in range(0, channels, LANES):
        width_c = min(LANES, channels - start)
        for q in range(4):  # Bᵀ d, column q: d0 − d2, d1 + d2, d2 − d1, d1 − d3
            d0, d1 = x[n, 2 * i, 2 * j + q, start:], x[n, 2 * i + 1, 2 * j + q, start:]
            d2, d3 = x[n, 2 * i + 2, 2 * j + q, start:], x[n, 2 * i + 3, 2 * j + q, start:]
            for c in range(width_c):
                t[0, q, c] = d0[c] - d2[c]
                t[1, q, c] = d1[c] + d2[c]
                t[2, q, c] = d2[c] - d1[c]
                t[3, q, c] = d1[c] - d3[c]
        for a in range(4):  # (Bᵀ d) B, row a: the same four combinations along the row
            o0, o1 = tiles[4 * a, index, start:], tiles[4 * a + 1, index, start:]
            o2, o3 = tiles[4 * a + 2, index, start:], tiles[4 * a + 3, index, start:]
            for c in range(width_c):
                o0[c] = t[a, 0, c] - t[a, 2, c]
                o1[c] = t[a, 1, c] + t[a, 2, c]
                o2[c] = t[a, 2, c] - t[a, 1, c]
                o3[c] = t[a, 1, c] - t[a, 3, c]


@serial_jit
def input_tile4(x, n, i, j, tiles, index, t):
    """``tiles[:, index]`` ← ``Bᵀ d B`` of the 6×6 tile ``d = x[n, 4i : 4i + 6, 4j : 4j + 6]``; ``t (6, 6, LANES)`` scratch."""
    channels = x.shape[3]
    for start in range(0, channels, LANES):
        width_c = min(LANES, channels - start)
        for q in range(6):  # Bᵀ d, column q: the rows of Bᵀ, grouped as d4 − 4·d2 ± (d3 − 4·d1) and d4 − d2 ± 2·(d3 − d1)
            d0, d1, d2 = x[n, 4 * i, 4 * j + q, start:], x[n, 4 * i + 1, 4 * j + q, start:], x[n, 4 * i + 2, 4 * j + q, start:]
            d3, d4, d5 = (x[n, 4 * i + 3, 4 * j + q, start:], x[n, 4 * i + 4, 4 * j + q, start:],
                          x[n, 4 * i + 5, 4 * j + q, start:])
            for c in range(width_c):
                t[0, q, c] = FOUR * d0[c] - FIVE * d2[c] + d4[c]
                t[1, q, c] = d4[c] - FOUR * d2[c] + d3[c] - FOUR * d1[c]
                t[2, q, c] = d4[c] - FOUR * d2[c] - d3[c] + FOUR * d1[c]
                t[3, q, c] = d4[c] - d2[c] + TWO * (d3[c] - d1[c])
                t[4, q, c] = d4[c] - d2[c] - TWO * (d3[c] - d1[c])
                t[5, q, c] = FOUR * d1[c] - FIVE * d3[c] + d5[c]
        for a in range(6):  # (Bᵀ d) B, row a: the same six combinations along the row
            o0, o1, o2 = tiles[6 * a, index, start:], tiles[6 * a + 1, index, start:], tiles[6 * a + 2, index, start:]
            o3, o4, o5 = tiles[6 * a + 3, index, start:], tiles[6 * a + 4, index, start:], tiles[6 * a + 5, index, start:]
            for c in range(width_c):
                o0[c] = FOUR * t[a, 0, c] - FIVE * t[a, 2, c] + t[a, 4, c]
                o1[c] = t[a, 4, c] - FOUR * t[a, 2, c] + t[a, 3, c] - FOUR * t[a, 1, c]
                o2[c] = t[a, 4, c] - FOUR * t[a, 2, c] - t[a, 3, c] + FOUR * t[a, 1, c]
                o3[c] = t[a, 4, c] - t[a, 2, c] + TWO * (t[a, 3, c] - t[a, 1, c])
                o4[c] = t[a, 4, c] - t[a, 2, c] - TWO * (t[a, 3, c] - t[a, 1, c])
                o5[c] = FOUR * t[a, 1, c] - FIVE * t[a, 3, c] + t[a, 5, c]


@jit
def winograd_input_transform(x, tiles, tile):
    """``tiles (α², m·TH·TW, C)`` ← ``Bᵀ d B`` of every α×α tile ``d`` of ``x (m, tile·TH + 2, tile·TW + 2, C)``."""
    m, height, width, _ = x.shape
    th, tw = (height - 2) // tile, (width - 2) // tile
    for n in prange(m):
        t = np.empty((tile + 2, tile + 2, LANES), dtype=x.dtype)
        for i in range(th):
            for j in range(tw):
                if tile == 4:
                    input_tile4(x, n, i, j, tiles, (n * th + i) * tw + j, t)
                else:
                    input_tile(x, n, i, j, tiles, (n * th + i) * tw + j, t)


@serial_jit
def output_tile(products, index, y, n, i, j, u):
    """The 2×2 pixels of ``y`` from ``(2i, 2j)`` of image ``n`` ← ``Aᵀ M A`` of ``products[:, index]``;
    ``u (2, 4, LANES)`` scratch."""
    features = y.shape[3]
    for start in range(0, features, LANES):
        width_f = min(LANES, features - start)
        for b in range(4):  # Aᵀ M, column b: m0 + m1 + m2 and m1 − m2 − m3
            m0, m1 = products[b, index, start:], products[4 + b, index, start:]
            m2, m3 = products[8 + b, index, start:], products[12 + b, index, start:]
            for f in range(width_f):
                u[0, b, f] = m0[f] + m1[f] + m2[f]
                u[1, b, f] = m1[f] - m2[f] - m3[f]
        for r in range(2):  # (Aᵀ M) A, row r
            y0, y1 = y[n, 2 * i + r, 2 * j, start:], y[n, 2 * i + r, 2 * j + 1, start:]
            for f in range(width_f):
                y0[f] = u[r, 0, f] + u[r, 1, f] + u[r, 2, f]
                y1[f] = u[r, 1, f] - u[r, 2, f] - u[r, 3, f]


@serial_jit
def output_tile4(products, index, y, n, i, j, u):
    """The 4×4 pixels of ``y`` from ``(4i, 4j)`` of image ``n`` ← ``Aᵀ M A`` of ``products[:, index]``;
    ``u (4, 6, LANES)`` scratch."""
    features = y.shape[3]
    for start in range(0, features, LANES):
        width_f = min(LANES, features - start)
        for b in range(6):  # Aᵀ M, column b: m0 + (m1 + m2) + (m3 + m4), (m1 − m2) + 2·(m3 − m4), ... + m5
            m0, m1, m2 = products[b, index, start:], products[6 + b, index, start:], products[12 + b, index, start:]
            m3, m4, m5 = products[18 + b, index, start:], products[24 + b, index, start:], products[30 + b, index, start:]
            for f in range(width_f):
                u[0, b, f] = m0[f] + m1[f] + m2[f] + m3[f] + m4[f]
                u[1, b, f] = m1[f] - m2[f] + TWO * (m3[f] - m4[f])
                u[2, b, f] = m1[f] + m2[f] + FOUR * (m3[f] + m4[f])
                u[3, b, f] = m1[f] - m2[f] + EIGHT * (m3[f] - m4[f]) + m5[f]
        for r in range(4):  # (Aᵀ M) A, row r: the same four combinations along the row
            y0, y1 = y[n, 4 * i + r, 4 * j, start:], y[n, 4 * i + r, 4 * j + 1, start:]
            y2, y3 = y[n, 4 * i + r, 4 * j + 2, start:], y[n, 4 * i + r, 4 * j + 3, start:]
            for f in range(width_f):
                y0[f] = u[r, 0, f] + u[r, 1, f] + u[r, 2, f] + u[r, 3, f] + u[r, 4, f]
                y1[f] = u[r, 1, f] - u[r, 2, f] + TWO * (u[r, 3, f] - u[r, 4, f])
                y2[f] = u[r, 1, f] + u[r, 2, f] + FOUR * (u[r, 3, f] + u[r, 4, f])
                y3[f] = u[r, 1, f] - u[r, 2, f] + EIGHT * (u[r, 3, f] - u[r, 4, f]) + u[r, 5, f]


@jit
def winograd_output_transform(products, y, tile):
    """``y (m, tile·TH, tile·TW, F)`` ← ``Aᵀ M A`` of every tile of ``products (α², m·TH·TW, F)``."""
    m, height, width, _ = y.shape
    th, tw = height // tile, width // tile
    for n in prange(m):
        u = np.empty((tile, tile + 2, LANES), dtype=y.dtype)
        for i in range(th):
            for j in range(tw):
                if tile == 4:
                    output_tile4(products, (n * th + i) * tw + j, y, n, i, j, u)
                else:
                    output_tile(products, (n * th + i) * tw + j, y, n, i, j, u)


@serial_jit
def output_tile_grad(grad, n, i, j, grad_products, index, w):
    """``grad_products[:, index]`` ← ``A Ĝ Aᵀ`` of the 2×2 block of ``grad`` from ``(2i, 2j)``; ``w (2, 4, LANES)`` scratch."""
    features = grad.shape[3]
    for start in range(0, features, LANES):
        width_f = min(LANES, features - start)
        for r in range(2):  # Ĝ Aᵀ, row r: g0, g0 + g1, g0 − g1, −g1
            g0, g1 = grad[n, 2 * i + r, 2 * j, start:], grad[n, 2 * i + r, 2 * j + 1, start:]
            for f in range(width_f):
                w[r, 0, f] = g0[f]
                w[r, 1, f] = g0[f] + g1[f]
                w[r, 2, f] = g0[f] - g1[f]
                w[r, 3, f] = -g1[f]
        for b in range(4):  # A (Ĝ Aᵀ), column b: the same combinations of the two rows
            o0, o1 = grad_products[b, index, start:], grad_products[4 + b, index, start:]
            o2, o3 = grad_products[8 + b, index, start:], grad_products[12 + b, index, start:]
            for f in range(width_f):
                o0[f] = w[0, b, f]
                o1[f] = w[0, b, f] + w[1, b, f]
                o2[f] = w[0, b, f] - w[1, b, f]
                o3[f] = -w[1, b, f]


@serial_jit
def output_tile_grad4(grad, n, i, j, grad_products, index, w):
    """``grad_products[:, index]`` ← ``A Ĝ Aᵀ`` of the 4×4 block of ``grad`` from ``(4i, 4j)``; ``w (4, 6, LANES)`` scratch."""
    features = grad.shape[3]
    for start in range(0, features, LANES):
        width_f = min(LANES, features - start)
        for r in range(4):  # Ĝ Aᵀ, row r: the columns of Aᵀ, g0, Σ g, g0 − g1 + g2 − g3, g0 ± 2·g1 + 4·g2 ± 8·g3, g3
            g0, g1 = grad[n, 4 * i + r, 4 * j, start:], grad[n, 4 * i + r, 4 * j + 1, start:]
            g2, g3 = grad[n, 4 * i + r, 4 * j + 2, start:], grad[n, 4 * i + r, 4 * j + 3, start:]
            for f in range(width_f):
                w[r, 0, f] = g0[f]
                w[r, 1, f] = g0[f] + g1[f] + g2[f] + g3[f]
                w[r, 2, f] = g0[f] - g1[f] + g2[f] - g3[f]
                w[r, 3, f] = g0[f] + TWO * g1[f] + FOUR * g2[f] + EIGHT * g3[f]
                w[r, 4, f] = g0[f] - TWO * g1[f] + FOUR * g2[f] - EIGHT * g3[f]
                w[r, 5, f] = g3[f]
        for b in range(6):  # A (Ĝ Aᵀ), column b: the same combinations of the four rows
            o0, o1, o2 = (grad_products[b, index, start:], grad_products[6 + b, index, start:],
                          grad_products[12 + b, index, start:])
            o3, o4, o5 = (grad_products[18 + b, index, start:], grad_products[24 + b, index, start:],
                          grad_products[30 + b, index, start:])
            for f in range(width_f):
                o0[f] = w[0, b, f]
                o1[f] = w[0, b, f] + w[1, b, f] + w[2, b, f] + w[3, b, f]
                o2[f] = w[0, b, f] - w[1, b, f] + w[2, b, f] - w[3, b, f]
                o3[f] = w[0, b, f] + TWO * w[1, b, f] + FOUR * w[2, b, f] + EIGHT * w[3, b, f]
                o4[f] = w[0, b, f] - TWO * w[1, b, f] + FOUR * w[2, b, f] - EIGHT * w[3, b, f]
                o5[f] = w[3, b, f]


@jit
def winograd_output_transform_grad(grad, grad_products, tile):
    """``grad_products (α², m·TH·TW, F)`` ← ``A Ĝ Aᵀ`` of every tile×tile block ``Ĝ`` of ``grad (m, tile·TH, tile·TW, F)``."""
    m, height, width, _ = grad.shape
    th, tw = height // tile, width // tile
    for n in prange(m):
        w = np.empty((tile, tile + 2, LANES), dtype=grad.dtype)
        for i in range(th):
            for j in range(tw):
                if tile == 4:
                    output_tile_grad4(grad, n, i, j, grad_products, (n * th + i) * tw + j, w)
                else:
                    output_tile_grad(grad, n, i, j, grad_products, (n * th + i) * tw + j, w)


@serial_jit
def input_tile_grad(grad_tiles, index, grad_x, n, i, j, t):
    """``grad_x[n, 2i : 2i + 4, 2j : 2j + 4]`` += ``B V̂ Bᵀ`` of ``grad_tiles[:, index]``; ``t (4, 4, LANES)`` scratch."""
    channels = grad_x.shape[3]
    for start in range(0, channels, LANES):
        width_c = min(LANES, channels - start)
        for b in range(4):  # B V̂, column b: z0, z1 − z2 + z3, z1 + z2 − z0, −z3
            z0, z1 = grad_tiles[b, index, start:], grad_tiles[4 + b, index, start:]
            z2, z3 = grad_tiles[8 + b, index, start:], grad_tiles[12 + b, index, start:]
            for c in range(width_c):
                t[0, b, c] = z0[c]
                t[1, b, c] = z1[c] - z2[c] + z3[c]
                t[2, b, c] = z1[c] + z2[c] - z0[c]
                t[3, b, c] = -z3[c]
        for p in range(4):  # (B V̂) Bᵀ, row p, added onto the pixels
            x0, x1 = grad_x[n, 2 * i + p, 2 * j, start:], grad_x[n, 2 * i + p, 2 * j + 1, start:]
            x2, x3 = grad_x[n, 2 * i + p, 2 * j + 2, start:], grad_x[n, 2 * i + p, 2 * j + 3, start:]
            for c in range(width_c):
                x0[c] += t[p, 0, c]
                x1[c] += t[p, 1, c] - t[p, 2, c] + t[p, 3, c]
                x2[c] += t[p, 1, c] + t[p, 2, c] - t[p, 0, c]
                x3[c] -= t[p, 3, c]


@serial_jit
def input_tile_grad4(grad_tiles, index, grad_x, n, i, j, t):
    """``grad_x[n, 4i : 4i + 6, 4j : 4j + 6]`` += ``B V̂ Bᵀ`` of ``grad_tiles[:, index]``; ``t (6, 6, LANES)`` scratch."""
    channels = grad_x.shape[3]
    for start in range(0, channels, LANES):
        width_c = min(LANES, channels - start)
        for b in range(6):  # B V̂, column b: the columns of Bᵀ applied to z0 … z5
            z0, z1, z2 = grad_tiles[b, index, start:], grad_tiles[6 + b, index, start:], grad_tiles[12 + b, index, start:]
            z3, z4, z5 = grad_tiles[18 + b, index, start:], grad_tiles[24 + b, index, start:], grad_tiles[30 + b, index, start:]
            for c in range(width_c):
                t[0, b, c] = FOUR * z0[c]
                t[1, b, c] = FOUR * (z2[c] - z1[c] + z5[c]) + TWO * (z4[c] - z3[c])
                t[2, b, c] = -FIVE * z0[c] - FOUR * (z1[c] + z2[c]) - (z3[c] + z4[c])
                t[3, b, c] = z1[c] - z2[c] + TWO * (z3[c] - z4[c]) - FIVE * z5[c]
                t[4, b, c] = z0[c] + z1[c] + z2[c] + z3[c] + z4[c]
                t[5, b, c] = z5[c]
        for p in range(6):  # (B V̂) Bᵀ, row p, added onto the pixels
            x0, x1, x2 = (grad_x[n, 4 * i + p, 4 * j, start:], grad_x[n, 4 * i + p, 4 * j + 1, start:],
                          grad_x[n, 4 * i + p, 4 * j + 2, start:])
            x3, x4, x5 = (grad_x[n, 4 * i + p, 4 * j + 3, start:], grad_x[n, 4 * i + p, 4 * j + 4, start:],
                          grad_x[n, 4 * i + p, 4 * j + 5, start:])
            for c in range(width_c):
                x0[c] += FOUR * t[p, 0, c]
                x1[c] += FOUR * (t[p, 2, c] - t[p, 1, c] + t[p, 5, c]) + TWO * (t[p, 4, c] - t[p, 3, c])
                x2[c] += -FIVE * t[p, 0, c] - FOUR * (t[p, 1, c] + t[p, 2, c]) - (t[p, 3, c] + t[p, 4, c])
                x3[c] += t[p, 1, c] - t[p, 2, c] + TWO * (t[p, 3, c] - t[p, 4, c]) - FIVE * t[p, 5, c]
                x4[c] += t[p, 0, c] + t[p, 1, c] + t[p, 2, c] + t[p, 3, c] + t[p, 4, c]
                x5[c] += t[p, 5, c]


@jit
def winograd_input_transform_grad(grad_tiles, grad_x, tile):
    """``grad_x (m, tile·TH + 2, tile·TW + 2, C)`` (zeroed) += ``B V̂ Bᵀ`` of every tile of ``grad_tiles (α², m·TH·TW, C)``.

    Tiles overlap, so one image's tiles run in order on one thread.
    """
    m, height, width, _ = grad_x.shape
    th, tw = (height - 2) // tile, (width - 2) // tile
    for n in prange(m):
        t = np.empty((tile + 2, tile + 2, LANES), dtype=grad_x.dtype)
        for i in range(th):
            for j in range(tw):
                if tile == 4:
                    input_tile_grad4(grad_tiles, (n * th + i) * tw + j, grad_x, n, i, j, t)
                else:
                    input_tile_grad(grad_tiles, (n * th + i) * tw + j, grad_x, n, i, j, t)


@serial_jit
def channel_sums(x, shift, sums, squares):
    """Add ``Σ (x − shift)`` and ``Σ (x − shift)²`` per channel of pixel rows ``x (M, C)`` into ``sums``,
    ``squares`` (float64)."""
    rows, channels = x.shape
    for r in range(rows):
        for c in range(channels):
            d = np.float64(x[r, c]) - shift[c]
            sums[c] += d
            squares[c] += d * d


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
