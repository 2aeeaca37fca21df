"""Layers as functions: convolution, pooling, batch-norm, dropout, linear, PReLU, softmax.

Each is a ``Function`` with forward and backward side by side (or, where
that is simpler and just as fast, a composition of primitives from
``minimtl/ops.py``).  The modules in ``minimtl/nn.py`` hold the parameters
and call these.  Image tensors are NCHW: ``(batch, channels, height, width)``.
Max-pooling lives in ``minimtl/pooling.py`` and batch-norm in
``minimtl/batch_norm.py``; this module re-exports them (``F.max_pool2d``,
``F.batch_norm``, ``F.fold_batch_norm``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from minimtl import kernels, ops, parallel
from minimtl.autograd import Context, Function, Tensor, as_tensor
from minimtl.batch_norm import (BatchNormAffineFunction, BatchNormFunction, BatchNormReLUFunction,  # noqa: F401
                                batch_norm, batch_norm_affine, channel_mean_var, fold_batch_norm)
from minimtl.checks import IntPair, _pair, check_float, check_image_batch  # noqa: F401
from minimtl.pooling import MaxPool2dFunction, max_pool2d, max_pool2d_values, pool_padding  # noqa: F401


# ------------------------------------------------------------------ linear
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Fully connected layer ``y = x @ weightᵀ + bias``.

    Shapes: ``x (N, in)``, ``weight (out, in)``, ``bias (out,)`` → ``y (N, out)``.
    Composed from ``matmul`` and ``add``, whose backwards give
    ``grad_x = grad @ weight``, ``grad_weight = gradᵀ @ x``, ``grad_bias = Σ_N grad``.
    """
    check_float(x, "linear input")
    if x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear expects input (N, {weight.shape[1]}), got {tuple(x.shape)}")
    y = ops.matmul(x, ops.transpose(weight))
    return y + bias if bias is not None else y


# ------------------------------------------------------------- convolution
def conv_padding(padding: IntPair | str, kernel: tuple[int, int], stride: tuple[int, int], size: tuple[int, int]):
    """Explicit ((top, bottom), (left, right)) padding for ``padding`` = int, pair or ``"same"``.

    ``"same"`` follows TensorFlow: output size ``ceil(size / stride)``, the
    odd pixel of padding going at the end (bottom/right).
    """
    if isinstance(padding, str):
        if padding != "same":
            raise ValueError(f"padding must be an int, a pair or 'same', got {padding!r}")
        pads = []
        for n, k, s in zip(size, kernel, stride):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = _pair(padding, "padding")
    return ((ph, ph), (pw, pw))


# Bytes of column matrix one chunk of a convolution may unfold at a time.  A
# whole batch of columns is up to 340 MB (32 channels, 3×3, 48×48, batch 128):
# writing it page-faults fresh memory and the GEMMs then stream it from RAM.
# Chunks of about this size stay in the last-level cache between im2col and
# GEMM, and (below glibc's 32 MB mmap threshold) reuse the same heap memory
# chunk after chunk.  Measured best on this network's layers: 10–40 MB.
CONV_CHUNK_BYTES = 16 * 2**20


