"""Batch normalisation (Ioffe and Szegedy, 2015): ``batch_norm`` and its three computations.

Over axis 1 (the channels) of ``x (N, C)`` or ``x (N, C, H, W)``, with the
statistics taken over every other axis (``M = N·H·W`` values per channel):

* training: ``x̂ = (x − μ_B) / √(σ²_B + ε)``, ``y = γ · x̂ + β``, with the batch's
  own mean ``μ_B`` and biased variance ``σ²_B``; the running statistics move
  towards them (``running = (1 − momentum) · running + momentum · batch``);
* evaluation: the same with the running statistics, which makes it a fixed
  affine map ``y = x · a + b`` per channel, ``a = γ / √(running_var + ε)``,
  ``b = β − running_mean · a`` (``batch_norm_affine``).

BKNet puts one after every convolution and after the first two fully
connected layers of each head (Section 3.2), always followed by a ReLU, and
learns the shift β but no scale γ (``batch_norm_scale=False``).

``batch_norm`` runs one of three computations, chosen in one place,
``choose_path``:

* ``"composed"``: ``BatchNormFunction`` (training), then ``ops.relu`` if asked;
* ``"fused relu"``: ``BatchNormReLUFunction``, ``relu(batch_norm(x))`` in
  training as one op over pixel rows with the compiled kernels;
* ``"evaluation affine"``: ``BatchNormAffineFunction``, ``y = x · a + b``,
  then ``ops.relu`` if asked.  The same with or without ``no_grad``.

``settings(fuse_relu=...)`` switches the fused op on everywhere, or off.
For inference the affine map is folded into the convolution before it
(``fold_batch_norm``; ``BKNet.fuse_for_inference``).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import numpy as np

from minimtl import kernels, ops, parallel
from minimtl.autograd import Context, Function, Tensor
from minimtl.checks import check_float

COMPOSED, FUSED_RELU, EVALUATION_AFFINE = "composed", "fused relu", "evaluation affine"
"""The names of ``batch_norm``'s three computations (``choose_path``)."""

FUSE_RELU_CHOICES = ("auto", "always", "never")

# The choice in force, per thread and contextvars context, as minimtl.conv keeps its settings.
_FUSE_RELU = contextvars.ContextVar("minimtl_batch_norm_fuse_relu", default="auto")


@contextlib.contextmanager
def settings(fuse_relu: str | None = None) -> Iterator[None]:
    """Within the ``with`` block, choose when training-mode ``batch_norm(x, relu=True)`` runs as one op.

    Args:
        fuse_relu: ``"auto"`` (the default: wherever the backend has compiled
            kernels, ``kernels.fast_batch_norm_relu()``), ``"always"``
            (wherever the input's layout allows: the tests run the numpy
            backend's reference kernels this way) or ``"never"``.  None keeps
            the current choice.

    The previous choice is restored when the block ends, even on an error.
    Blocks nest; each thread (and each ``contextvars`` context) has its own,
    like ``minimtl.conv.settings``.
    """
    if fuse_relu is not None and fuse_relu not in FUSE_RELU_CHOICES:
        raise ValueError(f"fuse_relu must be 'auto', 'always' or 'never', got {fuse_relu!r}")
    token = _FUSE_RELU.set(_FUSE_RELU.get() if fuse_relu is None else fuse_relu)
    try:
        yield
    finally:
        _FUSE_RELU.reset(token)


