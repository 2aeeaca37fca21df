"""Layers as functions: pooling, batch-norm, dropout, linear, PReLU, softmax (convolution: ``minimtl/conv/``).

Each is a ``Function`` with forward and backward side by side (or, where
that is simpler and just as fast, a composition of primitives from
``minimtl/ops.py``).  The modules in ``minimtl/nn.py`` hold the parameters
and call these.  Image tensors are NCHW: ``(batch, channels, height, width)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from minimtl import kernels, ops, parallel
from minimtl.autograd import Context, Function, Tensor, as_tensor, is_grad_enabled
from minimtl.checks import IntPair, check_float, check_image_batch
from minimtl.checks import int_pair as _pair
from minimtl.conv import conv2d, conv_padding  # the convolution lives in minimtl/conv/
from minimtl.kernels.compiled import is_channels_last


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


# ------------------------------------------------------------------ pooling
def pool_padding(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding: IntPair | str, ceil_mode: bool):
    """Explicit ((top, bottom), (left, right)) padding for max-pooling.

    ``ceil_mode=True`` (PyTorch, Caffe) rounds the output size up, adding the
    extra pixels at the end, but never starts a window inside the end padding.
    ``padding="same"`` is TensorFlow's: output ``ceil(size / stride)``, extra at the end.
    """
    if isinstance(padding, str):
        return conv_padding(padding, kernel, stride, size)
    pads = []
    for n, k, s, p in zip(size, kernel, stride, _pair(padding, "padding")):
        if 2 * p > k:
            raise ValueError(f"max_pool2d padding {p} must be at most half the kernel {k}")
        out = (n + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1  # the last window would start in the padding
        pads.append((p, max((out - 1) * s + k - n - p, p)))
    return tuple(pads)


class MaxPool2dFunction(Function):
    """Max over each window; the gradient goes to the winning pixel.

    Shapes: ``x (N, C, H, W)`` → ``(N, C, OH, OW)``; the backward keeps the
    flat index of every maximum (``indices``) and scatters into ``(N, C, H, W)``.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, kernel, stride, padding) -> np.ndarray:
        out, indices = kernels.max_pool2d_forward(x, kernel, stride, padding)
        ctx.save_for_backward(indices)
        ctx.x_shape = x.shape
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        (indices,) = ctx.saved
        return kernels.max_pool2d_backward(grad, indices, ctx.x_shape)


def max_pool2d(x: Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair | str = 0, ceil_mode: bool = False) -> Tensor:
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
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    if min(kernel) < 1 or min(stride) < 1:
        raise ValueError(f"kernel_size and stride must be at least 1, got {kernel} and {stride}")
    pads = pool_padding(x.shape[2:], kernel, stride, padding, ceil_mode)
    for size, k, (before, after) in zip(x.shape[2:], kernel, pads):
        if size + before + after < k:
            raise ValueError(f"max_pool2d input of size {tuple(x.shape[2:])} is smaller than the kernel {kernel}")
    if not (is_grad_enabled() and x.requires_grad):  # no backward: the winners need not be recorded
        return Tensor(max_pool2d_values(x.data, kernel, stride, pads), _copy=False)
    return MaxPool2dFunction.apply(x, kernel, stride, pads)


