"""The NCHW contract around compiled loops, shared by the Cython and Numba backends.

The compiled loops (``kernels/cython_kernels.pyx`` and the ``@njit`` functions
in ``numba_loops.py``) only take C-contiguous arrays in one of two layouts:
*planar* ``(N, C, H, W)`` or *channels-last* ``(N, H, W, C)``.  This module
checks the arguments, picks the layout that reads the input in memory order,
allocates the outputs and hands back arrays with the exact shapes and values
of ``numpy_backend`` (the contract is documented there).

Memory layout of what comes back (values are what the contract says; only
the strides differ from the reference):

* ``im2col`` returns ``cols (C·KH·KW, N·OH·OW)`` as the transpose of a
  C-contiguous ``(N·OH·OW, C·KH·KW)`` array (Fortran order), so that
  ``cols.T @ weight.T`` is a plain GEMM producing channels-last output.
* ``col2im`` returns an ``(N, C, H, W)`` view of channels-last memory.
* the max-pooling kernels keep the layout of their input: a channels-last
  input gives channels-last ``out``, ``indices`` and ``grad_x``.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import numpy as np

from minimtl import parallel
from minimtl.kernels.numpy_backend import output_size, winograd_matrices

FLOAT_TYPES = (np.float32, np.float64)

# Below this many values written, a loop runs on one thread.  Waking a second
# OpenMP thread costs tens of microseconds on an idle machine, and a whole time
# slice (milliseconds) when the other core is busy: one MTCNN R-Net call on a
# 24×24 patch took 0.12 s threaded and 0.5 ms single-threaded.  A single-threaded
# loop writes about a value per nanosecond, so 2¹⁸ values is well under 1 ms.
PARALLEL_MIN_VALUES = 1 << 18

# Size of one block product in ``shifted_matmul`` (rows × C × F multiply-adds).
# OpenBLAS (0.3.30/0.3.31, SkylakeX kernels) computes products of up to 2¹⁹
# multiply-adds with its small-matrix kernels, which skip packing; on BKNet's
# 48×48 and 24×24 layers those blocks ran 1.1–2.4× faster, single-threaded,
# than blocks twice as large (tile sweep in docs/performance.md).  The
# output block also stays in cache while every tap adds into it.
SHIFTED_BLOCK_MULTIPLY_ADDS = 2**19


def shifted_tile_rows(channels: int, features: int) -> int:
    """Rows per block for products of ``(rows × channels) @ (channels × features)``: at least 32."""
    return max(32, SHIFTED_BLOCK_MULTIPLY_ADDS // max(1, channels * features))


def thread_count(images: int, values: int) -> int:
    """Threads for a loop over ``images`` images that writes ``values`` values: 1 if small, else 0 (the default).

    A loop over a single image runs on one thread anyway (the batch is what is
    split), so it also gets 1, skipping the OpenMP team altogether.  So does a
    loop called by one of ``minimtl.parallel``'s workers: the other cores are
    busy with the other chunks.
    """
    return 1 if images < 2 or values < PARALLEL_MIN_VALUES or parallel.in_worker() else 0


def is_channels_last(x: np.ndarray) -> bool:
    """Whether ``x (N, C, H, W)`` is a view of C-contiguous ``(N, H, W, C)`` memory (and not also planar)."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous and not x.flags.c_contiguous


def _check_image(x: np.ndarray, name: str) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype.type not in FLOAT_TYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {x.shape}")


def _geometry(size_hw: tuple[int, int], kernel, stride, padding) -> tuple[int, ...]:
    """Validated ``(kh, kw, sh, sw, top, left, oh, ow)`` for an input of height and width ``size_hw``."""
    (kh, kw), (sh, sw), ((top, bottom), (left, right)) = kernel, stride, padding
    kh, kw, sh, sw, top, bottom, left, right = (int(v) for v in (kh, kw, sh, sw, top, bottom, left, right))
    if min(kh, kw, sh, sw) < 1 or min(top, bottom, left, right) < 0:
        raise ValueError(f"kernel and stride must be at least 1 and padding non-negative, got kernel {kernel}, "
                         f"stride {stride}, padding {padding}")
    oh = output_size(size_hw[0], kh, sh, top, bottom)
    ow = output_size(size_hw[1], kw, sw, left, right)
    if oh < 1 or ow < 1:
        raise ValueError(f"kernel {kernel} does not fit an input of size {size_hw} padded by {padding}")
    return kh, kw, sh, sw, top, left, oh, ow


