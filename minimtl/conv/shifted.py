"""Convolution by shifted products: a stride-1 convolution without a column matrix.

Lay the zero-padded images out as the rows of one matrix, one row per pixel
with its C channels side by side (``PaddedGrid``).  Output pixel ``p`` and
input pixel ``p`` then have the same row number, and kernel tap ``(a, b)``
reads input row ``p + a·Wp + b`` for every output: with
``W_ab = weight[:, :, a, b]ᵀ (C, F)`` the whole convolution is

    ``Y[p] = Σ_ab rows[p + offsets[ab]] @ W_ab``   (``kernels.shifted_matmul``)

KH·KW products of shifted row blocks, computed for every grid row; the rows
outside the output (the right and bottom padding) are thrown away, so the
arithmetic is ``Hp·Wp / (OH·OW)`` times the output's.  Backward: ``grad_x``
is the same kind of sum with the transposed taps and reflected offsets, and
``grad_W_ab = rows[p + offsets[ab]]ᵀ @ G`` (``kernels.shifted_matmul_grad_weights``).
"""
from __future__ import annotations

import numpy as np

from minimtl import kernels
from minimtl.conv.algorithm import ConvAlgorithm, ConvPlan

# Bytes of padded grid (rows of max(C, F) values) one chunk of a shifted-product
# convolution holds: a few images, so a chunk's rows stay in the second-level cache.
CHUNK_BYTES = 2**20


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

    Args:
        size_hw: ``(H, W)``.
        kernel: ``(KH, KW)``.
        padding: ``((top, bottom), (left, right))``.
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

    def waste(self) -> float:
        """Grid rows computed per output pixel kept: ``Hp·Wp / (OH·OW)``."""
        return self.hp * self.wp / (self.out_hw[0] * self.out_hw[1])

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


class ShiftedPlan(ConvPlan):
    """One call of the shifted-product convolution (see the module docstring); ``grid`` is its ``PaddedGrid``."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.grid = PaddedGrid(self.size_hw, self.kernel, self.padding)

    def images_per_chunk(self, chunk_bytes: int) -> int:
        per_image = self.grid.hp * self.grid.wp * max(self.channels, self.filters) * self.dtype.itemsize
        return max(1, chunk_bytes // per_image)

    def forward_weights(self, weight: np.ndarray) -> np.ndarray:
        """``W_ab = weight[:, :, a, b]ᵀ (C, F)``, one per tap, in the order of ``grid.offsets``: ``(KH·KW, C, F)``."""
        kh, kw = self.kernel
        return np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(kh * kw, self.channels, self.filters),
                                    dtype=self.dtype)

    def forward_chunk(self, x: np.ndarray, weights: np.ndarray, out_rows: np.ndarray) -> None:
        grid, m = self.grid, x.shape[0]
        products = kernels.shifted_matmul(grid.rows(x, self.dtype), weights, grid.offsets, grid.count(m))
        out_rows.reshape(m, *self.out_hw, self.filters)[...] = grid.outputs(products, m)

    def backward_weights(self, weight: np.ndarray, dtype) -> np.ndarray:
        """``W_abᵀ (F, C)`` per tap: ``(KH·KW, F, C)`` in ``dtype``."""
        return np.ascontiguousarray(weight.transpose(2, 3, 0, 1).reshape(-1, self.filters, self.channels), dtype=dtype)

    def backward_chunk(self, x: np.ndarray, g_rows: np.ndarray, weights: np.ndarray, grad_x: np.ndarray | None,
                       want_weight: bool) -> np.ndarray | None:
        """Writes the chunk's ``grad_x``; returns its share of the tap gradients ``(KH·KW, C, F)``."""
        grid, m, dtype = self.grid, x.shape[0], weights.dtype  # (the prepared weights carry the backward's dtype)
        g_grid = grid.output_gradient_rows(g_rows.reshape(m, *self.out_hw, self.filters), dtype)
        if grad_x is not None:
            grad_rows = kernels.shifted_matmul(g_grid, weights, grid.reach - grid.offsets, grid.count(m))
            grad_x[...] = grid.inputs(grad_rows, m).transpose(0, 3, 1, 2)
        if want_weight:
            return kernels.shifted_matmul_grad_weights(grid.rows(x, dtype), g_grid[grid.reach :], grid.offsets)
        return None

    def weight_gradient(self, total_share: np.ndarray) -> np.ndarray:
        """``(KH·KW, C, F)`` → ``(F, C, KH, KW)``."""
        return total_share.reshape(*self.kernel, self.channels, self.filters).transpose(3, 2, 0, 1)


class ShiftedProducts(ConvAlgorithm):
    """Shifted products over the padded grid: any kernel, stride 1."""

    name = "shifted"
    chunk_bytes = CHUNK_BYTES

    def fits(self, kernel, stride) -> bool:
        return tuple(stride) == (1, 1)

    def plan(self, x_shape, weight_shape, stride, padding, dtype) -> ShiftedPlan:
        return ShiftedPlan(x_shape, weight_shape, stride, padding, dtype)


SHIFTED = ShiftedProducts()