def max_pool2d_values(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding) -> np.ndarray:
    """Max-pooling without the winners' indices: ``x (N, C, H, W)`` → ``(N, C, OH, OW)`` in the layout of ``x``.

    The running maximum over the KH·KW strided views of ``x`` (``fmax``:
    like the kernels, a NaN never wins over a number), split over the batch on
    every core.  Inference needs only these values, and whole-array maxima
    run about four times faster than a kernel that also writes an index per
    output value.  ``padding`` as in ``kernels.max_pool2d_forward`` (-inf).
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


# ---------------------------------------------------------------- batch-norm
class BatchNormFunction(Function):
    """Normalise with the batch's own statistics (training mode), fused forward and backward.

    Shapes: ``x (N, C)`` or ``(N, C, H, W)``; ``weight``, ``bias`` ``(C,)``.
    Statistics are over every axis but 1.  With ``x̂ = (x − μ) / √(σ² + ε)``,
    ``y = weight · x̂ + bias``, and ``m`` values per channel, the backward is
    ``grad_x = weight / √(σ² + ε) · (g − mean(g) − x̂ · mean(g · x̂))``.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
                mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        """``mean``, ``var`` ``(C,)``: the batch statistics, computed once by ``batch_norm`` for this and the running averages."""
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        inv_std = 1.0 / np.sqrt(var.reshape(shape) + eps)
        centre = mean.reshape(shape)
        x_hat = np.empty_like(x, dtype=np.result_type(x.dtype, centre.dtype, inv_std.dtype))  # keeps x's layout
        out = np.empty_like(x_hat)

        def normalise(part) -> None:  # a slice of the batch: the passes run on every core (parallel.elementwise)
            np.subtract(x[part], centre, out=x_hat[part])
            x_hat[part] *= inv_std
            if weight is not None:
                np.multiply(x_hat[part], weight.reshape(shape), out=out[part])
            else:
                out[part] = x_hat[part]
            if bias is not None:
                out[part] += bias.reshape(shape)

        parallel.elementwise(normalise, x)
        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.axes, ctx.shape = axes, shape
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        x_hat, inv_std, weight = ctx.saved
        axes, shape = ctx.axes, ctx.shape
        scale = inv_std * weight.reshape(shape) if weight is not None else inv_std
        count = grad.size // grad.shape[1]
        # Σg and Σg·x̂ per channel, a share per slice of the batch, added in slice order (the same bits every run).
        shares = parallel.elementwise(lambda part: (grad[part].sum(axis=axes), (grad[part] * x_hat[part]).sum(axis=axes)),
                                      grad)
        sum_g = parallel.add_in_order([share[0] for share in shares])  # (C,)
        sum_gx = parallel.add_in_order([share[1] for share in shares])  # (C,)
        mean_g, mean_gx = (sum_g / count).reshape(shape), (sum_gx / count).reshape(shape)
        grad_x = np.empty_like(grad, dtype=np.result_type(grad.dtype, x_hat.dtype, scale.dtype))

        def combine(part) -> None:  # grad_x = scale · (g − mean(g) − x̂ · mean(g·x̂))
            np.subtract(grad[part], mean_g, out=grad_x[part])
            grad_x[part] -= x_hat[part] * mean_gx
            grad_x[part] *= scale

        parallel.elementwise(combine, grad)
        grads = [grad_x]
        if weight is not None:
            grads.append(sum_gx.astype(weight.dtype, copy=False))
        if len(ctx.needs_grad) > len(grads):
            grads.append(sum_g)
        return tuple(grads)


# When batch_norm(..., relu=True) runs as one op: "auto" (on a backend with
# compiled kernels, FAST_BATCH_NORM_RELU), "always" (tests), or "never".  The
# NumPy reference kernels are written to be read, with float64 sums: on the
# numpy backend they ran 1.7x slower than the two ops composed, so that
# backend keeps the two ops.
FUSE_BATCH_NORM_RELU = "auto"


def fuses_batch_norm_relu(x: np.ndarray) -> bool:
    """Whether training-mode ``batch_norm(x, relu=True)`` runs as ``BatchNormReLUFunction`` (``FUSE_BATCH_NORM_RELU``)."""
    if FUSE_BATCH_NORM_RELU not in ("auto", "always", "never"):
        raise ValueError(f"FUSE_BATCH_NORM_RELU must be 'auto', 'always' or 'never', got {FUSE_BATCH_NORM_RELU!r}")
    if FUSE_BATCH_NORM_RELU == "never" or pixel_rows(x) is None:
        return False
    return FUSE_BATCH_NORM_RELU == "always" or kernels.fast_batch_norm_relu()


def pixel_rows(x: np.ndarray) -> np.ndarray | None:
    """``x (N, C)`` as itself, or channels-last ``x (N, C, H, W)`` as its ``(N·H·W, C)`` view; None otherwise."""
    if x.ndim == 2 and x.flags.c_contiguous:
        return x
    if x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous:
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
    return None