def _check_shifted(rows, other, offsets, count: int):
    """``rows (R, C)`` and ``other`` (the weights or the gradient) in one float dtype, C-contiguous; ``offsets`` as intp.

    Checks that ``count`` rows shifted by every offset stay inside ``rows``.
    """
    if not isinstance(rows, np.ndarray) or rows.ndim != 2:
        raise ValueError(f"shifted_matmul: rows must be a 2-D array (R, C), got {getattr(rows, 'shape', type(rows))}")
    dtype = np.result_type(rows.dtype, other.dtype)
    if dtype.type not in FLOAT_TYPES:
        raise TypeError(f"shifted_matmul works in float32 or float64, got {rows.dtype} and {other.dtype}")
    offsets = np.ascontiguousarray(offsets, dtype=np.intp)
    if offsets.ndim != 1 or len(offsets) == 0:
        raise ValueError(f"shifted_matmul: offsets must be a non-empty list of ints, got shape {offsets.shape}")
    if count < 0 or offsets.min() < 0 or count + offsets.max() > rows.shape[0]:
        raise ValueError(f"shifted_matmul: {count} rows shifted by up to {offsets.max()} do not fit in {rows.shape[0]} rows "
                         f"(offsets must be non-negative)")
    return np.ascontiguousarray(rows, dtype=dtype), np.ascontiguousarray(other, dtype=dtype), offsets


def _check_tiled(x, tile: int, overlap: int, name: str) -> np.ndarray:
    """``x (m, tile·TH + overlap, tile·TW + overlap, C)`` with TH, TW ≥ 1, float, as a C-contiguous array."""
    _alpha(tile)
    if not isinstance(x, np.ndarray) or x.dtype.type not in FLOAT_TYPES:
        raise TypeError(f"{name} must be a float32 or float64 array, got {getattr(x, 'dtype', type(x))}")
    if (x.ndim != 4 or x.shape[1] < tile + overlap or x.shape[2] < tile + overlap or (x.shape[1] - overlap) % tile
            or (x.shape[2] - overlap) % tile):
        raise ValueError(f"{name} must have shape (m, {tile}·TH + {overlap}, {tile}·TW + {overlap}, C) with TH, TW ≥ 1, "
                         f"got {x.shape}")
    return np.ascontiguousarray(x)