def chunk_bounds(images: int, chunk: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk: ``parallel.chunk_count`` chunks of at most ``chunk`` images whose sizes
    differ by one at most (so the workers finish together)."""
    return parallel.even_bounds(images, min(parallel.chunk_count(images, chunk), images))


def conv_chunk_size(x_shape: tuple[int, ...], kernel: tuple[int, int], out_hw: tuple[int, int], itemsize: int,
                    chunk_bytes: int | None = None) -> int:
    """How many images a convolution unfolds at once: the most whose columns fit in ``chunk_bytes``.

    One image's columns are ``C·KH·KW × OH·OW`` values of ``itemsize`` bytes.
    At least 1 and at most the batch ``N = x_shape[0]``.  ``chunk_bytes``
    defaults to ``CONV_CHUNK_BYTES`` (read at call time, so tests can change it).
    """
    budget = CONV_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    per_image = x_shape[1] * kernel[0] * kernel[1] * out_hw[0] * out_hw[1] * itemsize
    return max(1, min(int(x_shape[0]), budget // max(per_image, 1)))


# How Conv2dFunction computes a layer: "auto" (see conv_method), or "im2col",
# "shifted", "winograd" (F(2×2, 3×3)) or "winograd4" (F(4×4, 3×3)) everywhere it
# can (tests and benchmarks compare them).
CONV_METHOD = "auto"
CONV_METHODS = ("auto", "im2col", "shifted", "winograd", "winograd4")

# "auto" takes shifted products when the layer has at least this many input
# channels (each product's inner dimension is C: with fewer, BLAS runs far below
# its peak) and computes at most this much more than its output needs (the whole
# padded grid).  BKNet at batch 128 (benchmarks/bench_conv_methods.py, forward +
# backward): shifted products ×2.1 at 48×48 (waste 1.09) and ×1.4–1.5 at 24×24
# (1.17), no faster at 12×12 (1.36) and ×0.5 at 6×6 (1.78), where im2col's
# columns are small anyway.
SHIFTED_MIN_CHANNELS = 16
SHIFTED_MAX_WASTE = 1.25

# "auto" takes Winograd tiles for 3×3 layers with at least this many input
# channels (each of the α² products per tile position has C as inner dimension).
WINOGRAD_MIN_CHANNELS = 16
# ... and at least this many 2×2 tiles in the batch: transforming the filters
# costs about as much as transforming a few tiles per filter, and has to pay off.
WINOGRAD_MIN_TILES = 64
# ... with 4×4 output tiles (F(4×4, 3×3)) where they need fewer multiplications
# than 2×2 ones, 2×2 on a tie (winograd_tile).

# Bytes of Winograd-domain values (α² per tile and channel, the larger of C and
# F) one chunk of a Winograd convolution holds.
WINOGRAD_CHUNK_BYTES = 2 * 2**20

# Bytes of padded grid (rows of max(C, F) values) one chunk of a shifted-product
# convolution holds: a few images, so a chunk's rows stay in the second-level cache.
SHIFTED_CHUNK_BYTES = 2**20


class PaddedGrid:
    """Images as the rows of their zero-padded pixel grid: a stride-1 convolution as shifted matrix products.

    With padding ``((top, bottom), (left, right))`` an ``H × W`` image becomes
    ``Hp × Wp = (H + top + bottom) × (W + left + right)``, and pixel ``(i, j)``
    of padded image ``n`` is row ``(n·Hp + i)·Wp + j`` of a ``(rows, C)``
    matrix (channels-last memory, one row per pixel).  Output pixel
    ``(r, q)`` needs the input rows at ``(r + a, q + b)`` for every kernel tap
    ``(a, b)``: its own row number plus ``offsets[a·KW + b] = a·Wp + b``.  So
    with ``W_ab = weight[:, :, a, b]ᵀ (C, F)`` the whole convolution is
    ``Y[p] = Σ_ab rows[p + offsets[ab]] @ W_ab`` (``kernels.shifted_matmul``),
    computed for every grid row ``p``; the rows with ``r < OH`` and ``q < OW``
    are the output and the others are thrown away.  No column matrix is made:
    each input value is read by KH·KW products straight from the grid.
    """

    def __init__(self, size_hw: tuple[int, int], kernel: tuple[int, int], padding) -> None:
        (h, w), (kh, kw), ((top, bottom), (left, right)) = size_hw, kernel, padding
        self.size, self.top, self.left = (h, w), top, left
        self.hp, self.wp = h + top + bottom, w + left + right
        self.out_hw = (self.hp - kh + 1, self.wp - kw + 1)
        self.offsets = np.array([a * self.wp + b for a in range(kh) for b in range(kw)], dtype=np.intp)
        self.reach = int(self.offsets[-1])  # rows past the grid that the last taps read

    def count(self, images: int) -> int:
        """Rows of the grid of ``images`` images: ``images·Hp·Wp``."""
        return images * self.hp * self.wp

    def rows(self, x: np.ndarray, dtype) -> np.ndarray:
        """``x (m, C, H, W)`` → ``(m·Hp·Wp + reach, C)``: the padded images, then ``reach`` zero rows."""
        m, c, h, w = x.shape
        rows = np.zeros((self.count(m) + self.reach, c), dtype=dtype)
        self.pixels(rows, m)[:, self.top : self.top + h, self.left : self.left + w] = x.transpose(0, 2, 3, 1)
        return rows

    def pixels(self, rows: np.ndarray, images: int) -> np.ndarray:
        """The first ``images·Hp·Wp`` rows of ``rows (≥ m·Hp·Wp, K)`` as a ``(m, Hp, Wp, K)`` view."""
        return rows[: self.count(images)].reshape(images, self.hp, self.wp, rows.shape[1])

    def outputs(self, products: np.ndarray, images: int) -> np.ndarray:
        """The output pixels among ``products (m·Hp·Wp, F)``: an ``(m, OH, OW, F)`` view."""
        return self.pixels(products, images)[:, : self.out_hw[0], : self.out_hw[1]]

    def inputs(self, products: np.ndarray, images: int) -> np.ndarray:
        """The input pixels (not the padding) among ``products (m·Hp·Wp, C)``: an ``(m, H, W, C)`` view."""
        (h, w), top, left = self.size, self.top, self.left
        return self.pixels(products, images)[:, top : top + h, left : left + w]

    def output_gradient_rows(self, grad: np.ndarray, dtype) -> np.ndarray:
        """``grad (m, OH, OW, F)`` → ``(reach + m·Hp·Wp, F)``: ``reach`` zero rows, then the gradient on the grid, zero elsewhere.

        Backward, each input row ``q`` collects ``G[q − offsets[ab]] @ W_abᵀ``
        from every tap: a shifted product again, with offsets ``reach − offsets``
        into this matrix (the zero rows in front stand for ``q − offsets < 0``).
        """
        m, _, _, f = grad.shape
        rows = np.zeros((self.reach + self.count(m), f), dtype=dtype)
        self.outputs(rows[self.reach :], m)[...] = grad
        return rows


class WinogradTiles:
    """A 3×3, stride-1 convolution as Winograd's F(m×m, 3×3): m×m output pixels from each α×α input tile, α = m + 2.

    ``tile`` is m, 2 or 4.  The output ``OH × OW`` is covered by
    ``TH × TW = ⌈OH/m⌉ × ⌈OW/m⌉`` tiles of m×m pixels; tile ``(i, j)`` reads the
    α×α pixels of the zero-padded input from ``(m·i, m·j)``, so neighbouring
    tiles overlap by two.  The padded input is a ``PaddedGrid`` whose bottom
    and right padding get more zero rows or columns when m does not divide
    ``OH`` or ``OW`` (the last tiles' extra outputs are then computed and
    dropped).  With ``V = Bᵀ d B`` of every tile
    (``kernels.winograd_input_transform``) and ``U = G g Gᵀ`` of every filter
    (``winograd_filter_transform``) the output tile is ``Aᵀ M A`` with, for
    each of the α² positions ξ of a tile, one matrix product over channels
    ``M[ξ] = V[ξ] @ U[ξ]`` (``kernels.winograd_output_transform``): α²
    products of ``(tiles, C) @ (C, F)``, which is 16/36 of the multiplications
    of a direct convolution for m = 2 and 36/144 for m = 4.
    ``numpy_backend.winograd_matrices`` writes out ``Bᵀ``, ``G`` and ``Aᵀ``.
    """

    def __init__(self, size_hw: tuple[int, int], padding, tile: int = 2) -> None:
        (h, w), ((top, bottom), (left, right)) = size_hw, padding
        self.tile = tile
        self.alpha = kernels.numpy_backend.winograd_matrices(tile)[0].shape[0]
        oh, ow = h + top + bottom - 2, w + left + right - 2
        self.out_hw = (oh, ow)
        self.tiles_hw = (-(-oh // tile), -(-ow // tile))
        extra_h, extra_w = tile * self.tiles_hw[0] - oh, tile * self.tiles_hw[1] - ow
        self.grid = PaddedGrid((h, w), (3, 3), ((top, bottom + extra_h), (left, right + extra_w)))
        self.exact = extra_h == 0 and extra_w == 0  # the tiles' outputs are exactly the layer's

    def count(self, images: int) -> int:
        """Tiles of ``images`` images: ``images·TH·TW``."""
        return images * self.tiles_hw[0] * self.tiles_hw[1]

    def multiplications(self, images: int) -> int:
        """Products per channel pair for ``images`` images: ``α²`` per tile."""
        return self.alpha * self.alpha * self.count(images)

    def padded(self, x: np.ndarray, dtype) -> np.ndarray:
        """``x (m, C, H, W)`` → the zero-padded ``(m, m·TH + 2, m·TW + 2, C)``, channels last."""
        return self.grid.pixels(self.grid.rows(x, dtype), x.shape[0])

    def inputs(self, padded: np.ndarray) -> np.ndarray:
        """The input pixels (not the padding) of ``padded (m, m·TH + 2, m·TW + 2, C)``: an ``(m, H, W, C)`` view."""
        (h, w), top, left = self.grid.size, self.grid.top, self.grid.left
        return padded[:, top : top + h, left : left + w]


def winograd_tile(size_hw: tuple[int, int], padding) -> int:
    """The output tile side (2 or 4) of the Winograd convolution with the fewest multiplications; 2 on a tie.

    4×4 tiles need 36 products per 16 output pixels, 2×2 tiles 16 per 4, but
    tiles that stick out of the output compute pixels that are then dropped:
    BKNet's 48×48, 24×24 and 12×12 layers take 4×4 tiles, its 6×6 ones 2×2
    (four 4×4 tiles cover 8×8: 4 · 36 products, a tie with nine 2×2 tiles'
    9 · 16, and the smaller transforms are faster).
    """
    small, large = WinogradTiles(size_hw, padding, 2), WinogradTiles(size_hw, padding, 4)
    return 4 if large.multiplications(1) < small.multiplications(1) else 2


def winograd_filter_transform(weight: np.ndarray, dtype, tile: int = 2) -> np.ndarray:
    """``U = G g Gᵀ`` of every filter: ``weight (F, C, 3, 3)`` → ``U (α², C, F)``, ``U[α·a + b, c, f] = (G g_fc Gᵀ)[a, b]``.

    ``G`` is F(tile × tile, 3×3)'s ``(α, 3)``.  Flattened, ``G g Gᵀ`` is one
    matrix ``G ⊗ G (α², 9)`` (Kronecker product) times the nine taps of ``g``:
    one product for all the filters at once.  ``U`` comes back as the
    transpose of C-contiguous ``(α², F, C)`` memory: the taps are then read in
    their own order, the backward's ``U[ξ]ᵀ`` is that memory as it is, and
    BLAS takes the forward's transposed operand without a copy.
    """
    f, c = weight.shape[:2]
    g = kernels.numpy_backend.winograd_matrices(tile)[1]
    taps = np.ascontiguousarray(weight, dtype=dtype).reshape(f * c, 9)
    with parallel.single_threaded_blas():
        return (np.kron(g, g).astype(dtype) @ taps.T).reshape(len(g) ** 2, f, c).transpose(0, 2, 1)


def winograd_filter_transform_grad(grad_u: np.ndarray, tile: int = 2) -> np.ndarray:
    """The adjoint of ``winograd_filter_transform``: ``grad_u (α², C, F)`` → ``Gᵀ Ĝ G`` per filter, ``(F, C, 3, 3)``.

    No copy when ``grad_u`` is, like ``U``, the transpose of C-contiguous ``(α², F, C)`` memory.
    """
    positions, c, f = grad_u.shape
    g = kernels.numpy_backend.winograd_matrices(tile)[1]
    if positions != len(g) ** 2:
        raise ValueError(f"winograd_filter_transform_grad: tile {tile} has {len(g) ** 2} positions, got {grad_u.shape}")
    with parallel.single_threaded_blas():
        taps = grad_u.transpose(0, 2, 1).reshape(positions, f * c).T @ np.kron(g, g).astype(grad_u.dtype)  # (F·C, 9)
    return taps.reshape(f, c, 3, 3)


def conv_method(channels: int, kernel: tuple[int, int], stride: tuple[int, int], padding, size_hw: tuple[int, int],
                images: int | None = None) -> str:
    """``"winograd4"``, ``"winograd"``, ``"shifted"`` or ``"im2col"``: how ``Conv2dFunction`` computes a layer.

    ``CONV_METHOD`` chooses, and for "auto" the rules above it.  Shifted
    products (``PaddedGrid``) need stride 1, Winograd tiles (``WinogradTiles``:
    "winograd" with 2×2 output tiles, "winograd4" with 4×4) a 3×3 kernel with
    stride 1; a layer that cannot take the method asked for takes im2col.
    "auto" also wants a backend whose kernels for the method are compiled
    (``kernels.fast_winograd()``, ``kernels.fast_shifted_matmul()``).
    """
    if CONV_METHOD not in CONV_METHODS:
        raise ValueError(f"CONV_METHOD must be one of {CONV_METHODS}, got {CONV_METHOD!r}")
    if stride != (1, 1) or CONV_METHOD == "im2col":
        return "im2col"
    winograd_fits = tuple(kernel) == (3, 3)
    if CONV_METHOD in ("winograd", "winograd4"):
        return CONV_METHOD if winograd_fits else "im2col"
    if CONV_METHOD == "shifted":
        return "shifted"
    if winograd_fits and kernels.fast_winograd() and channels >= WINOGRAD_MIN_CHANNELS:
        tiles = WinogradTiles(size_hw, padding)
        if images is None or tiles.count(images) >= WINOGRAD_MIN_TILES:
            return "winograd4" if winograd_tile(size_hw, padding) == 4 else "winograd"
    grid = PaddedGrid(size_hw, kernel, padding)
    waste = grid.hp * grid.wp / (grid.out_hw[0] * grid.out_hw[1])
    if kernels.fast_shifted_matmul() and channels >= SHIFTED_MIN_CHANNELS and waste <= SHIFTED_MAX_WASTE:
        return "shifted"
    return "im2col"


class Conv2dFunction(Function):
    """2-D cross-correlation, a chunk of images at a time, by im2col + one matrix product, shifted products or Winograd tiles.

    Shapes: ``x (N, C, H, W)``, ``weight (F, C, KH, KW)``, ``bias (F,)`` →
    ``y (N, F, OH, OW)`` with ``OH = (H + top + bottom − KH) // SH + 1``.

    im2col: ``cols = im2col(x)`` is ``(C·KH·KW, N·OH·OW)``; with
    ``W₂ = weight.reshape(F, C·KH·KW)`` the output is ``y = W₂ @ cols``,
    computed as its transpose ``Y = colsᵀ @ W₂ᵀ`` of shape ``(N·OH·OW, F)``:
    one row per output pixel, the F channels side by side.  That is already
    ``(N, OH, OW, F)`` memory, so ``y`` is returned as an ``(N, F, OH, OW)``
    view of it with no copy ("channels-last" strides).  Element-wise layers
    keep that layout and the next ``im2col`` reads it in memory order.
    Backward, with ``G`` the upstream gradient as ``(N·OH·OW, F)``:
    ``grad_W₂ᵀ = cols @ G``, ``grad_cols = (G @ W₂)ᵀ``,
    ``grad_x = col2im(grad_cols)``, ``grad_bias = Σ G`` over pixels.

    Shifted products (stride 1, where ``conv_method`` picks them): the same
    ``Y`` as a sum of KH·KW products of shifted row blocks of the padded
    input, without a column matrix (``PaddedGrid`` explains the rows and
    offsets).  Backward: ``grad_x`` is the same kind of sum with the
    transposed taps, and ``grad_W_ab = rows[p + offsets[ab]]ᵀ @ G``
    (``kernels.shifted_matmul_grad_weights``).

    Winograd tiles (3×3, stride 1, where ``conv_method`` picks them; see
    ``WinogradTiles``): ``V = Bᵀ d B`` of each chunk's tiles, α² products
    ``M[ξ] = V[ξ] @ U[ξ]`` with the transformed filters ``U``, and ``Aᵀ M A``
    written into the chunk's rows of ``Y``.  Backward: ``grad M`` by the
    adjoint output transform, ``grad V[ξ] = grad M[ξ] @ U[ξ]ᵀ`` back through
    the adjoint input transform to ``grad_x``, and ``grad U[ξ] = V[ξ]ᵀ @ grad M[ξ]``
    (``V`` recomputed from ``x``), which ``winograd_filter_transform_grad``
    turns into the weight gradient once the chunks' shares are added.

    ``relu=True`` (``conv2d(..., relu=True)``) clips each chunk of ``Y`` at 0
    while it is still in cache; the backward then keeps ``G`` only where the
    saved output is positive.

    Chunks: images are independent, so the batch is cut into chunks of a few
    images and each chunk does the same im2col → GEMM (→ col2im), or the
    same shifted products or Winograd tiles, on its rows of ``Y`` and ``G``; the weight
    gradient is the sum of the chunks' shares.  The columns are never kept: the forward saves
    ``x`` and the backward unfolds each chunk again (one more im2col, but the
    columns stay cache-sized and a training step holds no column matrix
    between its forward and backward pass).  The chunks run on every core at
    once, each single-threaded (``minimtl.parallel.map_chunks``); their shares
    of the weight gradient are added in chunk order.  ``grad_W₂ᵀ = cols @ G`` rather
    than ``Gᵀ @ colsᵀ``: the same product, but OpenBLAS ran the latter, whose
    long inner dimension comes transposed on both sides, up to 12× slower.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding,
                relu: bool = False) -> np.ndarray:
        n, c, h, w = x.shape
        f, _, kh, kw = weight.shape
        oh = kernels.numpy_backend.output_size(h, kh, stride[0], *padding[0])
        ow = kernels.numpy_backend.output_size(w, kw, stride[1], *padding[1])
        dtype = np.result_type(x.dtype, weight.dtype)
        out = np.empty((n * oh * ow, f), dtype=dtype)  # Y, one row per output pixel
        out_images = out.reshape(n, oh, ow, f)
        method = conv_method(c, (kh, kw), stride, padding, (h, w), n)

        def add_bias_and_relu(block: np.ndarray) -> None:
            """In place on a chunk's output while it is in cache: ``+ bias``, then ``relu`` if asked."""
            if bias is not None:
                block += bias
            if relu:
                np.maximum(block, 0, out=block)

        if method == "shifted":
            layout = grid = PaddedGrid((h, w), (kh, kw), padding)
            # W_ab = weight[:, :, a, b]ᵀ (C, F), one per tap, in the order of grid.offsets
            taps = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(kh * kw, c, f), dtype=dtype)
            per_image = grid.hp * grid.wp * max(c, f) * dtype.itemsize
            bounds = chunk_bounds(n, max(1, SHIFTED_CHUNK_BYTES // per_image))

            def forward_chunk(start_stop: tuple[int, int]) -> None:
                start, stop = start_stop
                rows = grid.rows(x[start:stop], dtype)
                products = kernels.shifted_matmul(rows, taps, grid.offsets, grid.count(stop - start))
                out_images[start:stop] = grid.outputs(products, stop - start)
                add_bias_and_relu(out_images[start:stop])
        elif method in ("winograd", "winograd4"):
            layout = tiling = WinogradTiles((h, w), padding, 4 if method == "winograd4" else 2)
            u = winograd_filter_transform(weight, dtype, tiling.tile)  # (α², C, F)
            per_image = tiling.multiplications(1) * max(c, f) * dtype.itemsize
            bounds = chunk_bounds(n, max(1, WINOGRAD_CHUNK_BYTES // per_image))

            def forward_chunk(start_stop: tuple[int, int]) -> None:
                start, stop = start_stop
                tiles = kernels.winograd_input_transform(tiling.padded(x[start:stop], dtype), tiling.tile)  # V (α², tiles, C)
                products = np.matmul(tiles, u)  # M[ξ] = V[ξ] @ U[ξ] (α², tiles, F)
                if tiling.exact:  # the output tiles are exactly these images' rows of Y: written in place
                    kernels.winograd_output_transform(products, tiling.tiles_hw, out=out_images[start:stop], tile=tiling.tile)
                else:
                    y = kernels.winograd_output_transform(products, tiling.tiles_hw, tile=tiling.tile)
                    out_images[start:stop] = y[:, :oh, :ow]
                add_bias_and_relu(out_images[start:stop])
        else:
            layout = None
            # W₂ᵀ (C·KH·KW, F), copied C-contiguous: with the transposed view OpenBLAS took 6 ms instead of
            # 0.03 ms for MTCNN R-Net's (81 × 252) @ (252 × 48) (it runs that layout threaded).
            weight_t = np.ascontiguousarray(weight.reshape(f, -1).T)
            bounds = chunk_bounds(n, conv_chunk_size(x.shape, (kh, kw), (oh, ow), dtype.itemsize))
            pixels = oh * ow

            def forward_chunk(start_stop: tuple[int, int]) -> None:
                start, stop = start_stop
                cols = kernels.im2col(x[start:stop], (kh, kw), stride, padding)  # (C·KH·KW, chunk·OH·OW)
                rows = out[start * pixels : stop * pixels]
                np.matmul(cols.T, weight_t, out=rows)
                add_bias_and_relu(rows)

        parallel.map_chunks(forward_chunk, bounds)
        ctx.save_for_backward(x, weight)
        # layout: the PaddedGrid (shifted products), the WinogradTiles, or None (im2col)
        ctx.geometry = (method, (kh, kw), stride, padding, (oh, ow), bounds, layout)
        ctx.relu_output = out if relu else None  # where it is positive the ReLU let the gradient through
        return out_images.transpose(0, 3, 1, 2)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        x, weight = ctx.saved
        method, kernel, stride, padding, (oh, ow), bounds, layout = ctx.geometry
        n, c, h, w = x.shape
        f = weight.shape[0]
        pixels = oh * ow
        g = grad.transpose(0, 2, 3, 1).reshape(-1, f)  # G (N·OH·OW, F); no copy when grad is channels-last
        if ctx.relu_output is not None:
            g = g * (ctx.relu_output > 0)
        want_x, want_w = ctx.needs_grad[0], ctx.needs_grad[1]
        want_b = len(ctx.needs_grad) > 2 and ctx.needs_grad[2]
        grad_x = np.empty_like(x, dtype=g.dtype) if want_x else None  # keeps x's layout (channels-last stays so)

        if method in ("winograd", "winograd4"):
            tiling = layout
            tile = tiling.tile
            dtype = np.result_type(x.dtype, weight.dtype, g.dtype)
            u_t = winograd_filter_transform(weight, dtype, tile).transpose(0, 2, 1)  # U[ξ]ᵀ (α², F, C), C-contiguous
            g_images = g.reshape(n, oh, ow, f)
            th, tw = tiling.tiles_hw

            def backward_chunk(start_stop: tuple[int, int]) -> np.ndarray | None:
                """Writes the chunk's images of grad_x; returns its share of the gradient of U, as (α², F, C)."""
                start, stop = start_stop
                g_chunk = g_images[start:stop]
                if not tiling.exact:  # the dropped outputs of the last tiles get zero gradient
                    g_chunk = np.zeros((stop - start, tile * th, tile * tw, f), dtype=dtype)
                    g_chunk[:, :oh, :ow] = g_images[start:stop]
                grad_products = kernels.winograd_output_transform_grad(np.ascontiguousarray(g_chunk, dtype=dtype), tile)
                if want_x:  # grad V[ξ] = grad M[ξ] @ U[ξ]ᵀ, then back through the input transform
                    grad_padded = kernels.winograd_input_transform_grad(np.matmul(grad_products, u_t), tiling.tiles_hw, tile)
                    grad_x[start:stop] = tiling.inputs(grad_padded).transpose(0, 3, 1, 2)
                if want_w:  # grad U[ξ]ᵀ = grad M[ξ]ᵀ @ V[ξ], in U's memory order (α², F, C)
                    tiles = kernels.winograd_input_transform(tiling.padded(x[start:stop], dtype), tile)
                    return np.matmul(grad_products.transpose(0, 2, 1), tiles)
                return None
        elif method == "shifted":
            grid = layout
            dtype = np.result_type(x.dtype, weight.dtype, g.dtype)
            taps_t = np.ascontiguousarray(weight.transpose(2, 3, 0, 1).reshape(-1, f, c), dtype=dtype)  # W_abᵀ (F, C)
            g_images = g.reshape(n, oh, ow, f)

            def backward_chunk(start_stop: tuple[int, int]) -> np.ndarray | None:
                """Writes the chunk's images of grad_x; returns its share of the tap gradients (KH·KW, C, F)."""
                start, stop = start_stop
                g_rows = grid.output_gradient_rows(g_images[start:stop], dtype)
                if want_x:
                    grad_rows = kernels.shifted_matmul(g_rows, taps_t, grid.reach - grid.offsets, grid.count(stop - start))
                    grad_x[start:stop] = grid.inputs(grad_rows, stop - start).transpose(0, 3, 1, 2)
                if want_w:
                    rows = grid.rows(x[start:stop], dtype)
                    return kernels.shifted_matmul_grad_weights(rows, g_rows[grid.reach :], grid.offsets)
                return None
        else:
            weight_2d = weight.reshape(f, -1)  # W₂ (F, C·KH·KW)

            def backward_chunk(start_stop: tuple[int, int]) -> np.ndarray | None:
                """Writes the chunk's rows of grad_x; returns its share of grad_W₂ᵀ."""
                start, stop = start_stop
                g_chunk = g[start * pixels : stop * pixels]
                if want_x:
                    grad_cols = (g_chunk @ weight_2d).T  # (C·KH·KW, chunk·OH·OW)
                    grad_x[start:stop] = kernels.col2im(grad_cols, (stop - start, c, h, w), kernel, stride, padding)
                if want_w:
                    return kernels.im2col(x[start:stop], kernel, stride, padding) @ g_chunk
                return None

        shares = parallel.map_chunks(backward_chunk, bounds)
        grad_w = None
        if want_w:  # added in chunk order, whichever thread computed which: the same bits every run
            total = parallel.add_in_order(shares)
            if method in ("winograd", "winograd4"):  # grad U (α², C, F), held as (α², F, C) → (F, C, 3, 3)
                grad_w = winograd_filter_transform_grad(total.transpose(0, 2, 1), layout.tile)
            elif method == "shifted":  # (KH·KW, C, F) → (F, C, KH, KW)
                grad_w = total.reshape(kernel[0], kernel[1], c, f).transpose(3, 2, 0, 1)
            else:  # grad_W₂ᵀ (C·KH·KW, F) → (F, C, KH, KW)
                grad_w = total.T.reshape(weight.shape)
            grad_w = np.ascontiguousarray(grad_w).astype(weight.dtype, copy=False)
        grad_b = g.sum(axis=0) if want_b else None
        return (grad_x, grad_w, grad_b) if len(ctx.needs_grad) > 2 else (grad_x, grad_w)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1, padding: IntPair | str = 0,
           relu: bool = False) -> Tensor:
    """2-D convolution (cross-correlation, as in every deep-learning framework).

    Args:
        x: ``(N, C, H, W)`` float input.
        weight: ``(F, C, KH, KW)`` filters; kernels need not be square.
        bias: ``(F,)`` or None.
        stride: int or (SH, SW).
        padding: int, (PH, PW) zero-padding on both sides, or ``"same"``.
        relu: apply ReLU too, ``relu(conv2d(...))`` in one op: each chunk of
            output is clipped while it is still in cache, and no second
            array is made.

    Returns:
        ``(N, F, OH, OW)``.
    """
    check_image_batch(x, weight.shape[1] if weight.ndim == 4 else None, "conv2d input")
    if weight.ndim != 4:
        raise ValueError(f"conv2d weight must have shape (F, C, KH, KW), got {tuple(weight.shape)}")
    stride = _pair(stride, "stride")
    if min(stride) < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    pads = conv_padding(padding, weight.shape[2:], stride, x.shape[2:])
    for size, k, (before, after), axis in zip(x.shape[2:], weight.shape[2:], pads, ("height", "width")):
        if size + before + after < k:
            raise ValueError(f"conv2d input {axis} {size} (padded {size + before + after}) is smaller than the kernel {k}")
    return Conv2dFunction.apply(x, weight, bias, stride, pads, relu)  # a None bias is simply not an input


# ------------------------------------------------------------------ dropout
class DropoutFunction(Function):
    """Multiply by a fixed 0/(1/(1−p)) mask: the gradient goes through the same mask."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (mask,) = ctx.saved
        return grad * mask


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator: np.random.Generator | None = None) -> Tensor:
    """Inverted dropout: in training, zero each value with probability ``p`` and scale the rest by ``1/(1−p)``,
    so evaluation (which returns ``x`` unchanged) needs no rescaling.  ``x`` any shape.
    """
    check_float(x, "dropout input")
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    generator = generator if generator is not None else np.random.default_rng()
    keep = generator.random(x.shape) >= p
    mask = keep.astype(x.dtype) / x.dtype.type(1 - p)
    return DropoutFunction.apply(x, mask)


# ----------------------------------------------------------- activations
class PReLUFunction(Function):
    """Parametric ReLU: ``y = x`` where ``x > 0``, else ``alpha · x``; one ``alpha`` per channel (axis 1).

    Shapes: ``x (N, C, *)``, ``alpha (C,)`` or ``(1,)``.  MTCNN uses it after every convolution.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        a = alpha.reshape(shape)
        ctx.save_for_backward(x, a)
        ctx.alpha_shape = alpha.shape
        return np.where(x > 0, x, a * x)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        x, a = ctx.saved
        positive = x > 0
        grad_x = np.where(positive, grad, a * grad)
        axes = (0,) + tuple(range(2, x.ndim))
        grad_a = np.where(positive, 0, grad * x).sum(axis=axes)
        if ctx.alpha_shape == (1,):
            grad_a = grad_a.sum(keepdims=True)
        return grad_x, grad_a.reshape(ctx.alpha_shape)


def prelu(x: Tensor, alpha: Tensor) -> Tensor:
    """PReLU with per-channel slopes ``alpha (C,)`` (or one shared slope ``(1,)``) on ``x (N, C, *)``."""
    check_float(x, "prelu input")
    if x.ndim < 2 or alpha.shape not in ((x.shape[1],), (1,)):
        raise ValueError(f"prelu alpha of shape {tuple(alpha.shape)} does not fit input {tuple(x.shape)} (channels on axis 1)")
    return PReLUFunction.apply(x, as_tensor(alpha))


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)``."""
    return ops.relu(x)


class LogSoftmaxFunction(Function):
    """``log_softmax(x)_j = x_j − log Σ_k exp(x_k)``, computed after subtracting the max (never overflows).

    Backward: ``grad − softmax · Σ grad``.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, axis: int) -> np.ndarray:
        shifted = x - x.max(axis=axis, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (out,) = ctx.saved
        return grad - np.exp(out) * grad.sum(axis=ctx.axis, keepdims=True)


class SoftmaxFunction(Function):
    """``softmax(x)_j = exp(x_j) / Σ_k exp(x_k)`` (max-shifted).  Backward: ``s · (grad − Σ grad · s)``."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, axis: int) -> np.ndarray:
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        out = e / e.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (s,) = ctx.saved
        return s * (grad - (grad * s).sum(axis=ctx.axis, keepdims=True))


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Log of the softmax along ``axis``, numerically stable."""
    check_float(x, "log_softmax input")
    return LogSoftmaxFunction.apply(x, axis)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Softmax along ``axis`` (probabilities summing to one), numerically stable."""
    check_float(x, "softmax input")
    return SoftmaxFunction.apply(x, axis)


def concat(tensors: Sequence[Tensor], axis: int = 1) -> Tensor:
    """Concatenate along ``axis``; see ``minimtl.ops.concat``."""
    return ops.concat(tensors, axis)


def flatten(x: Tensor, start_axis: int = 1) -> Tensor:
    """``(N, C, H, W)`` → ``(N, C·H·W)``."""
    return ops.flatten(x, start_axis)


def standardize_images(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Each image shifted to mean 0 and scaled to standard deviation 1: ``(x − μ) / √(σ² + eps)``.

    ``x`` ``(N, C, H, W)`` → the same shape; μ and σ² are taken over each image's
    own ``C·H·W`` values, so a dark and a bright photo of one face give the same
    input.  ``eps`` keeps a flat image (σ = 0) finite; it is small beside the
    variance of any real face (about 0.01–0.05 for pixels in [0, 1]), so contrast
    does not change the result.  Composed of primitive ops, so autograd gives
    its backward.
    """
    axes = (1, 2, 3)
    centred = x - ops.mean(x, axis=axes, keepdims=True)
    variance = ops.mean(centred * centred, axis=axes, keepdims=True)
    return centred / ops.power(variance + eps, 0.5)

