"""The convolution, to read first: its definition, and the same layer as im2col + one matrix product.

Shapes (NCHW): ``x (N, C, H, W)``, ``weight (F, C, KH, KW)``, ``bias (F,)`` →
``y (N, F, OH, OW)`` with ``OH = (H + top + bottom − KH) // SH + 1`` and
``OW = (W + left + right − KW) // SW + 1``; ``stride = (SH, SW)``,
``padding = ((top, bottom), (left, right))`` zero pixels.

The definition (Eq. (conv) of ``docs/layers/convolution.rst``; a
cross-correlation, as in every deep-learning framework)::

    y[n, f, oh, ow] = b[f] + Σ_c Σ_i Σ_j  w[f, c, i, j] · x_pad[n, c, oh·SH + i, ow·SW + j]

``direct_conv2d`` computes it one output value at a time and
``direct_conv2d_gradients`` its gradients the same way: the oracles the tests
hold every faster convolution to.

The same sum as one matrix product (``ReferenceConv2d``): ``im2col`` copies
the receptive field of every output pixel into a column,
``cols (C·KH·KW, N·OH·OW)`` (row ``c·KH·KW + i·KW + j``, column
``n·OH·OW + oh·OW + ow``); with ``W₂ = weight.reshape(F, C·KH·KW)``::

    Y = W₂ @ cols + b        (F, N·OH·OW),   y = Y as (F, N, OH, OW), transposed to (N, F, OH, OW)

Backward, with ``G = ∂L/∂Y (F, N·OH·OW)``::

    ∂L/∂W₂ = G @ colsᵀ,   ∂L/∂b = Σ_pixels G,   ∂L/∂cols = W₂ᵀ @ G,   ∂L/∂x = col2im(∂L/∂cols)

where ``col2im``, the adjoint (transpose) of ``im2col``, adds each column
back onto the pixels it was copied from.  This is the whole idea of the
layer; ``minimtl.conv.Conv2dFunction`` computes the same values faster.
"""
from __future__ import annotations

import numpy as np

from minimtl.autograd import Context, Function, Tensor
from minimtl.kernels.numpy_backend import col2im, im2col, output_size

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]


def direct_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: Pair, padding: Padding) -> np.ndarray:
    """The definition, one output value at a time: ``Σ_c Σ_i Σ_j x_pad[n, c, oh·sh + i, ow·sw + j] · w[f, c, i, j]``.

    Args:
        x: ``(N, C, H, W)``.
        weight: ``(F, C, KH, KW)``.
        bias: ``(F,)`` or None.
        stride: ``(SH, SW)``.
        padding: ``((top, bottom), (left, right))``.

    Returns:
        ``y (N, F, OH, OW)`` in float64.
    """
    (sh, sw), ((pt, pb), (pl, pr)) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n, _, h, w = xp.shape
    f, _, kh, kw = weight.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((n, f, oh, ow))
    for b in range(n):
        for k in range(f):
            for i in range(oh):
                for j in range(ow):
                    out[b, k, i, j] = np.sum(xp[b, :, i * sh:i * sh + kh, j * sw:j * sw + kw] * weight[k])
            if bias is not None:
                out[b, k] += bias[k]
    return out


def direct_conv2d_gradients(x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Padding,
                            upstream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``∂L/∂x`` and ``∂L/∂w`` by the definition: each output value's upstream gradient times what it touched.

    Args:
        x: ``(N, C, H, W)``.
        weight: ``(F, C, KH, KW)``.
        stride: ``(SH, SW)``.
        padding: ``((top, bottom), (left, right))``.
        upstream: ``∂L/∂y (N, F, OH, OW)``.

    Returns:
        ``(grad_x (N, C, H, W), grad_weight (F, C, KH, KW))``; the bias gradient is ``upstream.sum(axis=(0, 2, 3))``.
    """
    (sh, sw), ((pt, pb), (pl, pr)) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    grad_xp = np.zeros_like(xp)
    grad_w = np.zeros_like(weight)
    _, _, kh, kw = weight.shape
    n, f, oh, ow = upstream.shape
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                window = (b, slice(None), slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
                g = upstream[b, :, i, j]  # (F,)
                grad_w += g[:, None, None, None] * xp[window]
                grad_xp[window] += np.tensordot(g, weight, axes=1)
    return grad_xp[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]], grad_w


class ReferenceConv2d(Function):
    """The whole batch at once: ``Y = W₂ @ im2col(x) + b`` forward, ``col2im(W₂ᵀ @ G)`` backward.

    Shapes: ``x (N, C, H, W)``, ``weight (F, C, KH, KW)``, ``bias (F,)`` or
    absent → ``y (N, F, OH, OW)``; ``cols (C·KH·KW, N·OH·OW)``,
    ``W₂ (F, C·KH·KW)``, ``Y`` and ``G = ∂L/∂Y`` ``(F, N·OH·OW)``.  The
    equations are in this module's docstring.  The forward keeps ``cols`` for
    the backward: simple, and ``C·KH·KW`` times the memory of ``x`` (the fast
    ``Conv2dFunction`` unfolds again instead).
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: Pair,
                padding: Padding) -> np.ndarray:
        (n, _, h, w), (f, _, kh, kw) = x.shape, weight.shape
        kernel = (kh, kw)
        oh, ow = output_size(h, kh, stride[0], *padding[0]), output_size(w, kw, stride[1], *padding[1])
        cols = im2col(x, kernel, stride, padding)  # (C·KH·KW, N·OH·OW)
        y = weight.reshape(f, -1) @ cols  # Y = W₂ @ cols  (F, N·OH·OW)
        if bias is not None:
            y += bias[:, None]
        ctx.save_for_backward(cols, weight)
        ctx.x_shape, ctx.stride, ctx.padding = x.shape, stride, padding
        return y.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)  # (N, F, OH, OW)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        cols, weight = ctx.saved
        f, kernel = weight.shape[0], weight.shape[2:]
        g = grad.transpose(1, 0, 2, 3).reshape(f, -1)  # G = ∂L/∂Y  (F, N·OH·OW)
        grad_w = (g @ cols.T).reshape(weight.shape)  # ∂L/∂W₂ = G @ colsᵀ
        grad_cols = weight.reshape(f, -1).T @ g  # ∂L/∂cols = W₂ᵀ @ G  (C·KH·KW, N·OH·OW)
        grad_x = col2im(grad_cols, ctx.x_shape, kernel, ctx.stride, ctx.padding)  # adds each column back
        if len(ctx.needs_grad) > 2:  # a bias was given
            return grad_x, grad_w, g.sum(axis=1)  # ∂L/∂b = Σ over pixels
        return grad_x, grad_w


def reference_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Pair = (1, 1),
                     padding: Padding = ((0, 0), (0, 0))) -> Tensor:
    """``ReferenceConv2d`` on tensors: the readable convolution, with the same values as ``minimtl.conv.conv2d``.

    Args:
        x: ``(N, C, H, W)`` float input.
        weight: ``(F, C, KH, KW)`` filters.
        bias: ``(F,)`` or None.
        stride: ``(SH, SW)``.
        padding: ``((top, bottom), (left, right))`` zero pixels.

    Returns:
        ``(N, F, OH, OW)``.
    """
    return ReferenceConv2d.apply(x, weight, bias, tuple(stride), tuple(map(tuple, padding)))
