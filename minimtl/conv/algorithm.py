"""The small interface every fast convolution algorithm implements (``im2col.py``, ``shifted.py``, ``winograd.py``).

``Conv2dFunction`` cuts the batch into chunks of images and, for each chunk,
hands the algorithm the chunk's input and its rows of the output; it never
looks inside.  An algorithm is a ``ConvAlgorithm`` object: ``fits`` says
which layers it can compute, ``plan`` prepares one call.  The ``ConvPlan``
holds that call's geometry (the only thing the autograd context keeps
besides ``x`` and ``weight``) and does the work:

* ``images_per_chunk(chunk_bytes)``: how many images one chunk takes;
* ``forward_weights(weight)`` once per call, then ``forward_chunk(x, weights, out_rows)`` per chunk;
* ``backward_weights(weight, dtype)`` once, then ``backward_chunk(x, g_rows, weights, grad_x, want_weight)``
  per chunk, which writes the chunk's input gradient and returns its share of
  the weight gradient;
* ``weight_gradient(total_share)``: the chunks' shares, added in chunk order,
  as ``(F, C, KH, KW)``.

Rows: the output is held as ``Y (N·OH·OW, F)``, one row per output pixel
with its F channels side by side (that is ``(N, OH, OW, F)`` memory, which
``Conv2dFunction`` returns as an ``(N, F, OH, OW)`` view); ``out_rows`` and
``g_rows`` are one chunk's ``(m·OH·OW, F)`` rows of ``Y`` and of ``G = ∂L/∂Y``.

Adding an algorithm: a new file with a ``ConvAlgorithm`` and its ``ConvPlan``,
and one line in ``minimtl/conv/choose.py``'s list.
"""
from __future__ import annotations

import numpy as np

from minimtl.kernels.numpy_backend import output_size

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]


class ConvPlan:
    """One convolution call: its geometry, and the steps of ``Conv2dFunction`` for one chunk of images.

    Args:
        x_shape: ``(N, C, H, W)``.
        weight_shape: ``(F, C, KH, KW)``.
        stride: ``(SH, SW)``.
        padding: ``((top, bottom), (left, right))``.
        dtype: the forward's dtype, ``result_type(x, weight)``.

    Attributes:
        channels, filters, kernel, size_hw, out_hw: C, F, ``(KH, KW)``, ``(H, W)``, ``(OH, OW)``.
    """

    def __init__(self, x_shape: tuple[int, ...], weight_shape: tuple[int, ...], stride: Pair, padding: Padding,
                 dtype) -> None:
        (_, c, h, w), (f, _, kh, kw) = x_shape, weight_shape
        self.x_shape, self.weight_shape = tuple(x_shape), tuple(weight_shape)
        self.channels, self.filters, self.kernel, self.size_hw = c, f, (kh, kw), (h, w)
        self.stride, self.padding, self.dtype = stride, padding, np.dtype(dtype)
        self.out_hw = (output_size(h, kh, stride[0], *padding[0]), output_size(w, kw, stride[1], *padding[1]))

    def images_per_chunk(self, chunk_bytes: int) -> int:
        """The most images whose working memory fits in ``chunk_bytes``; at least 1."""
        raise NotImplementedError

    def forward_weights(self, weight: np.ndarray):
        """``weight (F, C, KH, KW)`` in the form ``forward_chunk`` multiplies by, computed once per call."""
        raise NotImplementedError

    def forward_chunk(self, x: np.ndarray, weights, out_rows: np.ndarray) -> None:
        """Write the output of ``x (m, C, H, W)`` into ``out_rows (m·OH·OW, F)``."""
        raise NotImplementedError

    def backward_weights(self, weight: np.ndarray, dtype):
        """``weight`` in the form ``backward_chunk`` multiplies by, in ``dtype`` (that of x, weight and G)."""
        raise NotImplementedError

    def backward_chunk(self, x: np.ndarray, g_rows: np.ndarray, weights, grad_x: np.ndarray | None,
                       want_weight: bool):
        """Write ``∂L/∂x`` of ``x (m, C, H, W)`` into ``grad_x`` (unless None) from ``g_rows (m·OH·OW, F)``.

        Returns:
            this chunk's share of the weight gradient (in the algorithm's own
            layout) if ``want_weight``, else None.
        """
        raise NotImplementedError

    def weight_gradient(self, total_share: np.ndarray) -> np.ndarray:
        """The sum of every chunk's share as ``∂L/∂weight (F, C, KH, KW)``."""
        raise NotImplementedError


class ConvAlgorithm:
    """A way to compute a convolution: a name, a default chunk budget, which layers it fits, and its plan.

    Attributes:
        name: what ``minimtl.conv.settings(method=...)`` and ``conv_method`` call it.
        chunk_bytes: the default bytes of working memory one chunk may hold
            (``minimtl.conv.settings(chunk_bytes=...)`` overrides it).
    """

    name: str = ""
    chunk_bytes: int = 0

    def fits(self, kernel: Pair, stride: Pair) -> bool:
        """Whether this algorithm can compute a layer with this kernel and stride."""
        raise NotImplementedError

    def plan(self, x_shape: tuple[int, ...], weight_shape: tuple[int, ...], stride: Pair, padding: Padding,
             dtype) -> ConvPlan:
        """Prepare one call (arguments as ``ConvPlan``'s)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<convolution algorithm {self.name!r}>"
