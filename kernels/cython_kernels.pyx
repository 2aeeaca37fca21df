# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled loops behind ``minimtl/kernels/cython_backend.py``.

Most kernels exist twice, once per memory layout of the image batch:

``*_planar``
    the image is ``x (N, C, H, W)`` C-contiguous: every channel a plane.
``*_channels_last``
    the image is ``x (N, H, W, C)`` C-contiguous: the channels of one pixel
    side by side (what PyTorch calls channels-last, TensorFlow NHWC).

Both compute exactly what ``minimtl/kernels/numpy_backend.py`` computes; the
wrappers in ``cython_backend.py`` pick the variant that reads memory in order
and present the NCHW contract.  ``col2im`` has only the channels-last
variant: the gradient it returns is for a convolution input, and minimtl's
convolutions produce channels-last outputs (see ``Conv2dFunction``).  The column matrix is written transposed,
``cols_t (N·OH·OW, C·KH·KW)`` C-contiguous, so each output pixel's receptive
field is one contiguous row (``cols_t.T`` is the contract's
``cols (C·KH·KW, N·OH·OW)``).  Column ``c·KH·KW + i·KW + j`` holds channel
``c`` at kernel offset ``(i, j)``.

The outer loop runs over the batch with OpenMP (``prange``): images never
share output memory, so the threads need no locks.  Every loop takes
``threads``, the number of OpenMP threads to use (``0``: OpenMP's default);
``minimtl/kernels/compiled.py`` passes ``1`` for small work, where waking a
second thread costs more than the loop.  Loops are written in
nogil Cython so each line reads like the NumPy reference.

``shifted_matmul`` and ``shifted_matmul_grad_weights`` are the exception:
they call BLAS (``sgemm``/``dgemm`` from ``scipy.linalg.cython_blas``) on
blocks of rows, single-threaded, because ``minimtl.parallel`` already runs
one call per core.
"""
from cython.parallel import prange
from libc.math cimport INFINITY
from scipy.linalg.cython_blas cimport dgemm, sgemm
cimport openmp

ctypedef fused floating:
    float
    double

ctypedef long long index_t  # int64, the dtype of pooling indices


cdef inline int team_size(int threads) noexcept nogil:
    """``threads`` if at least 1, else OpenMP's default team size."""
    return threads if threads >= 1 else openmp.omp_get_max_threads()


# ----------------------------------------------------------------- im2col
def im2col_planar(const floating[:, :, :, ::1] x, floating[:, ::1] cols_t,
                  int kh, int kw, int sh, int sw, int pad_top, int pad_left, int oh, int ow, int threads=0):
    """Fill ``cols_t (N·OH·OW, C·KH·KW)`` from ``x (N, C, H, W)``; padding reads as zero."""
    cdef Py_ssize_t n_images = x.shape[0], channels = x.shape[1], height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t n, row, col, c, i, j, h, w, r, q
    for n in prange(n_images, nogil=True, schedule="static", num_threads=team_size(threads)):
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
                            col = col + 1


def im2col_channels_last(const floating[:, :, :, ::1] x, floating[:, ::1] cols_t,
                         int kh, int kw, int sh, int sw, int pad_top, int pad_left, int oh, int ow, int threads=0):
    """Fill ``cols_t (N·OH·OW, C·KH·KW)`` from ``x (N, H, W, C)``; padding reads as zero."""
    cdef Py_ssize_t n_images = x.shape[0], height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t kernel_area = kh * kw
    cdef Py_ssize_t n, row, c, i, j, h, w, r, q, offset
    for n in prange(n_images, nogil=True, schedule="static", num_threads=team_size(threads)):
        for r in range(oh):
            for q in range(ow):
                row = (n * oh + r) * ow + q
                for i in range(kh):
                    h = r * sh - pad_top + i
                    for j in range(kw):
                        w = q * sw - pad_left + j
                        offset = i * kw + j
                        if 0 <= h < height and 0 <= w < width:
                            for c in range(channels):
                                cols_t[row, c * kernel_area + offset] = x[n, h, w, c]
                        else:
                            for c in range(channels):
                                cols_t[row, c * kernel_area + offset] = 0


# ----------------------------------------------------------------- col2im
def col2im_channels_last(const floating[:, ::1] cols_t, floating[:, :, :, ::1] out,
                         int kh, int kw, int sh, int sw, int pad_top, int pad_left, int oh, int ow, int threads=0):
    """Add every row of ``cols_t (N·OH·OW, C·KH·KW)`` onto zeroed ``out (N, H, W, C)``; padding is dropped."""
    cdef Py_ssize_t n_images = out.shape[0], height = out.shape[1], width = out.shape[2], channels = out.shape[3]
    cdef Py_ssize_t kernel_area = kh * kw
    cdef Py_ssize_t n, row, c, i, j, h, w, r, q, offset
    for n in prange(n_images, nogil=True, schedule="static", num_threads=team_size(threads)):
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


# ------------------------------------------------------------- max-pooling
def max_pool_forward_planar(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, index_t[:, :, :, ::1] indices,
                            int kh, int kw, int sh, int sw, int pad_top, int pad_left, int threads=0):
    """Window maxima of ``x (N, C, H, W)`` into ``out``/``indices (N, C, OH, OW)``; the first maximum wins ties.

    ``indices`` holds ``h·W + w`` in the input plane.  A window that sees only
    padding (or only -inf) keeps -inf and the index of its top-left offset, as
    the reference does.
    """
    cdef Py_ssize_t n_images = x.shape[0], channels = x.shape[1], height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t n, c, r, q, i, j, h, w, best_index
    cdef floating best, value
    for n in prange(n_images, nogil=True, schedule="static", num_threads=team_size(threads)):
        for c in range(channels):
            for r in range(oh):
                for q in range(ow):
                    best = -INFINITY
                    best_index = (r * sh - pad_top) * width + (q * sw - pad_left)
                    for i in range(kh):
                        h = r * sh - pad_top + i
                        if h < 0 or h >= height:
                            continue
                        for j in range(kw):
                            w = q * sw - pad_left + j
                            if w < 0 or w >= width:
                                continue
                            value = x[n, c, h, w]
                            if value > best:
                                best = value
                                best_index = h * width + w
                    out[n, c, r, q] = best
                    indices[n, c, r, q] = best_index


def max_pool_forward_channels_last(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, index_t[:, :, :, ::1] indices,
                                   int kh, int kw, int sh, int sw, int pad_top, int pad_left, int threads=0):
    """Window maxima of ``x (N, H, W, C)`` into ``out``/``indices (N, OH, OW, C)``; same rules as the planar one.

    The loop over channels reads and writes through row pointers, loads
    everything first and picks without a branch (a select for the value,
    a bit mask for the index), both arrays written every time: GCC vectorises
    that, and did not vectorise a conditional store or load, nor a select of
    the int64 index on a float comparison (``-fopt-info-vec``: "control flow
    in loop").
    """
    cdef Py_ssize_t n_images = x.shape[0], height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t oh = out.shape[1], ow = out.shape[2]
    cdef Py_ssize_t n, c, r, q, i, j, h, w
    cdef index_t position, best_position, taken
    cdef const floating* x_row
    cdef floating* out_row
    cdef index_t* index_row
    cdef floating value, best
    if n_images == 0 or channels == 0:
        return
    for n in prange(n_images, nogil=True, schedule="static", num_threads=team_size(threads)):
        for r in range(oh):
            for q in range(ow):
                out_row = &out[n, r, q, 0]
                index_row = &indices[n, r, q, 0]
                position = (r * sh - pad_top) * width + (q * sw - pad_left)
                for c in range(channels):
                    out_row[c] = -INFINITY
                    index_row[c] = position
                for i in range(kh):
                    h = r * sh - pad_top + i
                    if h < 0 or h >= height:
                        continue
                    for j in range(kw):
                        w = q * sw - pad_left + j
                        if w < 0 or w >= width:
                            continue
                        x_row = &x[n, h, w, 0]
                        position = h * width + w
                        for c in range(channels):
                            value, best, best_position = x_row[c], out_row[c], index_row[c]  # all loaded first
                            taken = value > best  # 1 or 0; -taken is all ones or all zeros: a mask, no branch
                            index_row[c] = best_position ^ (-taken & (position ^ best_position))
                            out_row[c] = value if value > best else best


def max_pool_backward_planar(const floating[:, :, :, ::1] grad_out, const index_t[:, :, :, ::1] indices,
                             floating[:, :, :, ::1] grad_x, int threads=0):
    """Add ``grad_out (N, C, OH, OW)`` onto zeroed ``grad_x (N, C, H, W)`` at the winners ``indices``."""
    cdef Py_ssize_t n_images = grad_out.shape[0], channels = grad_out.shape[1], oh = grad_out.shape[2], ow = grad_out.shape[3]
    cdef Py_ssize_t width = grad_x.shape[3]
    cdef Py_ssize_t n, c, r, q
    cdef index_t k
    for n in prange(n_images, nogil=True, schedule="static", num_threads=team_size(threads)):
        for c in range(channels):
            for r in range(oh):
                for q in range(ow):
                    k = indices[n, c, r, q]
                    grad_x[n, c, k // width, k % width] += grad_out[n, c, r, q]


def max_pool_backward_channels_last(const floating[:, :, :, ::1] grad_out, const index_t[:, :, :, ::1] indices,
                                    floating[:, :, :, ::1] grad_x, int threads=0):
    """Add ``grad_out (N, OH, OW, C)`` onto zeroed ``grad_x (N, H, W, C)`` at the winners ``indices``.

    Winner ``k = h·W + w`` of channel ``c`` is value ``k·C + c`` of its image in
    channels-last memory: no division per value.
    """
    cdef Py_ssize_t n_images = grad_out.shape[0], oh = grad_out.shape[1], ow = grad_out.shape[2], channels = grad_out.shape[3]
    cdef Py_ssize_t n, c, r, q
    cdef floating* image
    cdef const floating* g_row
    cdef const index_t* index_row
    if n_images == 0 or channels == 0:
        return
    for n in prange(n_images, nogil=True, schedule="static", num_threads=team_size(threads)):
        image = &grad_x[n, 0, 0, 0]
        for r in range(oh):
            for q in range(ow):
                g_row = &grad_out[n, r, q, 0]
                index_row = &indices[n, r, q, 0]
                for c in range(channels):
                    image[index_row[c] * channels + c] += g_row[c]


# ------------------------------------------------- shifted matrix products
cdef inline void matmul_rows(bint transpose_a, int m, int n, int k, floating* a, int lda, floating* b, int ldb,
                             bint accumulate, floating* c, int ldc) noexcept nogil:
    """Row-major ``C (m×n) = A @ B`` or ``C += A @ B`` with ``A (m×k)`` (stored ``(k×m)`` when ``transpose_a``), ``B (k×n)``.

    BLAS is column-major, and a row-major matrix is its transpose seen
    column-major, so this asks BLAS for ``Cᵀ = Bᵀ Aᵀ``.
    """
    cdef char no = b'N', yes = b'T'
    cdef char* trans_a = &yes if transpose_a else &no
    cdef floating one = 1, beta = 1 if accumulate else 0
    if floating is float:
        sgemm(&no, trans_a, &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc)
    else:
        dgemm(&no, trans_a, &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc)


def shifted_matmul(const floating[:, ::1] rows, const floating[:, :, ::1] weights, const Py_ssize_t[::1] offsets,
                   floating[:, ::1] out, int tile):
    """``out[p] = Σ_k rows[p + offsets[k]] @ weights[k]`` for ``out (P, F)``, ``tile`` rows of ``out`` at a time.

    Each tile of ``out`` stays in cache while the K products add into it (BLAS
    with ``beta = 1``).  Bounds are checked by the caller (``compiled.py``).
    """
    cdef int count = out.shape[0], channels = rows.shape[1], features = out.shape[1], taps = offsets.shape[0]
    cdef int start = 0, size, k
    with nogil:
        while start < count:
            size = min(tile, count - start)
            for k in range(taps):
                matmul_rows(False, size, features, channels, <floating*> &rows[start + offsets[k], 0], channels,
                            <floating*> &weights[k, 0, 0], features, k > 0, &out[start, 0], features)
            start += tile


def shifted_matmul_grad_weights(const floating[:, ::1] rows, const floating[:, ::1] grad, const Py_ssize_t[::1] offsets,
                                floating[:, :, ::1] result, int tile):
    """``result[k] = rows[offsets[k] : offsets[k] + P]ᵀ @ grad`` for ``grad (P, F)``, summed ``tile`` rows at a time."""
    cdef int count = grad.shape[0], channels = rows.shape[1], features = grad.shape[1], taps = offsets.shape[0]
    cdef int start = 0, size, k
    with nogil:
        while start < count:
            size = min(tile, count - start)
            for k in range(taps):
                matmul_rows(True, channels, features, size, <floating*> &rows[start + offsets[k], 0], channels,
                            <floating*> &grad[start, 0], features, start > 0, &result[k, 0, 0], features)
            start += tile


# ------------------------------------------------------- batch-norm + ReLU
# Rows are walked through plain pointers: indexing the memoryviews inside the
# inner loop goes through ``char *`` casts, which may alias anything, and kept
# GCC from vectorising the loop over channels (10x slower).  How the ReLU's
# mask is written matters too (``gcc -fopt-info-vec-missed``: "control flow in
# loop" otherwise): a select between constants, ``g * (1 if y > 0 else 0)``,
# or a select on a value already loaded, vectorise; a conditional load
# (``g_row[c] if y > 0 else 0``) and ``g * (y > 0)`` did not.
def channel_sums(const floating[:, ::1] x, const floating[::1] shift, double[::1] sums, double[::1] squares):
    """Add ``Σ (x − shift)`` and ``Σ (x − shift)²`` per channel of pixel rows ``x (M, C)`` into ``sums``, ``squares`` (float64)."""
    cdef Py_ssize_t rows = x.shape[0], channels = x.shape[1], r, c
    cdef const floating* x_row
    cdef const floating* shift_p = &shift[0]
    cdef double* sums_p = &sums[0]
    cdef double* squares_p = &squares[0]
    cdef double d
    if rows == 0:
        return
    with nogil:
        for r in range(rows):
            x_row = &x[r, 0]
            for c in range(channels):
                d = <double>x_row[c] - shift_p[c]
                sums_p[c] += d
                squares_p[c] += d * d


def batch_norm_relu_forward(const floating[:, ::1] x, const floating[::1] mean, const floating[::1] scale,
                            const floating[::1] shift, floating[:, ::1] y):
    """``y = max(0, (x − mean) · scale + shift)`` for pixel rows ``x (M, C)``; one pass, single-threaded."""
    cdef Py_ssize_t rows = x.shape[0], channels = x.shape[1], r, c
    cdef const floating* x_row
    cdef floating* y_row
    cdef const floating* mean_p = &mean[0]
    cdef const floating* scale_p = &scale[0]
    cdef const floating* shift_p = &shift[0]
    cdef floating value
    if rows == 0:
        return
    with nogil:
        for r in range(rows):
            x_row, y_row = &x[r, 0], &y[r, 0]
            for c in range(channels):
                value = (x_row[c] - mean_p[c]) * scale_p[c] + shift_p[c]
                y_row[c] = value if value > 0 else 0


def batch_norm_relu_sums(const floating[:, ::1] grad, const floating[:, ::1] x, const floating[:, ::1] y,
                         const floating[::1] mean, const floating[::1] inv_std, double[::1] sum_g, double[::1] sum_gx):
    """Add ``Σ g'`` and ``Σ g' · x̂`` per channel into ``sum_g``, ``sum_gx`` (float64), ``g' = g · [y > 0]``."""
    cdef Py_ssize_t rows = x.shape[0], channels = x.shape[1], r, c
    cdef const floating* g_row
    cdef const floating* x_row
    cdef const floating* y_row
    cdef const floating* mean_p = &mean[0]
    cdef const floating* inv_std_p = &inv_std[0]
    cdef double* sum_g_p = &sum_g[0]
    cdef double* sum_gx_p = &sum_gx[0]
    cdef floating g_masked
    if rows == 0:
        return
    with nogil:
        for r in range(rows):
            g_row, x_row, y_row = &grad[r, 0], &x[r, 0], &y[r, 0]
            for c in range(channels):
                g_masked = g_row[c] * (1 if y_row[c] > 0 else 0)
                sum_g_p[c] += g_masked
                sum_gx_p[c] += g_masked * ((x_row[c] - mean_p[c]) * inv_std_p[c])


def batch_norm_relu_backward(const floating[:, ::1] grad, const floating[:, ::1] x, const floating[:, ::1] y,
                             const floating[::1] mean, const floating[::1] inv_std, const floating[::1] mean_g,
                             const floating[::1] mean_gx, const floating[::1] scale, floating[:, ::1] grad_x):
    """``grad_x = scale · (g' − mean_g − x̂ · mean_gx)`` for pixel rows; one pass, single-threaded."""
    cdef Py_ssize_t rows = x.shape[0], channels = x.shape[1], r, c
    cdef const floating* g_row
    cdef const floating* x_row
    cdef const floating* y_row
    cdef floating* out_row
    cdef const floating* mean_p = &mean[0]
    cdef const floating* inv_std_p = &inv_std[0]
    cdef const floating* mean_g_p = &mean_g[0]
    cdef const floating* mean_gx_p = &mean_gx[0]
    cdef const floating* scale_p = &scale[0]
    cdef floating g_masked
    if rows == 0:
        return
    with nogil:
        for r in range(rows):
            g_row, x_row, y_row, out_row = &grad[r, 0], &x[r, 0], &y[r, 0], &grad_x[r, 0]
            for c in range(channels):
                g_masked = g_row[c]  # loaded first: GCC does not vectorise a load inside a condition
                g_masked = g_masked if y_row[c] > 0 else 0
                out_row[c] = scale_p[c] * (g_masked - mean_g_p[c] - (x_row[c] - mean_p[c]) * inv_std_p[c] * mean_gx_p[c])


# ----------------------------------------------------------- Winograd tiles
# F(2×2, 3×3) and F(4×4, 3×3): the matrices Bᵀ, G, Aᵀ are written out in
# ``numpy_backend.py``.  Here their products are spelled out as additions and
# small multiples, in two stages per tile (rows, then columns), a block of
# ``LANES`` channels at a time.  Each stage is a loop over channels that reads
# contiguous memory and writes contiguous memory; the stage between them goes
# through a small array on the stack, which GCC knows aliases nothing, so the
# loops vectorise (with both stages in one loop body, through 16 pointers into
# one array, GCC gave up: too many possible overlaps to check at run time).
# ``plane`` is the distance between the α² planes ξ = α·a + b of the tile-domain
# arrays (α = 4 for F(2×2, 3×3), 6 for F(4×4, 3×3)).  The ``*_tile`` functions
# are F(2×2, 3×3), the ``*_tile4`` ones F(4×4, 3×3); the loops over tiles take
# ``tile`` (2 or 4) and call one or the other.
DEF LANES = 64


cdef inline void input_tile(const floating* d, Py_ssize_t row, Py_ssize_t channels, floating* out,
                            Py_ssize_t plane) noexcept nogil:
    """Write ``Bᵀ d B`` of the 4×4 tile at ``d`` (rows ``row`` apart, pixels ``channels`` apart) to ``out[ξ·plane + c]``."""
    cdef floating t[4][4][LANES]
    cdef Py_ssize_t start, width, c, q, a
    cdef const floating* col
    cdef floating* o
    for start in range(0, channels, LANES):
        width = min(LANES, channels - start)
        for q in range(4):  # Bᵀ d, column q: rows d0 − d2, d1 + d2, d2 − d1, d1 − d3
            col = d + q * channels + start
            for c in range(width):
                t[0][q][c] = col[c] - col[2 * row + c]
                t[1][q][c] = col[row + c] + col[2 * row + c]
                t[2][q][c] = col[2 * row + c] - col[row + c]
                t[3][q][c] = col[row + c] - col[3 * row + c]
        for a in range(4):  # (Bᵀ d) B, row a: the same four combinations along the row
            o = out + 4 * a * plane + start
            for c in range(width):
                o[c] = t[a][0][c] - t[a][2][c]
                o[plane + c] = t[a][1][c] + t[a][2][c]
                o[2 * plane + c] = t[a][2][c] - t[a][1][c]
                o[3 * plane + c] = t[a][1][c] - t[a][3][c]


def winograd_input_transform(const floating[:, :, :, ::1] x, floating[:, :, ::1] tiles, int tile=2, int threads=0):
    """``tiles (α², m·TH·TW, C)`` ← ``Bᵀ d B`` of every α×α tile ``d`` of ``x (m, tile·TH + 2, tile·TW + 2, C)``."""
    cdef Py_ssize_t m = x.shape[0], th = (x.shape[1] - 2) // tile, tw = (x.shape[2] - 2) // tile
    cdef Py_ssize_t channels = x.shape[3], row = x.shape[2] * x.shape[3], plane = tiles.shape[1] * tiles.shape[2]
    cdef Py_ssize_t n, i, j
    if m == 0 or channels == 0:
        return
    for n in prange(m, nogil=True, num_threads=team_size(threads)):
        for i in range(th):
            for j in range(tw):
                if tile == 4:
                    input_tile4(&x[n, 4 * i, 4 * j, 0], row, channels, &tiles[0, (n * th + i) * tw + j, 0], plane)
                else:
                    input_tile(&x[n, 2 * i, 2 * j, 0], row, channels, &tiles[0, (n * th + i) * tw + j, 0], plane)


cdef inline void output_tile(const floating* m, Py_ssize_t plane, Py_ssize_t features, floating* y,
                             Py_ssize_t row) noexcept nogil:
    """Write ``Aᵀ M A`` of the tile whose ``M[ξ]`` are at ``m[ξ·plane + f]`` to the 2×2 pixels at ``y`` (rows ``row`` apart)."""
    cdef floating u[2][4][LANES]
    cdef Py_ssize_t start, width, f, b, r
    cdef const floating* col
    cdef floating* o
    for start in range(0, features, LANES):
        width = min(LANES, features - start)
        for b in range(4):  # Aᵀ M, column b: m0 + m1 + m2 and m1 − m2 − m3
            col = m + b * plane + start
            for f in range(width):
                u[0][b][f] = col[f] + col[4 * plane + f] + col[8 * plane + f]
                u[1][b][f] = col[4 * plane + f] - col[8 * plane + f] - col[12 * plane + f]
        for r in range(2):  # (Aᵀ M) A, row r
            o = y + r * row + start
            for f in range(width):
                o[f] = u[r][0][f] + u[r][1][f] + u[r][2][f]
                o[features + f] = u[r][1][f] - u[r][2][f] - u[r][3][f]


def winograd_output_transform(const floating[:, :, ::1] products, floating[:, :, :, ::1] y, int tile=2, int threads=0):
    """``y (m, tile·TH, tile·TW, F)`` ← ``Aᵀ M A`` of every tile of ``products (α², m·TH·TW, F)``."""
    cdef Py_ssize_t m = y.shape[0], th = y.shape[1] // tile, tw = y.shape[2] // tile, features = y.shape[3]
    cdef Py_ssize_t row = y.shape[2] * features, plane = products.shape[1] * features
    cdef Py_ssize_t n, i, j
    if m == 0 or features == 0:
        return
    for n in prange(m, nogil=True, num_threads=team_size(threads)):
        for i in range(th):
            for j in range(tw):
                if tile == 4:
                    output_tile4(&products[0, (n * th + i) * tw + j, 0], plane, features, &y[n, 4 * i, 4 * j, 0], row)
                else:
                    output_tile(&products[0, (n * th + i) * tw + j, 0], plane, features, &y[n, 2 * i, 2 * j, 0], row)


cdef inline void output_tile_grad(const floating* g, Py_ssize_t row, Py_ssize_t features, floating* out,
                                  Py_ssize_t plane) noexcept nogil:
    """Write ``A Ĝ Aᵀ`` of the 2×2 gradient at ``g`` (rows ``row`` apart) to ``out[ξ·plane + f]``."""
    cdef floating w[2][4][LANES]
    cdef Py_ssize_t start, width, f, r, b
    cdef const floating* pixels
    cdef floating* o
    for start in range(0, features, LANES):
        width = min(LANES, features - start)
        for r in range(2):  # Ĝ Aᵀ, row r: g0, g0 + g1, g0 − g1, −g1
            pixels = g + r * row + start
            for f in range(width):
                w[r][0][f] = pixels[f]
                w[r][1][f] = pixels[f] + pixels[features + f]
                w[r][2][f] = pixels[f] - pixels[features + f]
                w[r][3][f] = -pixels[features + f]
        for b in range(4):  # A (Ĝ Aᵀ), column b: the same combinations of the two rows
            o = out + b * plane + start
            for f in range(width):
                o[f] = w[0][b][f]
                o[4 * plane + f] = w[0][b][f] + w[1][b][f]
                o[8 * plane + f] = w[0][b][f] - w[1][b][f]
                o[12 * plane + f] = -w[1][b][f]


def winograd_output_transform_grad(const floating[:, :, :, ::1] grad, floating[:, :, ::1] grad_products, int tile=2,
                                   int threads=0):
    """``grad_products (α², m·TH·TW, F)`` ← ``A Ĝ Aᵀ`` of every tile×tile block ``Ĝ`` of ``grad (m, tile·TH, tile·TW, F)``."""
    cdef Py_ssize_t m = grad.shape[0], th = grad.shape[1] // tile, tw = grad.shape[2] // tile, features = grad.shape[3]
    cdef Py_ssize_t row = grad.shape[2] * features, plane = grad_products.shape[1] * features
    cdef Py_ssize_t n, i, j
    if m == 0 or features == 0:
        return
    for n in prange(m, nogil=True, num_threads=team_size(threads)):
        for i in range(th):
            for j in range(tw):
                if tile == 4:
                    output_tile_grad4(&grad[n, 4 * i, 4 * j, 0], row, features, &grad_products[0, (n * th + i) * tw + j, 0],
                                      plane)
                else:
                    output_tile_grad(&grad[n, 2 * i, 2 * j, 0], row, features, &grad_products[0, (n * th + i) * tw + j, 0],
                                     plane)


cdef inline void input_tile_grad(const floating* v, Py_ssize_t plane, Py_ssize_t channels, floating* d,
                                 Py_ssize_t row) noexcept nogil:
    """Add ``B V̂ Bᵀ`` of the tile whose ``V̂[ξ]`` are at ``v[ξ·plane + c]`` onto the 4×4 pixels at ``d``."""
    cdef floating t[4][4][LANES]
    cdef Py_ssize_t start, width, c, b, p
    cdef const floating* col
    cdef floating* pixel
    for start in range(0, channels, LANES):
        width = min(LANES, channels - start)
        for b in range(4):  # B V̂, column b: z0, z1 − z2 + z3, z1 + z2 − z0, −z3
            col = v + b * plane + start
            for c in range(width):
                t[0][b][c] = col[c]
                t[1][b][c] = col[4 * plane + c] - col[8 * plane + c] + col[12 * plane + c]
                t[2][b][c] = col[4 * plane + c] + col[8 * plane + c] - col[c]
                t[3][b][c] = -col[12 * plane + c]
        for p in range(4):  # (B V̂) Bᵀ, row p: the same combinations along the row, added onto the pixels
            # One loop per pixel, each updating a single pixel from the stack array: no overlaps to check.
            pixel = d + p * row + start
            for c in range(width):
                pixel[c] += t[p][0][c]
            pixel = pixel + channels
            for c in range(width):
                pixel[c] += t[p][1][c] - t[p][2][c] + t[p][3][c]
            pixel = pixel + channels
            for c in range(width):
                pixel[c] += t[p][1][c] + t[p][2][c] - t[p][0][c]
            pixel = pixel + channels
            for c in range(width):
                pixel[c] -= t[p][3][c]


def winograd_input_transform_grad(const floating[:, :, ::1] grad_tiles, floating[:, :, :, ::1] grad_x, int tile=2,
                                  int threads=0):
    """``grad_x (m, tile·TH + 2, tile·TW + 2, C)`` (zeroed by the caller) += ``B V̂ Bᵀ`` of every tile of ``grad_tiles (α², m·TH·TW, C)``.

    Tiles overlap by two pixels, so one image's tiles run in order on one
    thread; the threads take whole images.
    """
    cdef Py_ssize_t m = grad_x.shape[0], th = (grad_x.shape[1] - 2) // tile, tw = (grad_x.shape[2] - 2) // tile
    cdef Py_ssize_t channels = grad_x.shape[3], row = grad_x.shape[2] * channels, plane = grad_tiles.shape[1] * channels
    cdef Py_ssize_t n, i, j
    if m == 0 or channels == 0:
        return
    for n in prange(m, nogil=True, num_threads=team_size(threads)):
        for i in range(th):
            for j in range(tw):
                if tile == 4:
                    input_tile_grad4(&grad_tiles[0, (n * th + i) * tw + j, 0], plane, channels, &grad_x[n, 4 * i, 4 * j, 0],
                                     row)
                else:
                    input_tile_grad(&grad_tiles[0, (n * th + i) * tw + j, 0], plane, channels, &grad_x[n, 2 * i, 2 * j, 0],
                                    row)


# F(4×4, 3×3): the same two stages with Bᵀ (6, 6) and Aᵀ (4, 6), whose entries are small integers.  The
# multipliers are typed ``floating`` constants (``two``, ``four``, ...): Cython writes a literal ``4`` next to
# a float as the double ``4.0``, and GCC does not vectorise a float loop that goes through double.
cdef inline void input_tile4(const floating* d, Py_ssize_t row, Py_ssize_t channels, floating* out,
                             Py_ssize_t plane) noexcept nogil:
    """Write ``Bᵀ d B`` of the 6×6 tile at ``d`` (rows ``row`` apart, pixels ``channels`` apart) to ``out[ξ·plane + c]``."""
    cdef floating four = 4, five = 5, two = 2
    cdef floating t[6][6][LANES]
    cdef Py_ssize_t start, width, c, q, a
    cdef const floating* col
    cdef floating* o
    for start in range(0, channels, LANES):
        width = min(LANES, channels - start)
        for q in range(6):  # Bᵀ d, column q: the rows of Bᵀ, grouped as d4 − 4·d2 ± (d3 − 4·d1) and d4 − d2 ± 2·(d3 − d1)
            col = d + q * channels + start
            for c in range(width):
                t[0][q][c] = four * col[c] - five * col[2 * row + c] + col[4 * row + c]
                t[1][q][c] = col[4 * row + c] - four * col[2 * row + c] + col[3 * row + c] - four * col[row + c]
                t[2][q][c] = col[4 * row + c] - four * col[2 * row + c] - col[3 * row + c] + four * col[row + c]
                t[3][q][c] = col[4 * row + c] - col[2 * row + c] + two * (col[3 * row + c] - col[row + c])
                t[4][q][c] = col[4 * row + c] - col[2 * row + c] - two * (col[3 * row + c] - col[row + c])
                t[5][q][c] = four * col[row + c] - five * col[3 * row + c] + col[5 * row + c]
        for a in range(6):  # (Bᵀ d) B, row a: the same six combinations along the row
            # One loop per plane: with six stores to ``o`` in one loop GCC would have to check 15 pairs of
            # them for overlap at run time, more than it does (10), and would not vectorise.
            o = out + 6 * a * plane + start
            for c in range(width):
                o[c] = four * t[a][0][c] - five * t[a][2][c] + t[a][4][c]
            o = o + plane
            for c in range(width):
                o[c] = t[a][4][c] - four * t[a][2][c] + t[a][3][c] - four * t[a][1][c]
            o = o + plane
            for c in range(width):
                o[c] = t[a][4][c] - four * t[a][2][c] - t[a][3][c] + four * t[a][1][c]
            o = o + plane
            for c in range(width):
                o[c] = t[a][4][c] - t[a][2][c] + two * (t[a][3][c] - t[a][1][c])
            o = o + plane
            for c in range(width):
                o[c] = t[a][4][c] - t[a][2][c] - two * (t[a][3][c] - t[a][1][c])
            o = o + plane
            for c in range(width):
                o[c] = four * t[a][1][c] - five * t[a][3][c] + t[a][5][c]


cdef inline void output_tile4(const floating* m, Py_ssize_t plane, Py_ssize_t features, floating* y,
                              Py_ssize_t row) noexcept nogil:
    """Write ``Aᵀ M A`` of the 6×6 tile whose ``M[ξ]`` are at ``m[ξ·plane + f]`` to the 4×4 pixels at ``y`` (rows ``row`` apart)."""
    cdef floating two = 2, four = 4, eight = 8
    cdef floating u[4][6][LANES]
    cdef Py_ssize_t start, width, f, b, r
    cdef const floating* col
    cdef floating* o
    for start in range(0, features, LANES):
        width = min(LANES, features - start)
        for b in range(6):  # Aᵀ M, column b: m0 + (m1 + m2) + (m3 + m4), (m1 − m2) + 2·(m3 − m4), ... + m5
            col = m + b * plane + start
            for f in range(width):
                u[0][b][f] = col[f] + col[6 * plane + f] + col[12 * plane + f] + col[18 * plane + f] + col[24 * plane + f]
                u[1][b][f] = col[6 * plane + f] - col[12 * plane + f] + two * (col[18 * plane + f] - col[24 * plane + f])
                u[2][b][f] = col[6 * plane + f] + col[12 * plane + f] + four * (col[18 * plane + f] + col[24 * plane + f])
                u[3][b][f] = (col[6 * plane + f] - col[12 * plane + f] + eight * (col[18 * plane + f] - col[24 * plane + f])
                              + col[30 * plane + f])
        for r in range(4):  # (Aᵀ M) A, row r: the same four combinations along the row
            o = y + r * row + start
            for f in range(width):
                o[f] = u[r][0][f] + u[r][1][f] + u[r][2][f] + u[r][3][f] + u[r][4][f]
                o[features + f] = u[r][1][f] - u[r][2][f] + two * (u[r][3][f] - u[r][4][f])
                o[2 * features + f] = u[r][1][f] + u[r][2][f] + four * (u[r][3][f] + u[r][4][f])
                o[3 * features + f] = u[r][1][f] - u[r][2][f] + eight * (u[r][3][f] - u[r][4][f]) + u[r][5][f]


cdef inline void output_tile_grad4(const floating* g, Py_ssize_t row, Py_ssize_t features, floating* out,
                                   Py_ssize_t plane) noexcept nogil:
    """Write ``A Ĝ Aᵀ`` of the 4×4 gradient at ``g`` (rows ``row`` apart) to ``out[ξ·plane + f]``."""
    cdef floating two = 2, four = 4, eight = 8
    cdef floating w[4][6][LANES]
    cdef Py_ssize_t start, width, f, r, b
    cdef const floating* pixels
    cdef floating* o
    for start in range(0, features, LANES):
        width = min(LANES, features - start)
        for r in range(4):  # Ĝ Aᵀ, row r: the columns of Aᵀ, g0, Σ g, g0 − g1 + g2 − g3, g0 ± 2·g1 + 4·g2 ± 8·g3, g3
            pixels = g + r * row + start
            for f in range(width):
                w[r][0][f] = pixels[f]
                w[r][1][f] = pixels[f] + pixels[features + f] + pixels[2 * features + f] + pixels[3 * features + f]
                w[r][2][f] = pixels[f] - pixels[features + f] + pixels[2 * features + f] - pixels[3 * features + f]
                w[r][3][f] = pixels[f] + two * pixels[features + f] + four * pixels[2 * features + f] + eight * pixels[3 * features + f]
                w[r][4][f] = pixels[f] - two * pixels[features + f] + four * pixels[2 * features + f] - eight * pixels[3 * features + f]
                w[r][5][f] = pixels[3 * features + f]
        for b in range(6):  # A (Ĝ Aᵀ), column b: the same combinations of the four rows, one loop per plane
            o = out + b * plane + start
            for f in range(width):
                o[f] = w[0][b][f]
            o = o + 6 * plane
            for f in range(width):
                o[f] = w[0][b][f] + w[1][b][f] + w[2][b][f] + w[3][b][f]
            o = o + 6 * plane
            for f in range(width):
                o[f] = w[0][b][f] - w[1][b][f] + w[2][b][f] - w[3][b][f]
            o = o + 6 * plane
            for f in range(width):
                o[f] = w[0][b][f] + two * w[1][b][f] + four * w[2][b][f] + eight * w[3][b][f]
            o = o + 6 * plane
            for f in range(width):
                o[f] = w[0][b][f] - two * w[1][b][f] + four * w[2][b][f] - eight * w[3][b][f]
            o = o + 6 * plane
            for f in range(width):
                o[f] = w[3][b][f]


cdef inline void input_tile_grad4(const floating* v, Py_ssize_t plane, Py_ssize_t channels, floating* d,
                                  Py_ssize_t row) noexcept nogil:
    """Add ``B V̂ Bᵀ`` of the 6×6 tile whose ``V̂[ξ]`` are at ``v[ξ·plane + c]`` onto the 6×6 pixels at ``d``."""
    cdef floating two = 2, four = 4, five = 5
    cdef floating t[6][6][LANES]
    cdef Py_ssize_t start, width, c, b, p
    cdef const floating* col
    cdef floating* pixel
    for start in range(0, channels, LANES):
        width = min(LANES, channels - start)
        for b in range(6):  # B V̂, column b: the columns of Bᵀ applied to z0 … z5
            col = v + b * plane + start
            for c in range(width):
                t[0][b][c] = four * col[c]
                t[1][b][c] = (four * (col[12 * plane + c] - col[6 * plane + c] + col[30 * plane + c])
                              + two * (col[24 * plane + c] - col[18 * plane + c]))
                t[2][b][c] = (-five * col[c] - four * (col[6 * plane + c] + col[12 * plane + c])
                              - (col[18 * plane + c] + col[24 * plane + c]))
                t[3][b][c] = (col[6 * plane + c] - col[12 * plane + c] + two * (col[18 * plane + c] - col[24 * plane + c])
                              - five * col[30 * plane + c])
                t[4][b][c] = col[c] + col[6 * plane + c] + col[12 * plane + c] + col[18 * plane + c] + col[24 * plane + c]
                t[5][b][c] = col[30 * plane + c]
        for p in range(6):  # (B V̂) Bᵀ, row p: the same combinations along the row, one loop per pixel
            pixel = d + p * row + start
            for c in range(width):
                pixel[c] += four * t[p][0][c]
            pixel = pixel + channels
            for c in range(width):
                pixel[c] += four * (t[p][2][c] - t[p][1][c] + t[p][5][c]) + two * (t[p][4][c] - t[p][3][c])
            pixel = pixel + channels
            for c in range(width):
                pixel[c] += -five * t[p][0][c] - four * (t[p][1][c] + t[p][2][c]) - (t[p][3][c] + t[p][4][c])
            pixel = pixel + channels
            for c in range(width):
                pixel[c] += t[p][1][c] - t[p][2][c] + two * (t[p][3][c] - t[p][4][c]) - five * t[p][5][c]
            pixel = pixel + channels
            for c in range(width):
                pixel[c] += t[p][0][c] + t[p][1][c] + t[p][2][c] + t[p][3][c] + t[p][4][c]
            pixel = pixel + channels
            for c in range(width):
                pixel[c] += t[p][5][c]