def choose_path(x: np.ndarray, training: bool, relu: bool, weight: Tensor | None = None,
                bias: Tensor | None = None) -> str:
    """Which computation ``batch_norm`` runs for input ``x``, and why: one of ``COMPOSED``, ``FUSED_RELU``, ``EVALUATION_AFFINE``.

    * Not ``training``: ``EVALUATION_AFFINE``.  The running statistics make
      batch-norm a fixed affine map, one pass forward and one backward,
      whatever the grad mode.
    * Training with ``relu=True``: ``FUSED_RELU`` when every condition holds:
      ``settings`` does not say ``"never"``; ``x`` is ``(N, C)`` or
      channels-last, so that it reads as pixel rows of C values
      (``pixel_rows``: the kernels walk those rows); ``weight`` and ``bias``
      have the dtype of ``x`` (the kernels work in one dtype); and
      ``settings`` says ``"always"`` or the backend has compiled kernels
      (``kernels.fast_batch_norm_relu()``: the NumPy reference kernels are
      written to be read, with float64 sums, and ran 1.7× slower than the two
      ops composed, so the numpy backend keeps the two ops).
    * Otherwise ``COMPOSED``.

    Args:
        x: the input's array, ``(N, C)`` or ``(N, C, H, W)``.
        training: batch statistics (True) or running statistics.
        relu: whether a ReLU follows.
        weight: γ ``(C,)`` or None.
        bias: β ``(C,)`` or None.

    Returns:
        The name of the computation.
    """
    if not training:
        return EVALUATION_AFFINE
    fuse = _FUSE_RELU.get()
    if not relu or fuse == "never" or pixel_rows(x) is None:
        return COMPOSED
    if any(t is not None and t.dtype != x.dtype for t in (weight, bias)):
        return COMPOSED
    return FUSED_RELU if fuse == "always" or kernels.fast_batch_norm_relu() else COMPOSED


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
    The computation is chosen by ``choose_path``.

    Args:
        x: ``(N, C)`` or ``(N, C, H, W)``.
        running_mean: ``(C,)``, updated in place in training; None to keep no statistics (training only).
        running_var: ``(C,)``, likewise.
        weight: the scale γ ``(C,)``, or None for none.
        bias: the shift β ``(C,)``, or None for none.
        training: normalise with the batch's statistics (True) or the running ones.
        momentum: weight of the batch in the running statistics.
        eps: ε, added to the variance.
        relu: return ``relu(batch_norm(x))``.

    Returns:
        The same shape (and memory layout) as ``x``.
    """
    check_float(x, "batch_norm input")
    if x.ndim not in (2, 4):
        raise ValueError(f"batch_norm expects (N, C) or (N, C, H, W), got shape {tuple(x.shape)}")
    channels = x.shape[1]
    for name, value in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if value is not None and value.shape != (channels,):
            raise ValueError(f"batch_norm {name} has shape {tuple(value.shape)}, expected ({channels},) "
                             f"for input {tuple(x.shape)}")
    path = choose_path(x.data, training, relu, weight, bias)
    if path == EVALUATION_AFFINE:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in evaluation mode needs running_mean and running_var")
        out = BatchNormAffineFunction.apply(x, weight, bias, running_mean, running_var, eps)
        return ops.relu(out) if relu else out
    count = x.size // channels
    if count < 2:
        raise ValueError(f"batch_norm in training needs more than one value per channel, got input {tuple(x.shape)}")
    mean, var = channel_mean_var(x.data)
    if path == FUSED_RELU:
        out = BatchNormReLUFunction.apply(x, weight, bias, eps, mean, var)
    else:
        out = BatchNormFunction.apply(x, weight, bias, eps, mean, var)  # a None weight or bias is simply not an input
        out = ops.relu(out) if relu else out
    if running_mean is not None:
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * count / (count - 1)
    return out


# ------------------------------------------------------------------ training
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


class BatchNormFunction(Function):
    """Normalise with the batch's own statistics (training mode), fused forward and backward.

    Shapes: ``x (N, C)`` or ``(N, C, H, W)``; ``weight``, ``bias`` ``(C,)``.
    Statistics are over every axis but 1.  With ``x̂ = (x − μ) / √(σ² + ε)``,
    ``y = weight · x̂ + bias``, and ``m`` values per channel, the backward is
    ``grad_x = weight / √(σ² + ε) · (g − mean(g) − x̂ · mean(g · x̂))``,
    ``grad_weight = Σ g · x̂``, ``grad_bias = Σ g``.
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


# ---------------------------------------------------------------- evaluation
def _array(value: Tensor | np.ndarray | None) -> np.ndarray | None:
    return value.data if isinstance(value, Tensor) else value


