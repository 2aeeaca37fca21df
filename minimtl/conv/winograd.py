"""Convolution by Winograd tiles: F(2×2, 3×3) and F(4×4, 3×3), fewer multiplications for 3×3, stride-1 layers.

Winograd's minimal filtering computes an m×m output tile from an α×α input
tile, α = m + 2, as ``Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`` (Lavin and Gray,
*Fast Algorithms for Convolutional Neural Networks*, CVPR 2016).  Summed
over channels, the ⊙ becomes one matrix product per tile position ξ:
``M[ξ] = V[ξ] @ U[ξ]`` with ``V = Bᵀ d B`` of every tile (tiles × C) and
``U = G g Gᵀ`` of every filter (C × F).  ``Winograd(tile=2)`` and
``Winograd(tile=4)`` are the two instances, ``WINOGRAD_2X2`` ("winograd")
and ``WINOGRAD_4X4`` ("winograd4"); ``numpy_backend.winograd_matrices``
writes out ``Bᵀ``, ``G`` and ``Aᵀ``.

Forward, per chunk: ``V`` of the chunk's tiles (``kernels.winograd_input_transform``),
α² products ``M[ξ] = V[ξ] @ U[ξ]``, and ``Aᵀ M A`` written into the chunk's
rows of ``Y`` (``kernels.winograd_output_transform``).  Backward: ``grad M``
by the adjoint output transform, ``grad V[ξ] = grad M[ξ] @ U[ξ]ᵀ`` back
through the adjoint input transform to ``grad_x``, and
``grad U[ξ] = V[ξ]ᵀ @ grad M[ξ]`` (``V`` recomputed from ``x``), which
``winograd_filter_transform_grad`` turns into the weight gradient once the
chunks' shares are added.
"""
from __future__ import annotations

import numpy as np

from minimtl import kernels, parallel
from minimtl.conv.algorithm import ConvAlgorithm, ConvPlan
from minimtl.conv.shifted import PaddedGrid

# Bytes of Winograd-domain values (α² per tile and channel, the larger of C and
# F) one chunk of a Winograd convolution holds.
CHUNK_BYTES = 2 * 2**20


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

    Args:
        size_hw: ``(H, W)``.
        padding: ``((top, bottom), (left, right))``.
        tile: m, the output tile side.
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


class WinogradPlan(ConvPlan):
    """One call of the Winograd convolution with m×m output tiles; ``tiling`` is its ``WinogradTiles``."""

    def __init__(self, x_shape, weight_shape, stride, padding, dtype, tile: int) -> None:
        super().__init__(x_shape, weight_shape, stride, padding, dtype)
        self.tiling = WinogradTiles(self.size_hw, self.padding, tile)

    def images_per_chunk(self, chunk_bytes: int) -> int:
        per_image = self.tiling.multiplications(1) * max(self.channels, self.filters) * self.dtype.itemsize
        return max(1, chunk_bytes // per_image)

    def forward_weights(self, weight: np.ndarray) -> np.ndarray:
        """``U (α², C, F)`` (``winograd_filter_transform``)."""
        return winograd_filter_transform(weight, self.dtype, self.tiling.tile)

    def forward_chunk(self, x: np.ndarray, weights: np.ndarray, out_rows: np.ndarray) -> None:
        tiling, (oh, ow) = self.tiling, self.out_hw
        out = out_rows.reshape(x.shape[0], oh, ow, self.filters)
        tiles = kernels.winograd_input_transform(tiling.padded(x, self.dtype), tiling.tile)  # V (α², tiles, C)
        products = np.matmul(tiles, weights)  # M[ξ] = V[ξ] @ U[ξ] (α², tiles, F)
        if tiling.exact:  # the output tiles are exactly these images' rows of Y: written in place
            kernels.winograd_output_transform(products, tiling.tiles_hw, out=out, tile=tiling.tile)
        else:
            out[...] = kernels.winograd_output_transform(products, tiling.tiles_hw, tile=tiling.tile)[:, :oh, :ow]

    def backward_weights(self, weight: np.ndarray, dtype) -> np.ndarray:
        """``U[ξ]ᵀ (α², F, C)``, C-contiguous, in ``dtype``."""
        return winograd_filter_transform(weight, dtype, self.tiling.tile).transpose(0, 2, 1)

    def backward_chunk(self, x: np.ndarray, g_rows: np.ndarray, weights: np.ndarray, grad_x: np.ndarray | None,
                       want_weight: bool) -> np.ndarray | None:
        """Writes the chunk's ``grad_x``; returns its share of the gradient of ``U``, as ``(α², F, C)``."""
        tiling, tile, (oh, ow), f = self.tiling, self.tiling.tile, self.out_hw, self.filters
        m, dtype = x.shape[0], weights.dtype  # (the prepared weights carry the backward's dtype)
        g_chunk = g_rows.reshape(m, oh, ow, f)
        if not tiling.exact:  # the dropped outputs of the last tiles get zero gradient
            g_chunk = np.zeros((m, tile * tiling.tiles_hw[0], tile * tiling.tiles_hw[1], f), dtype=dtype)
            g_chunk[:, :oh, :ow] = g_rows.reshape(m, oh, ow, f)
        grad_products = kernels.winograd_output_transform_grad(np.ascontiguousarray(g_chunk, dtype=dtype), tile)
        if grad_x is not None:  # grad V[ξ] = grad M[ξ] @ U[ξ]ᵀ, then back through the input transform
            grad_padded = kernels.winograd_input_transform_grad(np.matmul(grad_products, weights), tiling.tiles_hw, tile)
            grad_x[...] = tiling.inputs(grad_padded).transpose(0, 3, 1, 2)
        if want_weight:  # grad U[ξ]ᵀ = grad M[ξ]ᵀ @ V[ξ], in U's memory order (α², F, C)
            tiles = kernels.winograd_input_transform(tiling.padded(x, dtype), tile)
            return np.matmul(grad_products.transpose(0, 2, 1), tiles)
        return None

    def weight_gradient(self, total_share: np.ndarray) -> np.ndarray:
        """``grad U (α², C, F)``, held as ``(α², F, C)`` → ``(F, C, 3, 3)``."""
        return winograd_filter_transform_grad(total_share.transpose(0, 2, 1), self.tiling.tile)


class Winograd(ConvAlgorithm):
    """Winograd's F(m×m, 3×3) with output tiles of ``tile`` × ``tile`` pixels: 3×3 kernels, stride 1.

    Args:
        tile: m, 2 or 4 (``numpy_backend.WINOGRAD_TILES``).
        name: what ``settings(method=...)`` calls it.
    """

    chunk_bytes = CHUNK_BYTES

    def __init__(self, tile: int, name: str) -> None:
        self.tile, self.name = tile, name

    def fits(self, kernel, stride) -> bool:
        return tuple(kernel) == (3, 3) and tuple(stride) == (1, 1)

    def plan(self, x_shape, weight_shape, stride, padding, dtype) -> WinogradPlan:
        return WinogradPlan(x_shape, weight_shape, stride, padding, dtype, self.tile)


WINOGRAD_2X2 = Winograd(tile=2, name="winograd")
WINOGRAD_4X4 = Winograd(tile=4, name="winograd4")