def _check_tile_domain(values, tiles_hw, tile: int, name: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``values (α², m·TH·TW, K)`` as a C-contiguous float array, and ``(m, TH, TW)``."""
    alpha = _alpha(tile)
    if not isinstance(values, np.ndarray) or values.dtype.type not in FLOAT_TYPES:
        raise TypeError(f"{name}: values must be a float32 or float64 array, got {getattr(values, 'dtype', type(values))}")
    th, tw = (int(v) for v in tiles_hw)
    if values.ndim != 3 or values.shape[0] != alpha * alpha or th < 1 or tw < 1 or values.shape[1] % (th * tw):
        raise ValueError(f"{name}: values must have shape ({alpha * alpha}, m·TH·TW, K) for tile {tile} and tiles "
                         f"{tiles_hw}, got {values.shape}")
    return np.ascontiguousarray(values), (values.shape[1] // (th * tw), th, tw)


def _alpha(tile: int) -> int:
    """The input tile side ``α = tile + 2`` of F(tile × tile, 3×3), for the tile sizes the kernels know."""
    return winograd_matrices(tile)[0].shape[0]


def _check_rows(rows: Sequence[np.ndarray], vectors: Sequence[np.ndarray], name: str):
    """Pixel-row arrays ``(M, C)`` of one shape and per-channel vectors ``(C,)``, all C-contiguous in one float dtype."""
    shape = getattr(rows[0], "shape", None)
    for array in rows:
        if not isinstance(array, np.ndarray) or array.ndim != 2 or array.shape != shape:
            raise ValueError(f"{name}: pixel rows must be 2-D arrays (M, C) of one shape, got "
                             f"{[getattr(a, 'shape', type(a)) for a in rows]}")
    dtype = np.result_type(*[a.dtype for a in rows])
    if dtype.type not in FLOAT_TYPES:
        raise TypeError(f"{name} works in float32 or float64, got {dtype}")
    for vector in vectors:
        if np.shape(vector) != (shape[1],):
            raise ValueError(f"{name}: per-channel values must have shape ({shape[1]},), got {np.shape(vector)}")
    return ([np.ascontiguousarray(a, dtype=dtype) for a in rows], [np.ascontiguousarray(v, dtype=dtype) for v in vectors])


def _output(out: np.ndarray | None, shape: tuple[int, ...], dtype, name: str) -> np.ndarray:
    """``out`` if it is a C-contiguous ``dtype`` array of ``shape`` to write into; a new one if None."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"{name}: out must be a C-contiguous {np.dtype(dtype)} array of shape {shape}, got "
                         f"{getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    return out


# The functions every backend module offers (``numpy_backend.py`` documents each), and the flags that tell
# the layers which compiled algorithms are worth taking (the reference backend sets them False).
CONTRACT = ("im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward", "shifted_matmul",
            "shifted_matmul_grad_weights", "winograd_input_transform", "winograd_output_transform",
            "winograd_output_transform_grad", "winograd_input_transform_grad", "channel_sums",
            "batch_norm_relu_forward", "batch_norm_relu_sums", "batch_norm_relu_backward")
FAST_FLAGS = ("FAST_SHIFTED_MATMUL", "FAST_WINOGRAD", "FAST_BATCH_NORM_RELU", "FAST_CHANNEL_SUMS")


def contract_getattr(backend: "CompiledBackend", module_name: str):
    """A module-level ``__getattr__`` for a compiled backend module: its ``CONTRACT`` names and flags are ``backend``'s.

    So ``cython_backend.im2col`` is ``cython_backend.kernels.im2col``, and
    ``cython_backend.FAST_WINOGRAD`` is True, without copying names into the module.
    """

    def module_getattr(name: str):
        if name in CONTRACT or name in FAST_FLAGS:
            return getattr(backend, name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return module_getattr


class CompiledBackend(SimpleNamespace):
    """The contract functions, running the loops of ``loops`` (and every ``FAST_*`` flag True).

    ``loops`` has ``im2col_planar``, ``im2col_channels_last``,
    ``col2im_channels_last``, ``max_pool_forward_planar``,
    ``max_pool_forward_channels_last``, ``max_pool_backward_planar`` and
    ``max_pool_backward_channels_last`` with the signatures of
    ``kernels/cython_kernels.pyx``, each taking a keyword ``threads``
    (``thread_count(...)``: 1 for small work, 0 for the default), and the
    single-threaded ``shifted_matmul``, ``shifted_matmul_grad_weights`` (they
    call BLAS) and ``batch_norm_relu_*`` (``minimtl.parallel`` runs one call
    per core); the four ``winograd_*`` loops take channels-last images,
    tile-domain arrays ``(α², tiles, C)``, the tile size (2 or 4) and a keyword
    ``threads`` too.
    """

    FAST_SHIFTED_MATMUL = FAST_WINOGRAD = FAST_BATCH_NORM_RELU = FAST_CHANNEL_SUMS = True  # see FAST_FLAGS

    def __init__(self, loops) -> None:
        super().__init__(loops=loops)

    def im2col(self, x: np.ndarray, kernel, stride, padding) -> np.ndarray:
        """``x (N, C, H, W)`` → ``cols (C·KH·KW, N·OH·OW)`` (Fortran order)."""
        _check_image(x, "im2col input")
        n, c, h, w = x.shape
        kh, kw, sh, sw, top, left, oh, ow = _geometry((h, w), kernel, stride, padding)
        cols_t = np.empty((n * oh * ow, c * kh * kw), dtype=x.dtype)
        threads = thread_count(n, cols_t.size)
        if is_channels_last(x):
            self.loops.im2col_channels_last(x.transpose(0, 2, 3, 1), cols_t, kh, kw, sh, sw, top, left, oh, ow, threads=threads)
        else:
            self.loops.im2col_planar(np.ascontiguousarray(x), cols_t, kh, kw, sh, sw, top, left, oh, ow, threads=threads)
        return cols_t.T

    def col2im(self, cols: np.ndarray, x_shape, kernel, stride, padding) -> np.ndarray:
        """``cols (C·KH·KW, N·OH·OW)`` → ``(N, C, H, W)`` (channels-last memory), overlaps added."""
        if not isinstance(cols, np.ndarray) or cols.dtype.type not in FLOAT_TYPES:
            raise TypeError(f"col2im input must be a float32 or float64 array, got {getattr(cols, 'dtype', type(cols))}")
        n, c, h, w = (int(v) for v in x_shape)
        kh, kw, sh, sw, top, left, oh, ow = _geometry((h, w), kernel, stride, padding)
        if cols.shape != (c * kh * kw, n * oh * ow):
            raise ValueError(f"col2im input has shape {cols.shape}, expected {(c * kh * kw, n * oh * ow)} for x_shape "
                             f"{tuple(x_shape)} and kernel {kernel}")
        out = np.zeros((n, h, w, c), dtype=cols.dtype)
        self.loops.col2im_channels_last(np.ascontiguousarray(cols.T), out, kh, kw, sh, sw, top, left, oh, ow,
                                        threads=thread_count(n, cols.size))
        return out.transpose(0, 3, 1, 2)

    def shifted_matmul(self, rows: np.ndarray, weights: np.ndarray, offsets, count: int) -> np.ndarray:
        """``out (count, F)`` with ``out[p] = Σ_k rows[p + offsets[k]] @ weights[k]``."""
        if not isinstance(weights, np.ndarray) or weights.ndim != 3 or weights.shape[1] != getattr(rows, "shape", (0, -1))[-1]:
            raise ValueError("shifted_matmul: weights must be (K, C, F) with C the columns of rows "
                             f"{getattr(rows, 'shape', None)}, got {getattr(weights, 'shape', type(weights))}")
        rows, weights, offsets = _check_shifted(rows, weights, offsets, count)
        if len(offsets) != len(weights):
            raise ValueError(f"shifted_matmul: need one offset per weight matrix, got {len(offsets)} for {len(weights)}")
        out = np.empty((count, weights.shape[2]), dtype=rows.dtype)
        self.loops.shifted_matmul(rows, weights, offsets, out, shifted_tile_rows(rows.shape[1], weights.shape[2]))
        return out

    def shifted_matmul_grad_weights(self, rows: np.ndarray, grad: np.ndarray, offsets) -> np.ndarray:
        """``(K, C, F)``: ``result[k] = rows[offsets[k] : offsets[k] + P]ᵀ @ grad`` for ``grad (P, F)``."""
        if not isinstance(grad, np.ndarray) or grad.ndim != 2:
            raise ValueError("shifted_matmul_grad_weights: grad must be a 2-D array (P, F), "
                             f"got {getattr(grad, 'shape', type(grad))}")
        rows, grad, offsets = _check_shifted(rows, grad, offsets, grad.shape[0])
        result = np.zeros((len(offsets), rows.shape[1], grad.shape[1]), dtype=rows.dtype)
        self.loops.shifted_matmul_grad_weights(rows, grad, offsets, result, shifted_tile_rows(rows.shape[1], grad.shape[1]))
        return result

    def winograd_input_transform(self, x: np.ndarray, tile: int = 2) -> np.ndarray:
        """``x (m, tile·TH + 2, tile·TW + 2, C)`` (padded, channels last) → ``V (α², m·TH·TW, C)``."""
        x = _check_tiled(x, tile, 2, "winograd_input_transform input")
        m, height, width, c = x.shape
        alpha = _alpha(tile)
        tiles = np.empty((alpha * alpha, m * ((height - 2) // tile) * ((width - 2) // tile), c), dtype=x.dtype)
        self.loops.winograd_input_transform(x, tiles, tile, threads=thread_count(m, tiles.size))
        return tiles

    def winograd_output_transform(self, products: np.ndarray, tiles_hw, out: np.ndarray | None = None,
                                  tile: int = 2) -> np.ndarray:
        """``products (α², m·TH·TW, F)`` → ``y (m, tile·TH, tile·TW, F)``, written into ``out`` if given."""
        products, (m, th, tw) = _check_tile_domain(products, tiles_hw, tile, "winograd_output_transform")
        out = _output(out, (m, tile * th, tile * tw, products.shape[2]), products.dtype, "winograd_output_transform")
        self.loops.winograd_output_transform(products, out, tile, threads=thread_count(m, out.size))
        return out

    def winograd_output_transform_grad(self, grad: np.ndarray, tile: int = 2) -> np.ndarray:
        """``grad (m, tile·TH, tile·TW, F)`` → ``(α², m·TH·TW, F)``, the adjoint of ``winograd_output_transform``."""
        grad = _check_tiled(grad, tile, 0, "winograd_output_transform_grad input")
        m, height, width, f = grad.shape
        alpha = _alpha(tile)
        grad_products = np.empty((alpha * alpha, m * (height // tile) * (width // tile), f), dtype=grad.dtype)
        self.loops.winograd_output_transform_grad(grad, grad_products, tile, threads=thread_count(m, grad_products.size))
        return grad_products

    def winograd_input_transform_grad(self, grad_tiles: np.ndarray, tiles_hw, tile: int = 2) -> np.ndarray:
        """``grad_tiles (α², m·TH·TW, C)`` → ``(m, tile·TH + 2, tile·TW + 2, C)``, the adjoint of ``winograd_input_transform``."""
        grad_tiles, (m, th, tw) = _check_tile_domain(grad_tiles, tiles_hw, tile, "winograd_input_transform_grad")
        grad_x = np.zeros((m, tile * th + 2, tile * tw + 2, grad_tiles.shape[2]), dtype=grad_tiles.dtype)
        self.loops.winograd_input_transform_grad(grad_tiles, grad_x, tile, threads=thread_count(m, grad_tiles.size))
        return grad_x

    def channel_sums(self, x_rows: np.ndarray, shift) -> tuple[np.ndarray, np.ndarray]:
        """``(Σ (x − shift), Σ (x − shift)²)`` per channel of pixel rows ``x_rows (M, C)``, in float64."""
        (x_rows,), (shift,) = _check_rows([x_rows], [shift], "channel_sums")
        sums, squares = np.zeros(x_rows.shape[1]), np.zeros(x_rows.shape[1])
        self.loops.channel_sums(x_rows, shift, sums, squares)
        return sums, squares

    def batch_norm_relu_forward(self, x_rows: np.ndarray, mean, scale, shift, out: np.ndarray | None = None) -> np.ndarray:
        """``y = max(0, (x − mean) · scale + shift)`` for ``x_rows (M, C)``, written into ``out`` if given."""
        (x_rows,), (mean, scale, shift) = _check_rows([x_rows], [mean, scale, shift], "batch_norm_relu_forward")
        y = _output(out, x_rows.shape, x_rows.dtype, "batch_norm_relu_forward")
        self.loops.batch_norm_relu_forward(x_rows, mean, scale, shift, y)
        return y

    def batch_norm_relu_sums(self, grad_rows, x_rows, y_rows, mean, inv_std) -> tuple[np.ndarray, np.ndarray]:
        """``(Σ g', Σ g' · x̂)`` per channel in float64, ``g' = g · [y > 0]``, ``x̂ = (x − mean) · inv_std``."""
        (grad_rows, x_rows, y_rows), (mean, inv_std) = _check_rows([grad_rows, x_rows, y_rows], [mean, inv_std],
                                                                 "batch_norm_relu_sums")
        sum_g, sum_gx = np.zeros(x_rows.shape[1]), np.zeros(x_rows.shape[1])
        self.loops.batch_norm_relu_sums(grad_rows, x_rows, y_rows, mean, inv_std, sum_g, sum_gx)
        return sum_g, sum_gx

    def batch_norm_relu_backward(self, grad_rows, x_rows, y_rows, mean, inv_std, mean_g, mean_gx, scale,
                                 out: np.ndarray | None = None) -> np.ndarray:
        """``grad_x = scale · (g' − mean_g − x̂ · mean_gx)`` for pixel rows ``(M, C)``, written into ``out`` if given."""
        (grad_rows, x_rows, y_rows), vectors = _check_rows([grad_rows, x_rows, y_rows],
                                                           [mean, inv_std, mean_g, mean_gx, scale], "batch_norm_relu_backward")
        grad_x = _output(out, x_rows.shape, x_rows.dtype, "batch_norm_relu_backward")
        self.loops.batch_norm_relu_backward(grad_rows, x_rows, y_rows, *vectors, grad_x)
        return grad_x

    def max_pool2d_forward(self, x: np.ndarray, kernel, stride, padding) -> tuple[np.ndarray, np.ndarray]:
        """``x (N, C, H, W)`` → ``(out, indices)``, both ``(N, C, OH, OW)`` in the layout of ``x``."""
        _check_image(x, "max_pool2d input")
        n, c, h, w = x.shape
        kh, kw, sh, sw, top, left, oh, ow = _geometry((h, w), kernel, stride, padding)
        if is_channels_last(x):
            out = np.empty((n, oh, ow, c), dtype=x.dtype)
            indices = np.empty((n, oh, ow, c), dtype=np.int64)
            self.loops.max_pool_forward_channels_last(x.transpose(0, 2, 3, 1), out, indices, kh, kw, sh, sw, top, left,
                                                      threads=thread_count(n, x.size))
            return out.transpose(0, 3, 1, 2), indices.transpose(0, 3, 1, 2)
        out = np.empty((n, c, oh, ow), dtype=x.dtype)
        indices = np.empty((n, c, oh, ow), dtype=np.int64)
        self.loops.max_pool_forward_planar(np.ascontiguousarray(x), out, indices, kh, kw, sh, sw, top, left,
                                           threads=thread_count(n, x.size))
        return out, indices

    def max_pool2d_backward(self, grad_out: np.ndarray, indices: np.ndarray, x_shape) -> np.ndarray:
        """Scatter ``grad_out (N, C, OH, OW)`` onto the winners ``indices`` → ``grad_x (N, C, H, W)``."""
        _check_image(grad_out, "max_pool2d gradient")
        n, c, h, w = (int(v) for v in x_shape)
        if indices.shape != grad_out.shape or grad_out.shape[:2] != (n, c):
            raise ValueError(f"max_pool2d_backward: gradient {grad_out.shape}, indices {indices.shape} and input shape "
                             f"{tuple(x_shape)} do not fit together")
        if indices.dtype != np.int64:
            raise TypeError(f"max_pool2d indices must be int64, got {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= h * w):
            raise ValueError(f"max_pool2d indices must lie in [0, {h * w}) for planes of {h}×{w}")
        if is_channels_last(indices):
            grad_x = np.zeros((n, h, w, c), dtype=grad_out.dtype)
            self.loops.max_pool_backward_channels_last(
                np.ascontiguousarray(grad_out.transpose(0, 2, 3, 1)), indices.transpose(0, 2, 3, 1), grad_x,
                threads=thread_count(n, grad_x.size))
            return grad_x.transpose(0, 3, 1, 2)
        grad_x = np.zeros((n, c, h, w), dtype=grad_out.dtype)
        self.loops.max_pool_backward_planar(np.ascontiguousarray(grad_out), np.ascontiguousarray(indices), grad_x,
                                            threads=thread_count(n, grad_x.size))
        return grad_x
