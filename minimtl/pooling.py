"""2-D max-pooling: ``max_pool2d`` and its ``Function``, forward and backward side by side.

Each output value is the maximum of one ``KH × KW`` window of the input; the
backward sends each upstream gradient to the window's winner (the pixel that
held the maximum).  Images are NCHW: ``(batch, channels, height, width)``.
BKNet pools 2 × 2 with stride 2 after each of its four blocks, and Config C
pools the first block's output 8 × 8 (Section 3.2); MTCNN pools 3 × 3 with
stride 2 and TensorFlow's "same" padding.

The values never depend on whether a backward will follow.  Only what is kept
for the backward does: ``MaxPool2dFunction`` records the winners' indices when
its output needs a gradient, and otherwise takes the index-free computation
``max_pool2d_values`` (about four times faster; the same values, tested in
``tests/test_max_pool2d.py``).
"""
from __future__ import annotations

import numpy as np

from minimtl import kernels, parallel
from minimtl.autograd import Context, Function, Tensor
from minimtl.checks import IntPair, check_image_batch, int_pair
from minimtl.conv import conv_padding
from minimtl.kernels.compiled import is_channels_last


def pool_padding(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding: IntPair | str,
                 ceil_mode: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Explicit ((top, bottom), (left, right)) padding for max-pooling.

    ``ceil_mode=True`` (PyTorch, Caffe) rounds the output size up, adding the
    extra pixels at the end, but never starts a window inside the end padding.
    ``padding="same"`` is TensorFlow's: output ``ceil(size / stride)``, extra at the end.

    Args:
        size: ``(H, W)`` of the input.
        kernel: ``(KH, KW)``.
        stride: ``(SH, SW)``.
        padding: int, pair, or ``"same"``.
        ceil_mode: round the output size up instead of down.

    Returns:
        ``((top, bottom), (left, right))``.
    """
    if isinstance(padding, str):  # "same" as the convolution has it
        return conv_padding(padding, kernel, stride, size)
    pads = []
    for n, k, s, p in zip(size, kernel, stride, int_pair(padding, "padding")):
        if 2 * p > k:
            raise ValueError(f"max_pool2d padding {p} must be at most half the kernel {k}")
        out = (n + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1  # the last window would start in the padding
        pads.append((p, max((out - 1) * s + k - n - p, p)))
    return tuple(pads)


class MaxPool2dFunction(Function):
    """Max over each window; the gradient goes to the winning pixel.

    Shapes: ``x (N, C, H, W)`` → ``(N, C, OH, OW)``, in the memory layout of ``x``.

    Forward: ``y[n, c, i, j] = max over the window (i·SH + a, j·SW + b), 0 ≤ a < KH, 0 ≤ b < KW``
    of the padded ``x`` (padding is −∞; a NaN never wins over a number).
    Backward: ``grad_x`` is zero except at each window's winner, which
    receives that window's upstream gradient (added up where windows overlap).

    What the forward keeps is its one choice: when a backward can follow
    (``ctx.records``), it runs ``kernels.max_pool2d_forward``, which also
    writes the flat index of every winner, and keeps those indices for
    ``kernels.max_pool2d_backward``.  When none can (``no_grad``, or an input
    that needs no gradient), nothing is kept and the values come from
    ``max_pool2d_values``, which writes no indices.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, kernel, stride, padding) -> np.ndarray:
        if not ctx.records:
            return max_pool2d_values(x, kernel, stride, padding)
        out, indices = kernels.max_pool2d_forward(x, kernel, stride, padding)
        ctx.save_for_backward(indices)
        ctx.x_shape = x.shape
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (indices,) = ctx.saved
        return kernels.max_pool2d_backward(grad, indices, ctx.x_shape)


def max_pool2d(x: Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair | str = 0,
               ceil_mode: bool = False) -> Tensor:
    """2-D max pooling.

    Args:
        x: ``(N, C, H, W)``.
        kernel_size: int or (KH, KW).
        stride: int or pair; defaults to ``kernel_size``.
        padding: int or pair (padded with -inf), or ``"same"`` (TensorFlow's, as MTCNN uses).
        ceil_mode: round the output size up instead of down.

    Returns:
        ``(N, C, OH, OW)``.
    """
    check_image_batch(x, None, "max_pool2d input")
    kernel = int_pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else int_pair(stride, "stride")
    if min(kernel) < 1 or min(stride) < 1:
        raise ValueError(f"kernel_size and stride must be at least 1, got {kernel} and {stride}")
    pads = pool_padding(x.shape[2:], kernel, stride, padding, ceil_mode)
    for size, k, (before, after) in zip(x.shape[2:], kernel, pads):
        if size + before + after < k:
            raise ValueError(f"max_pool2d input of size {tuple(x.shape[2:])} is smaller than the kernel {kernel}")
    return MaxPool2dFunction.apply(x, kernel, stride, pads)


def max_pool2d_values(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding) -> np.ndarray:
    """Max-pooling without the winners' indices: ``x (N, C, H, W)`` → ``(N, C, OH, OW)`` in the layout of ``x``.

    The running maximum over the KH·KW strided views of ``x`` (``fmax``:
    like the kernels, a NaN never wins over a number), split over the batch on
    every core.  Inference needs only these values, and whole-array maxima
    run about four times faster than a kernel that also writes an index per
    output value.  ``padding`` as in ``kernels.max_pool2d_forward`` (-inf).

    Args:
        x: ``(N, C, H, W)``.
        kernel: ``(KH, KW)``.
        stride: ``(SH, SW)``.
        padding: ``((top, bottom), (left, right))``, explicit (``pool_padding``).

    Returns:
        ``(N, C, OH, OW)``.
    """
    (kh, kw), (sh, sw), ((top, bottom), (left, right)) = kernel, stride, padding
    n, c, h, w = x.shape
    oh = kernels.numpy_backend.output_size(h, kh, sh, top, bottom)
    ow = kernels.numpy_backend.output_size(w, kw, sw, left, right)
    channels_last = is_channels_last(x)
    if top or bottom or left or right:
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    out = np.empty((n, oh, ow, c), dtype=x.dtype).transpose(0, 3, 1, 2) if channels_last else np.empty((n, c, oh, ow), x.dtype)

    def pool(part) -> None:
        target = out[part]
        target[...] = -np.inf
        for i in range(kh):
            for j in range(kw):
                np.fmax(target, x[part, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw], out=target)

    parallel.elementwise(pool, x)
    return out
