"""Convolution by im2col, a chunk of images at a time: the reference's one matrix product, kept in cache.

``minimtl/conv/reference.py`` computes ``Y = W₂ @ im2col(x)`` for the whole
batch.  Here each chunk of a few images does the same im2col → GEMM
(→ col2im in the backward) on its rows of ``Y`` and ``G``, and the columns are
never kept: the backward unfolds each chunk again.

The product is taken transposed, ``Y_chunk = colsᵀ @ W₂ᵀ`` of shape
``(m·OH·OW, F)``: one row per output pixel, the F channels side by side,
which is the ``(N, OH, OW, F)`` memory ``Conv2dFunction`` returns as an
``(N, F, OH, OW)`` view ("channels-last" strides).  Element-wise layers keep
that layout and the next ``im2col`` reads it in memory order.  Backward,
with ``G_chunk (m·OH·OW, F)``: ``grad_W₂ᵀ = cols @ G``,
``grad_cols = (G @ W₂)ᵀ``, ``grad_x = col2im(grad_cols)``.
``grad_W₂ᵀ = cols @ G`` rather than ``Gᵀ @ colsᵀ``: the same product, but
OpenBLAS ran the latter, whose long inner dimension comes transposed on both
sides, up to 12× slower.
"""
from __future__ import annotations

import numpy as np

from minimtl import kernels
from minimtl.conv.algorithm import ConvAlgorithm, ConvPlan

# Bytes of column matrix one chunk of a convolution may unfold at a time.  A
# whole batch of columns is up to 340 MB (32 channels, 3×3, 48×48, batch 128):
# writing it page-faults fresh memory and the GEMMs then stream it from RAM.
# Chunks of about this size stay in the last-level cache between im2col and
# GEMM, and (below glibc's 32 MB mmap threshold) reuse the same heap memory
# chunk after chunk.  Measured best on this network's layers: 10–40 MB.
CHUNK_BYTES = 16 * 2**20


def conv_chunk_size(x_shape: tuple[int, ...], kernel: tuple[int, int], out_hw: tuple[int, int], itemsize: int,
                    chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many images a convolution unfolds at once: the most whose columns fit in ``chunk_bytes``.

    One image's columns are ``C·KH·KW × OH·OW`` values of ``itemsize`` bytes.

    Args:
        x_shape: ``(N, C, H, W)``.
        kernel: ``(KH, KW)``.
        out_hw: ``(OH, OW)``.
        itemsize: bytes per value.
        chunk_bytes: the budget (default ``CHUNK_BYTES``).

    Returns:
        At least 1 and at most the batch ``N``.
    """
    per_image = x_shape[1] * kernel[0] * kernel[1] * out_hw[0] * out_hw[1] * itemsize
    return max(1, min(int(x_shape[0]), chunk_bytes // max(per_image, 1)))


class Im2colPlan(ConvPlan):
    """One call of the im2col convolution (see the module docstring)."""

    def images_per_chunk(self, chunk_bytes: int) -> int:
        return conv_chunk_size(self.x_shape, self.kernel, self.out_hw, self.dtype.itemsize, chunk_bytes)

    def forward_weights(self, weight: np.ndarray) -> np.ndarray:
        """``W₂ᵀ (C·KH·KW, F)``, copied C-contiguous: with the transposed view OpenBLAS took 6 ms instead of
        0.03 ms for MTCNN R-Net's (81 × 252) @ (252 × 48) (it runs that layout threaded)."""
        return np.ascontiguousarray(weight.reshape(self.filters, -1).T)

    def forward_chunk(self, x: np.ndarray, weights: np.ndarray, out_rows: np.ndarray) -> None:
        cols = kernels.im2col(x, self.kernel, self.stride, self.padding)  # (C·KH·KW, m·OH·OW)
        np.matmul(cols.T, weights, out=out_rows)

    def backward_weights(self, weight: np.ndarray, dtype) -> np.ndarray:
        """``W₂ (F, C·KH·KW)``, a view of ``weight``."""
        return weight.reshape(self.filters, -1)

    def backward_chunk(self, x: np.ndarray, g_rows: np.ndarray, weights: np.ndarray, grad_x: np.ndarray | None,
                       want_weight: bool) -> np.ndarray | None:
        """Writes the chunk's ``grad_x``; returns its share of ``grad_W₂ᵀ (C·KH·KW, F)``."""
        if grad_x is not None:
            grad_cols = (g_rows @ weights).T  # (C·KH·KW, m·OH·OW)
            grad_x[...] = kernels.col2im(grad_cols, x.shape, self.kernel, self.stride, self.padding)
        if want_weight:
            return kernels.im2col(x, self.kernel, self.stride, self.padding) @ g_rows
        return None

    def weight_gradient(self, total_share: np.ndarray) -> np.ndarray:
        """``grad_W₂ᵀ (C·KH·KW, F)`` → ``(F, C, KH, KW)``."""
        return total_share.T.reshape(self.weight_shape)


class Im2col(ConvAlgorithm):
    """im2col + one matrix product per chunk: any kernel, stride and padding."""

    name = "im2col"
    chunk_bytes = CHUNK_BYTES

    def fits(self, kernel, stride) -> bool:
        return True

    def plan(self, x_shape, weight_shape, stride, padding, dtype) -> Im2colPlan:
        return Im2colPlan(x_shape, weight_shape, stride, padding, dtype)


IM2COL = Im2col()