class BatchNormReLUFunction(Function):
    """``relu(batch_norm(x))`` in training mode as one op: two kernels forward, two backward.

    Shapes: ``x (N, C)`` or channels-last ``(N, C, H, W)``, seen as pixel rows
    ``(M, C)`` (``pixel_rows``); ``weight``, ``bias`` ``(C,)``.  Forward:
    ``y = max(0, x̂ · weight + bias)`` with ``x̂ = (x − μ) / √(σ² + ε)``
    (``kernels.batch_norm_relu_forward``).  Backward, with the ReLU's mask
    ``m = [y > 0]`` and ``g' = g · m``, it is ``BatchNormFunction``'s backward
    of ``g'``: ``grad_x = weight / √(σ² + ε) · (g' − mean(g') − x̂ · mean(g' · x̂))``,
    ``grad_weight = Σ g' · x̂``, ``grad_bias = Σ g'``.

    The two ops composed pass over an activation about 18 times (NumPy
    reductions, temporaries for ``x − μ``, ``g · x̂`` and the mask, ``x̂``
    stored).  Here the forward writes ``y`` in one pass, ``x̂`` is recomputed
    from ``x`` instead of stored, and the backward reads ``g``, ``x`` and
    ``y`` twice: once for the two channel sums (``kernels.batch_norm_relu_sums``),
    once for ``grad_x`` (``kernels.batch_norm_relu_backward``).  Slices of
    the rows run on every core; the sums' shares are added in slice order.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
                mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        x_rows = pixel_rows(x)
        rows, channels = x_rows.shape
        inv_std = (1.0 / np.sqrt(var.astype(np.float64) + eps)).astype(x.dtype)
        scale = inv_std * weight if weight is not None else inv_std  # y = relu((x − μ) · scale + bias)
        shift = bias if bias is not None else np.zeros(channels, dtype=x.dtype)
        out = np.empty((x.shape[0],) + x.shape[2:] + (channels,), dtype=x.dtype)  # channels-last memory
        out_rows = out.reshape(rows, channels)

        def forward_rows(part) -> None:  # written in place: a slice of rows of a C-contiguous array is one
            kernels.batch_norm_relu_forward(x_rows[part], mean, scale, shift, out=out_rows[part])

        parallel.elementwise(forward_rows, x_rows)
        ctx.save_for_backward(x, out, weight)
        ctx.mean, ctx.inv_std = mean.astype(x.dtype), inv_std
        return out if x.ndim == 2 else out.transpose(0, 3, 1, 2)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        x, out, weight = ctx.saved
        mean, inv_std = ctx.mean, ctx.inv_std
        x_rows, y_rows = pixel_rows(x), out.reshape(-1, out.shape[-1])
        rows, channels = x_rows.shape
        g_rows = pixel_rows(grad)
        if g_rows is None:  # a gradient in another layout: one copy into pixel rows
            g_rows = np.ascontiguousarray(grad.transpose(0, 2, 3, 1) if grad.ndim == 4 else grad).reshape(rows, channels)
        g_rows = g_rows.astype(x.dtype, copy=False)
        shares = parallel.elementwise(
            lambda part: kernels.batch_norm_relu_sums(g_rows[part], x_rows[part], y_rows[part], mean, inv_std), x_rows)
        sum_g = parallel.add_in_order([share[0] for share in shares])  # (C,) Σ g', float64
        sum_gx = parallel.add_in_order([share[1] for share in shares])  # (C,) Σ g' · x̂
        mean_g, mean_gx = (sum_g / rows).astype(x.dtype), (sum_gx / rows).astype(x.dtype)
        scale = (inv_std * weight if weight is not None else inv_std).astype(x.dtype)
        grad_x = np.empty((x.shape[0],) + x.shape[2:] + (channels,), dtype=x.dtype)
        grad_rows = grad_x.reshape(rows, channels)

        def combine(part) -> None:
            kernels.batch_norm_relu_backward(g_rows[part], x_rows[part], y_rows[part], mean, inv_std, mean_g, mean_gx,
                                             scale, out=grad_rows[part])

        parallel.elementwise(combine, x_rows)
        grads = [grad_x if x.ndim == 2 else grad_x.transpose(0, 3, 1, 2)]
        if weight is not None:
            grads.append(sum_gx.astype(weight.dtype))
        if len(ctx.needs_grad) > len(grads):
            grads.append(sum_g.astype(x.dtype))
        return tuple(grads)


def channel_mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased) variance of ``x (N, C)`` or ``(N, C, H, W)`` per channel, each ``(C,)``.

    With a compiled backend (``kernels.fast_channel_sums()``) and pixel rows
    (``pixel_rows``): one pass of ``kernels.channel_sums`` in float64 around
    a shift, the first row of ``x``, which keeps ``Σd²/M − (Σd/M)²`` from
    cancelling.  Otherwise two NumPy passes (the mean, then the squared
    deviations from it: no cancellation in float32).  Either way the pass is
    split over the batch on every core and the shares are added in order.
    Equals ``x.mean(axis=axes), x.var(axis=axes)`` up to rounding.
    """
    rows = pixel_rows(x)
    if rows is not None and len(rows) and kernels.fast_channel_sums():
        shift = rows[0].copy()
        shares = parallel.elementwise(lambda part: kernels.channel_sums(rows[part], shift), rows)
        mean_d = parallel.add_in_order([share[0] for share in shares]) / len(rows)
        squares = parallel.add_in_order([share[1] for share in shares]) / len(rows)
        var = np.maximum(squares - mean_d * mean_d, 0.0)
        return (shift + mean_d).astype(x.dtype), var.astype(x.dtype)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    count = x.size // x.shape[1]
    mean = parallel.add_in_order(parallel.elementwise(lambda part: x[part].sum(axis=axes), x)) / count
    centre = mean.reshape(shape)

    def squares(part):
        deviation = x[part] - centre
        deviation *= deviation
        return deviation.sum(axis=axes)

    var = parallel.add_in_order(parallel.elementwise(squares, x))
    return mean.astype(x.dtype, copy=False), (var / count).astype(x.dtype, copy=False)