def batch_norm_affine(running_mean: np.ndarray, running_var: np.ndarray, weight: Tensor | np.ndarray | None,
                      bias: Tensor | np.ndarray | None, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation-mode batch-norm as ``y = x · a + b`` per channel: ``a = weight / √(var + ε)``, ``b = bias − mean · a``.

    Args:
        running_mean: ``(C,)``.
        running_var: ``(C,)``.
        weight: γ ``(C,)`` (a Tensor or an array), or None for 1.
        bias: β ``(C,)``, or None for 0.
        eps: ε.

    Returns:
        ``(a, b)``, ``(C,)`` each, in float64 (callers cast).
    """
    a = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    if weight is not None:
        a = a * _array(weight)
    b = -running_mean * a
    if bias is not None:
        b = b + _array(bias)
    return a, b


class BatchNormAffineFunction(Function):
    """Evaluation-mode batch-norm, the fixed affine map ``y = x · a + b`` per channel (``batch_norm_affine``).

    Shapes: ``x (N, C)`` or ``(N, C, H, W)``; ``weight`` (γ), ``bias`` (β)
    ``(C,)`` or None; ``running_mean``, ``running_var`` ``(C,)``, constants;
    ``y`` the shape and memory layout of ``x``.  Forward: one pass, split
    over the batch on every core.  Backward, with ``x̂ = (x − running_mean) / √(running_var + ε)``
    and sums over every axis but 1: ``grad_x = g · a``,
    ``grad_weight = Σ g · x̂``, ``grad_bias = Σ g``.  The same computation
    whether or not a backward follows (``no_grad``).
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                running_mean: np.ndarray, running_var: np.ndarray, eps: float) -> np.ndarray:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        a, b = batch_norm_affine(running_mean, running_var, weight, bias, eps)
        a, b = a.astype(x.dtype).reshape(shape), b.astype(x.dtype).reshape(shape)
        out = np.empty_like(x)

        def affine(part) -> None:
            np.multiply(x[part], a, out=out[part])
            out[part] += b

        parallel.elementwise(affine, x)
        ctx.save_for_backward(x, a)
        ctx.weight, ctx.bias = weight, bias
        ctx.running_mean, ctx.running_var, ctx.eps = running_mean, running_var, eps
        return out

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        x, a = ctx.saved
        axes = (0,) + tuple(range(2, x.ndim))
        needs = iter(ctx.needs_grad)  # x, then weight and bias where they are inputs
        grads = [grad * a if next(needs) else None]
        if ctx.weight is not None:
            if next(needs):
                shape = a.shape
                inv_std = (1.0 / np.sqrt(ctx.running_var.astype(np.float64) + ctx.eps)).astype(x.dtype).reshape(shape)
                x_hat = (x - ctx.running_mean.astype(x.dtype).reshape(shape)) * inv_std
                grads.append((grad * x_hat).sum(axis=axes).astype(ctx.weight.dtype, copy=False))
            else:
                grads.append(None)
        if ctx.bias is not None:
            grads.append(grad.sum(axis=axes).astype(ctx.bias.dtype, copy=False) if next(needs) else None)
        return tuple(grads)


def fold_batch_norm(weight: np.ndarray, bias: np.ndarray | None, running_mean: np.ndarray, running_var: np.ndarray,
                    norm_weight: Tensor | None, norm_bias: Tensor | None, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The convolution (or linear layer) that computes ``batch_norm(conv(x))`` in evaluation mode in one step.

    With ``y = x · a + b`` the batch-norm's affine map (``batch_norm_affine``),
    ``a · (W ⋆ x + c) + b`` is ``(a·W) ⋆ x + (a·c + b)``: each filter scaled
    by its channel's ``a``.  Only valid with running statistics (evaluation),
    never in training, where the statistics come from the batch.

    Args:
        weight: the layer's ``(F, ...)``.
        bias: the layer's ``(F,)``, or None.
        running_mean: the batch-norm's ``(F,)``.
        running_var: the batch-norm's ``(F,)``.
        norm_weight: the batch-norm's γ ``(F,)``, or None.
        norm_bias: the batch-norm's β ``(F,)``, or None.
        eps: the batch-norm's ε.

    Returns:
        ``(weight', bias')`` in the dtype of ``weight``.
    """
    a, b = batch_norm_affine(running_mean, running_var, norm_weight, norm_bias, eps)
    folded_bias = b + (a * bias if bias is not None else 0.0)
    folded_weight = weight * a.astype(weight.dtype).reshape((-1,) + (1,) * (weight.ndim - 1))
    return folded_weight, folded_bias.astype(weight.dtype)
