"""``Conv2dFunction``: a convolution cut into chunks of images, each computed by the algorithm ``conv_method`` picks.

It knows no algorithm: it reads the settings, asks ``conv_method`` which
algorithm computes the layer, lets the algorithm's plan do each chunk, and
adds the bias and the fused ReLU (the epilogue) while each chunk's output is
still in cache.  ``conv2d`` checks the arguments and calls it.
"""
from __future__ import annotations

import math

import numpy as np

from minimtl import parallel
from minimtl.autograd import Context, Function, Tensor
from minimtl.checks import IntPair, check_image_batch, int_pair
from minimtl.conv.choose import ALGORITHMS, conv_method, current_settings


def chunk_bounds(images: int, chunk: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk: ``parallel.chunk_count`` chunks of at most ``chunk`` images whose sizes
    differ by one at most (so the workers finish together)."""
    return parallel.even_bounds(images, min(parallel.chunk_count(images, chunk), images))


def add_bias_and_relu(rows: np.ndarray, bias: np.ndarray | None, relu: bool) -> None:
    """In place on a chunk's output rows ``(m·OH·OW, F)``, while they are in cache: ``+ bias``, then ReLU if asked."""
    if bias is not None:
        rows += bias
    if relu:
        np.maximum(rows, 0, out=rows)


class Conv2dFunction(Function):
    """2-D cross-correlation, a chunk of images at a time, by the algorithm ``conv_method`` picks for the layer.

    Shapes: ``x (N, C, H, W)``, ``weight (F, C, KH, KW)``, ``bias (F,)`` →
    ``y (N, F, OH, OW)`` with ``OH = (H + top + bottom − KH) // SH + 1``; the
    values are those of ``minimtl.conv.reference`` (read that first).

    The output is computed as ``Y (N·OH·OW, F)``, one row per output pixel
    with the F channels side by side: that is already ``(N, OH, OW, F)``
    memory, so ``y`` is returned as an ``(N, F, OH, OW)`` view of it with no
    copy ("channels-last" strides).  Backward, ``G`` is the upstream gradient
    as ``(N·OH·OW, F)`` (no copy when it is channels-last) and
    ``grad_bias = Σ G`` over pixels.

    Chunks: images are independent, so the batch is cut into chunks of
    ``plan.images_per_chunk(...)`` images (``chunk_bounds``) and the
    algorithm's plan computes each chunk's rows of ``Y``, and of ``grad_x``
    and its share of the weight gradient (``minimtl.conv.algorithm`` lists the
    steps).  Nothing of the size of the batch's columns or tiles is kept: the
    forward saves ``x`` and ``weight`` and the backward recomputes each
    chunk's part.  The chunks run on every core at once, each single-threaded
    (``minimtl.parallel.map_chunks``); their shares of the weight gradient
    are added in chunk order (``parallel.add_in_order``), so a run repeats
    bit for bit whichever thread computed which chunk.

    ``relu=True`` (``conv2d(..., relu=True)``) clips each chunk of ``Y`` at 0
    while it is still in cache; the backward then keeps ``G`` only where the
    saved output is positive.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding,
                relu: bool = False) -> np.ndarray:
        settings = current_settings()  # read once, here in the calling thread; the workers get what it said
        n, c, h, w = x.shape
        f, _, kh, kw = weight.shape
        algorithm = ALGORITHMS[conv_method(c, (kh, kw), stride, padding, (h, w), n, settings.method)]
        plan = algorithm.plan(x.shape, weight.shape, stride, padding, np.result_type(x.dtype, weight.dtype))
        bounds = chunk_bounds(n, plan.images_per_chunk(settings.chunk_bytes_for(algorithm)))
        (oh, ow), pixels = plan.out_hw, plan.out_hw[0] * plan.out_hw[1]
        out = np.empty((n * pixels, f), dtype=plan.dtype)  # Y, one row per output pixel
        weights = plan.forward_weights(weight)

        def forward_chunk(start_stop: tuple[int, int]) -> None:
            start, stop = start_stop
            rows = out[start * pixels : stop * pixels]
            plan.forward_chunk(x[start:stop], weights, rows)
            add_bias_and_relu(rows, bias, relu)

        parallel.map_chunks(forward_chunk, bounds)
        ctx.save_for_backward(x, weight)
        ctx.plan, ctx.bounds = plan, bounds
        ctx.relu_output = out if relu else None  # where it is positive the ReLU let the gradient through
        return out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        x, weight = ctx.saved
        plan, bounds = ctx.plan, ctx.bounds
        pixels = plan.out_hw[0] * plan.out_hw[1]
        g = grad.transpose(0, 2, 3, 1).reshape(-1, plan.filters)  # G (N·OH·OW, F); no copy when grad is channels-last
        if ctx.relu_output is not None:
            g = g * (ctx.relu_output > 0)
        want_x, want_w = ctx.needs_grad[0], ctx.needs_grad[1]
        want_b = len(ctx.needs_grad) > 2 and ctx.needs_grad[2]
        grad_x = np.empty_like(x, dtype=g.dtype) if want_x else None  # keeps x's layout (channels-last stays so)
        weights = plan.backward_weights(weight, np.result_type(x.dtype, weight.dtype, g.dtype))

        def backward_chunk(start_stop: tuple[int, int]) -> np.ndarray | None:
            """Writes the chunk's images of grad_x; returns its share of the weight gradient."""
            start, stop = start_stop
            return plan.backward_chunk(x[start:stop], g[start * pixels : stop * pixels], weights,
                                       grad_x[start:stop] if want_x else None, want_w)

        shares = parallel.map_chunks(backward_chunk, bounds)
        grad_w = None
        if want_w:  # added in chunk order, whichever thread computed which: the same bits every run
            grad_w = plan.weight_gradient(parallel.add_in_order(shares))
            grad_w = np.ascontiguousarray(grad_w).astype(weight.dtype, copy=False)
        grad_b = g.sum(axis=0) if want_b else None
        return (grad_x, grad_w, grad_b) if len(ctx.needs_grad) > 2 else (grad_x, grad_w)


def conv_padding(padding: IntPair | str, kernel: tuple[int, int], stride: tuple[int, int], size: tuple[int, int]):
    """Explicit ((top, bottom), (left, right)) padding for ``padding`` = int, pair or ``"same"``.

    ``"same"`` follows TensorFlow: output size ``ceil(size / stride)``, the
    odd pixel of padding going at the end (bottom/right).

    Args:
        padding: an int, a pair ``(PH, PW)`` (the same on both sides) or ``"same"``.
        kernel: ``(KH, KW)``.
        stride: ``(SH, SW)``.
        size: ``(H, W)`` of the input.

    Returns:
        ``((top, bottom), (left, right))``.
    """
    if isinstance(padding, str):
        if padding != "same":
            raise ValueError(f"padding must be an int, a pair or 'same', got {padding!r}")
        pads = []
        for n, k, s in zip(size, kernel, stride):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = int_pair(padding, "padding")
    return ((ph, ph), (pw, pw))


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
    stride = int_pair(stride, "stride")
    if min(stride) < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    pads = conv_padding(padding, weight.shape[2:], stride, x.shape[2:])
    for size, k, (before, after), axis in zip(x.shape[2:], weight.shape[2:], pads, ("height", "width")):
        if size + before + after < k:
            raise ValueError(f"conv2d input {axis} {size} (padded {size + before + after}) is smaller than the kernel {k}")
    return Conv2dFunction.apply(x, weight, bias, stride, pads, relu)  # a None bias is simply not an input