def batch_norm(
    x: Tensor,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    relu: bool = False,
) -> Tensor:
    """Batch normalisation over axis 1 of ``x (N, C)`` or ``x (N, C, H, W)``.

    In training, normalises with the batch mean and (biased) variance and
    updates ``running_mean``/``running_var`` in place:
    ``running = (1 − momentum) · running + momentum · batch`` (the running
    variance uses the unbiased batch variance, as PyTorch does).  In evaluation,
    normalises with the running statistics, a fixed affine map.
    ``weight`` (the scale γ) and ``bias`` (the shift β) are ``(C,)`` or None.
    ``relu=True`` returns ``relu(batch_norm(x))``; in training, on ``(N, C)``
    or channels-last input and a compiled backend, as one op
    (``BatchNormReLUFunction``, ``fuses_batch_norm_relu``).
    """
    check_float(x, "batch_norm input")
    if x.ndim not in (2, 4):
        raise ValueError(f"batch_norm expects (N, C) or (N, C, H, W), got shape {tuple(x.shape)}")
    channels = x.shape[1]
    for name, value in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if value is not None and value.shape != (channels,):
            raise ValueError(f"batch_norm {name} has shape {tuple(value.shape)}, expected ({channels},) for input {tuple(x.shape)}")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        count = x.size // channels
        if count < 2:
            raise ValueError(f"batch_norm in training needs more than one value per channel, got input {tuple(x.shape)}")
        mean, var = channel_mean_var(x.data)
        # The kernels work in one dtype: a γ or β of another dtype than x takes the two ops instead.
        if relu and fuses_batch_norm_relu(x.data) and all(t is None or t.dtype == x.dtype for t in (weight, bias)):
            out = BatchNormReLUFunction.apply(x, weight, bias, eps, mean, var)  # relu(batch_norm(x)) as one op
        else:
            out = BatchNormFunction.apply(x, weight, bias, eps, mean, var)  # a None weight or bias is simply not an input
            out = ops.relu(out) if relu else out
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * count / (count - 1)
        return out
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm in evaluation mode needs running_mean and running_var")
    inv_std = (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(x.dtype)  # as batch_norm_affine does
    if not (is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))):
        # Inference: the same affine map, as one pass on every core: y = x · a + b
        # (tests/test_parallel.py checks it against the lines below).
        a, b = batch_norm_affine(running_mean, running_var, weight, bias, eps)
        a, b = a.astype(x.dtype).reshape(shape), b.astype(x.dtype).reshape(shape)
        out_data = np.empty_like(x.data)

        def affine(part) -> None:
            np.multiply(x.data[part], a, out=out_data[part])
            out_data[part] += b

        parallel.elementwise(affine, x.data)
        out = Tensor(out_data, _copy=False)
        return ops.relu(out) if relu else out
    scale = Tensor(inv_std.reshape(shape), _copy=False)
    out = (x - Tensor(running_mean.astype(x.dtype).reshape(shape), _copy=False)) * scale
    if weight is not None:
        out = out * ops.reshape(weight, shape)
    if bias is not None:
        out = out + ops.reshape(bias, shape)
    return ops.relu(out) if relu else out


def batch_norm_affine(running_mean: np.ndarray, running_var: np.ndarray, weight: Tensor | None, bias: Tensor | None,
                      eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation-mode batch-norm as ``y = x · a + b`` per channel: ``a = weight / √(var + ε)``, ``b = bias − mean · a``.

    ``(C,)`` each, in float64 (callers cast); a missing ``weight`` is 1 and a missing ``bias`` 0.
    """
    a = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    if weight is not None:
        a = a * weight.data
    b = -running_mean * a
    if bias is not None:
        b = b + bias.data
    return a, b


def fold_batch_norm(weight: np.ndarray, bias: np.ndarray | None, running_mean: np.ndarray, running_var: np.ndarray,
                    norm_weight: Tensor | None, norm_bias: Tensor | None, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The convolution (or linear layer) that computes ``batch_norm(conv(x))`` in evaluation mode in one step.

    ``weight (F, ...)`` and ``bias (F,)`` (or None) of the layer; the other
    arguments are those of the batch-norm after it.  With ``y = x · a + b`` the
    batch-norm's affine map (``batch_norm_affine``), ``a · (W ⋆ x + c) + b``
    is ``(a·W) ⋆ x + (a·c + b)``: each filter scaled by its channel's ``a``.
    Returns ``(weight', bias')`` in the dtype of ``weight``.  Only valid with
    running statistics (evaluation), never in training, where the statistics
    come from the batch.
    """
    a, b = batch_norm_affine(running_mean, running_var, norm_weight, norm_bias, eps)
    folded_bias = b + (a * bias if bias is not None else 0.0)
    # One pass over the weights in their own dtype (this runs on every inference call).
    folded_weight = weight * a.astype(weight.dtype).reshape((-1,) + (1,) * (weight.ndim - 1))
    return folded_weight, folded_bias.astype(weight.dtype)


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

