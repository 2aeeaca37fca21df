"""Reference kernels in plain NumPy: the source of truth every fast backend is tested against.

These kernels carry all the heavy lifting of convolution and pooling:

``im2col(x, kernel, stride, padding)``
    unfolds every receptive field of ``x (N, C, H, W)`` into a column of
    ``cols (C·KH·KW, N·OH·OW)``.  Row ``c·KH·KW + i·KW + j`` holds input channel
    ``c`` at kernel offset ``(i, j)``; column ``n·OH·OW + oh·OW + ow`` is output
    pixel ``(oh, ow)`` of image ``n``.  A convolution is then one matrix
    product: ``weight.reshape(F, -1) @ cols``.
``col2im(cols, x_shape, kernel, stride, padding)``
    the adjoint of ``im2col``: adds every column back onto the pixels it came
    from (overlapping windows add up).  It is the backward of ``im2col``.
``max_pool2d_forward(x, kernel, stride, padding)``
    → ``(out (N, C, OH, OW), indices (N, C, OH, OW) int64)`` where ``indices``
    is the flat position ``h·W + w`` of each maximum inside its input plane.
``max_pool2d_backward(grad_out, indices, x_shape)``
    sends each output gradient to the input pixel that won its window.
``shifted_matmul(rows, weights, offsets, count)`` and ``shifted_matmul_grad_weights(rows, grad, offsets)``
    a stride-1 convolution without a column matrix: a sum of matrix products
    of row blocks, each block shifted by one kernel tap (used by
    ``minimtl/conv/shifted.py`` where a layer suits it).
``winograd_input_transform``, ``winograd_output_transform`` and their gradients
    ``winograd_input_transform_grad``, ``winograd_output_transform_grad``:
    the tile transforms of a 3×3, stride-1 convolution by Winograd's minimal
    filtering F(m×m, 3×3) with ``tile`` m = 2 or 4 (``WINOGRAD_TILES``): 16
    multiplications for 2×2 outputs instead of 36, or 36 for 4×4 instead of
    144 (used by ``minimtl/conv/winograd.py`` where a layer suits it).
``channel_sums(x_rows, shift)``
    per channel of pixel rows, in float64: ``Σ (x − shift)`` and
    ``Σ (x − shift)²``, from which batch-norm's mean and variance follow
    (``batch_norm.channel_mean_var``).
``batch_norm_relu_forward``, ``batch_norm_relu_sums``, ``batch_norm_relu_backward``
    training-mode ``relu(batch_norm(x))`` on pixel rows ``(M, C)``: the
    forward, the two per-channel sums of its backward, and the input gradient
    (used by ``batch_norm.BatchNormReLUFunction``).

Conventions shared by every backend: ``kernel = (KH, KW)``, ``stride = (SH, SW)``,
``padding = ((top, bottom), (left, right))`` in pixels (asymmetric padding lets
callers express PyTorch's ``ceil_mode`` and TensorFlow's ``"same"``);
``OH = (H + top + bottom - KH) // SH + 1`` and likewise ``OW``.  Convolution
pads with zeros, pooling with -inf.
"""
from __future__ import annotations

import numpy as np

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]


def output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    """Number of window positions along one axis: ``(size + pads - kernel) // stride + 1``."""
    return (size + pad_before + pad_after - kernel) // stride + 1


def _window(padded: np.ndarray, i: int, j: int, stride: Pair, out_hw: Pair) -> np.ndarray:
    """The (N, C, OH, OW) view of ``padded`` seen by kernel offset (i, j) at every output pixel."""
    (sh, sw), (oh, ow) = stride, out_hw
    return padded[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]


def im2col(x: np.ndarray, kernel: Pair, stride: Pair, padding: Padding) -> np.ndarray:
    """Unfold ``x (N, C, H, W)`` into ``cols (C·KH·KW, N·OH·OW)`` (layout in the module docstring)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = kernel, stride, padding
    oh, ow = output_size(h, kh, sh, pt, pb), output_size(w, kw, sw, pl, pr)
    padded = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))) if (pt or pb or pl or pr) else x
    cols = np.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = _window(padded, i, j, stride, (oh, ow)).transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * oh * ow)


def col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], kernel: Pair, stride: Pair, padding: Padding) -> np.ndarray:
    """Fold ``cols (C·KH·KW, N·OH·OW)`` back to an ``(N, C, H, W)`` array, adding overlaps."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = kernel, stride, padding
    oh, ow = output_size(h, kh, sh, pt, pb), output_size(w, kw, sw, pl, pr)
    padded = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=cols.dtype)
    cols6 = cols.reshape(c, kh, kw, n, oh, ow)
    for i in range(kh):
        for j in range(kw):
            _window(padded, i, j, stride, (oh, ow))[...] += cols6[:, i, j].transpose(1, 0, 2, 3)
    return padded[:, :, pt : pt + h, pl : pl + w]


def max_pool2d_forward(x: np.ndarray, kernel: Pair, stride: Pair, padding: Padding) -> tuple[np.ndarray, np.ndarray]:
    """Max over each window of ``x (N, C, H, W)`` → ``(out (N, C, OH, OW), indices (N, C, OH, OW) int64)``."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = kernel, stride, padding
    oh, ow = output_size(h, kh, sh, pt, pb), output_size(w, kw, sw, pl, pr)
    padded = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-np.inf) if (pt or pb or pl or pr) else x
    out = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    best = np.zeros((n, c, oh, ow), dtype=np.int64)  # winning offset i·KW + j; the first maximum wins ties
    for i in range(kh):
        for j in range(kw):
            candidate = _window(padded, i, j, stride, (oh, ow))
            better = candidate > out
            out = np.where(better, candidate, out)
            best[better] = i * kw + j
    rows = np.arange(oh).reshape(-1, 1) * sh + best // kw - pt
    columns = np.arange(ow) * sw + best % kw - pl
    return out, rows * w + columns


def max_pool2d_backward(grad_out: np.ndarray, indices: np.ndarray, x_shape: tuple[int, int, int, int]) -> np.ndarray:
    """Scatter ``grad_out (N, C, OH, OW)`` onto the winners ``indices`` → ``grad_x (N, C, H, W)``."""
    n, c, h, w = x_shape
    planes = np.arange(n * c).reshape(n, c, 1, 1) * (h * w)
    flat = np.bincount((planes + indices).ravel(), weights=grad_out.ravel(), minlength=n * c * h * w)
    return flat.astype(grad_out.dtype, copy=False).reshape(x_shape)


def shifted_matmul(rows: np.ndarray, weights: np.ndarray, offsets, count: int) -> np.ndarray:
    """``out (count, F)`` with ``out[p] = Σ_k rows[p + offsets[k]] @ weights[k]``.

    ``rows (R, C)``, ``weights (K, C, F)``, ``offsets`` K non-negative ints
    with ``count + max(offsets) <= R``.  A stride-1 convolution is this sum
    when ``rows`` are the pixels of a zero-padded image, one row per pixel, and
    ``offsets[k]`` is how many rows away kernel tap ``k`` reads (see
    ``minimtl/conv/shifted.py``): nine products of shifted row blocks for a
    3×3 kernel, and no column matrix.
    """
    out = np.zeros((count, weights.shape[2]), dtype=np.result_type(rows.dtype, weights.dtype))
    for k, offset in enumerate(offsets):
        out += rows[offset : offset + count] @ weights[k]
    return out


def shifted_matmul_grad_weights(rows: np.ndarray, grad: np.ndarray, offsets) -> np.ndarray:
    """The gradient of ``shifted_matmul`` with respect to ``weights``: ``(K, C, F)``.

    ``result[k] = rows[offsets[k] : offsets[k] + P]ᵀ @ grad`` for ``grad (P, F)``.
    (The gradient with respect to ``rows`` is another ``shifted_matmul``, with
    the weights transposed and the offsets reflected.)
    """
    count = grad.shape[0]
    return np.stack([rows[offset : offset + count].T @ grad for offset in offsets])


FAST_SHIFTED_MATMUL = False
"""Whether convolutions should prefer ``shifted_matmul`` over im2col on this backend.

Here ``shifted_matmul`` makes a full-size product per kernel tap: it is the
readable reference, and the reference backend, the baseline, convolves by
im2col.  (Measured, it would still beat this backend's im2col on the 48×48
and 24×24 layers, forward + backward ×1.3–1.8, where NumPy's im2col is slow:
``python benchmarks/bench_conv_methods.py --backend numpy``.)
"""


# Winograd's minimal filtering F(m, 3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
# CVPR 2016): m outputs of a 3-tap filter g over α = m + 2 inputs d are Aᵀ [(G g) ⊙ (Bᵀ d)], α
# multiplications instead of 3m.  Nested along both axes, an α×α input tile d gives the m×m outputs
#     Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A       (α² multiplications instead of 9m²).
# Summed over input channels, the ⊙ becomes, for each of the α² positions ξ of a tile, one matrix product
# over channels: M[ξ] = V[ξ] @ U[ξ] with V = Bᵀ d B of every tile and U = G g Gᵀ of every filter.
#
# F(2, 3), α = 4: 16 multiplications per 2×2 outputs instead of 36; Bᵀ and Aᵀ hold only 0 and ±1.
WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)  # Bᵀ (4, 4)
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)  # G (4, 3)
WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)  # Aᵀ (2, 4)

# F(4, 3), α = 6, from the polynomial points 0, ±1, ±2 and ∞: 36 multiplications per 4×4 outputs instead
# of 144, 2.25 per output pixel where F(2, 3) needs 4.  The price is in the coefficients (up to 8 in Aᵀ,
# 1/24 in G): float32 rounding errors grow about tenfold (tests/test_conv2d.py measures them).
WINOGRAD4_BT = np.array([[4, 0, -5, 0, 1, 0],
                         [0, -4, -4, 1, 1, 0],
                         [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0],
                         [0, 2, -1, -2, 1, 0],
                         [0, 4, 0, -5, 0, 1]], dtype=np.float64)  # Bᵀ (6, 6)
WINOGRAD4_G = np.array([[1 / 4, 0, 0],
                        [-1 / 6, -1 / 6, -1 / 6],
                        [-1 / 6, 1 / 6, -1 / 6],
                        [1 / 24, 1 / 12, 1 / 6],
                        [1 / 24, -1 / 12, 1 / 6],
                        [0, 0, 1]], dtype=np.float64)  # G (6, 3)
WINOGRAD4_AT = np.array([[1, 1, 1, 1, 1, 0],
                         [0, 1, -1, 2, -2, 0],
                         [0, 1, 1, 4, 4, 0],
                         [0, 1, -1, 8, -8, 1]], dtype=np.float64)  # Aᵀ (4, 6)

WINOGRAD_TILES = (2, 4)  # the m of the F(m×m, 3×3) the kernels know


def winograd_matrices(tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Bᵀ, G, Aᵀ)`` of F(tile × tile, 3×3): ``(α, α)``, ``(α, 3)`` and ``(tile, α)`` with ``α = tile + 2``."""
    if tile == 2:
        return WINOGRAD_BT, WINOGRAD_G, WINOGRAD_AT
    if tile == 4:
        return WINOGRAD4_BT, WINOGRAD4_G, WINOGRAD4_AT
    raise ValueError(f"Winograd tiles: tile must be one of {WINOGRAD_TILES} output pixels per side, got {tile!r}")


def _tile_counts(height: int, width: int, tile: int, overlap: int) -> tuple[int, int]:
    """Tiles per column and row of an image ``tile·TH + overlap`` by ``tile·TW + overlap`` pixels."""
    winograd_matrices(tile)  # a tile size the kernels know
    th, tw = (height - overlap) // tile, (width - overlap) // tile
    if th < 1 or tw < 1 or tile * th + overlap != height or tile * tw + overlap != width:
        raise ValueError(f"Winograd tiles: an image of {height}×{width} is not {tile}·TH + {overlap} by "
                         f"{tile}·TW + {overlap} pixels with TH, TW ≥ 1")
    return th, tw


def _tile_domain(values: np.ndarray, tiles_hw: tuple[int, int], tile: int) -> tuple[int, int, int, int]:
    """``(α, m, TH, TW)`` of tile-domain ``values (α², m·TH·TW, K)``."""
    alpha = winograd_matrices(tile)[0].shape[0]
    th, tw = tiles_hw
    if values.ndim != 3 or values.shape[0] != alpha * alpha or values.shape[1] % (th * tw):
        raise ValueError(f"Winograd tiles: values must have shape ({alpha * alpha}, m·TH·TW, K) for tile {tile} and "
                         f"tiles {tiles_hw}, got {values.shape}")
    return alpha, values.shape[1] // (th * tw), th, tw


def winograd_input_transform(x: np.ndarray, tile: int = 2) -> np.ndarray:
    """``V = Bᵀ d B`` of every α×α tile ``d`` of ``x (m, tile·TH + 2, tile·TW + 2, C)`` → ``V (α², m·TH·TW, C)``.

    ``x`` is a zero-padded image batch, channels last; ``α = tile + 2``.  Tile
    ``t = (n·TH + i)·TW + j`` is ``x[n, tile·i : tile·i + α, tile·j : tile·j + α]``:
    neighbouring tiles overlap by two pixels, and tile ``(i, j)`` gives the
    ``tile × tile`` output pixels from ``(tile·i, tile·j)``.
    ``V[α·a + b, t, c] = (Bᵀ d B)[a, b]`` for channel ``c`` of tile ``t``.
    """
    m, height, width, c = x.shape
    th, tw = _tile_counts(height, width, tile, 2)
    bt = winograd_matrices(tile)[0].astype(x.dtype)
    alpha = len(bt)
    # d[p, q] (α, α, m, TH, TW, C): pixel (p, q) of every tile, a strided view of x
    d = np.stack([np.stack([x[:, p : p + tile * th : tile, q : q + tile * tw : tile] for q in range(alpha)])
                  for p in range(alpha)])
    v = np.einsum("ap,pqmijc,bq->abmijc", bt, d, bt, optimize=True)
    return np.ascontiguousarray(v.reshape(alpha * alpha, m * th * tw, c))


def winograd_output_transform(products: np.ndarray, tiles_hw: tuple[int, int], out: np.ndarray | None = None,
                              tile: int = 2) -> np.ndarray:
    """``Y = Aᵀ M A`` of every tile: ``products (α², m·TH·TW, F)`` → ``y (m, tile·TH, tile·TW, F)``.

    ``products[α·a + b, t]`` is ``M[a, b]`` of tile ``t`` (``V[ξ] @ U[ξ]``);
    ``tiles_hw = (TH, TW)``.  ``out``: an array of that shape to write ``y`` into.
    """
    alpha, m, th, tw = _tile_domain(products, tiles_hw, tile)
    f = products.shape[2]
    at = winograd_matrices(tile)[2].astype(products.dtype)
    y = np.einsum("ra,abmijf,sb->mirjsf", at, products.reshape(alpha, alpha, m, th, tw, f), at, optimize=True)
    return _into(y.reshape(m, tile * th, tile * tw, f), out)


def winograd_output_transform_grad(grad: np.ndarray, tile: int = 2) -> np.ndarray:
    """The adjoint of ``winograd_output_transform``: ``grad (m, tile·TH, tile·TW, F)`` → ``A Ĝ Aᵀ`` of each
    tile×tile block ``Ĝ``, ``(α², m·TH·TW, F)``."""
    m, height, width, f = grad.shape
    th, tw = _tile_counts(height, width, tile, 0)
    at = winograd_matrices(tile)[2].astype(grad.dtype)
    alpha = at.shape[1]
    g = grad.reshape(m, th, tile, tw, tile, f)
    return np.ascontiguousarray(np.einsum("ra,mirjsf,sb->abmijf", at, g, at, optimize=True)
                                .reshape(alpha * alpha, m * th * tw, f))


def winograd_input_transform_grad(grad_tiles: np.ndarray, tiles_hw: tuple[int, int], tile: int = 2) -> np.ndarray:
    """The adjoint of ``winograd_input_transform``: ``B V̂ Bᵀ`` of every tile added back onto its pixels.

    ``grad_tiles (α², m·TH·TW, C)`` → ``(m, tile·TH + 2, tile·TW + 2, C)``;
    where tiles overlap, their shares add up.
    """
    alpha, m, th, tw = _tile_domain(grad_tiles, tiles_hw, tile)
    c = grad_tiles.shape[2]
    bt = winograd_matrices(tile)[0].astype(grad_tiles.dtype)
    d = np.einsum("ap,abmijc,bq->pqmijc", bt, grad_tiles.reshape(alpha, alpha, m, th, tw, c), bt, optimize=True)
    grad_x = np.zeros((m, tile * th + 2, tile * tw + 2, c), dtype=grad_tiles.dtype)
    for p in range(alpha):
        for q in range(alpha):
            grad_x[:, p : p + tile * th : tile, q : q + tile * tw : tile] += d[p, q]
    return grad_x


FAST_WINOGRAD = False
"""Whether 3×3 convolutions should prefer Winograd's F(2×2, 3×3) over im2col on this backend.

The reference backend is the baseline the compiled ones are measured against
(and tested against), so it convolves by plain im2col everywhere.  Its
Winograd transforms are readable ``einsum``s; even so, they beat im2col on
BKNet's 12×12 and 6×6 layers (forward + backward ×1.0–1.4 in
``python benchmarks/bench_conv_methods.py --backend numpy``), and lose on the
48×48 and 24×24 ones (×0.1–0.9).
"""


def _into(result: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``result``, or ``out`` holding it when the caller gave an array to write into."""
    if out is None:
        return result
    out[...] = result
    return out


def channel_sums(x_rows: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel of pixel rows ``x_rows (M, C)``, in float64: ``Σ (x − shift)`` and ``Σ (x − shift)²``; ``shift (C,)``.

    With ``d = x − shift``, the mean is ``shift + Σd / M`` and the variance
    ``Σd² / M − (Σd / M)²``.  Subtracting a ``shift`` close to the mean (one
    row of ``x`` will do) keeps that difference from cancelling.
    """
    d = x_rows.astype(np.float64) - shift
    return d.sum(axis=0), (d * d).sum(axis=0)


FAST_CHANNEL_SUMS = False
"""Whether batch-norm's statistics should come from ``channel_sums`` on this backend.

The reference makes a float64 copy of its input; NumPy's own reductions (two
passes in the input's dtype) are faster here, so the reference backend keeps them.
"""


def batch_norm_relu_forward(x_rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                            out: np.ndarray | None = None) -> np.ndarray:
    """``y = max(0, (x − mean) · scale + shift)`` for ``x_rows (M, C)``, one row per pixel; the others are ``(C,)``.

    ``out``: an ``(M, C)`` array of ``x_rows``'s dtype to write ``y`` into (else a new one).
    """
    return _into(np.maximum((x_rows - mean) * scale + shift, 0).astype(x_rows.dtype, copy=False), out)


def batch_norm_relu_sums(grad_rows: np.ndarray, x_rows: np.ndarray, y_rows: np.ndarray, mean: np.ndarray,
                         inv_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, in float64: ``Σ g'`` and ``Σ g' · x̂`` with ``g' = g · [y > 0]`` and ``x̂ = (x − mean) · inv_std``."""
    g_masked = (grad_rows * (y_rows > 0)).astype(np.float64)
    x_hat = (x_rows - mean).astype(np.float64) * inv_std
    return g_masked.sum(axis=0), (g_masked * x_hat).sum(axis=0)


def batch_norm_relu_backward(grad_rows: np.ndarray, x_rows: np.ndarray, y_rows: np.ndarray, mean: np.ndarray,
                             inv_std: np.ndarray, mean_g: np.ndarray, mean_gx: np.ndarray, scale: np.ndarray,
                             out: np.ndarray | None = None) -> np.ndarray:
    """``grad_x = scale · (g' − mean_g − x̂ · mean_gx)`` (the batch-norm backward of the ReLU's masked gradient ``g'``).

    ``out``: an ``(M, C)`` array to write ``grad_x`` into (else a new one).
    """
    g_masked = grad_rows * (y_rows > 0)
    x_hat = (x_rows - mean) * inv_std
    return _into((scale * (g_masked - mean_g - x_hat * mean_gx)).astype(grad_rows.dtype, copy=False), out)


FAST_BATCH_NORM_RELU = False
"""Whether training-mode batch-norm + ReLU should run as one op on this backend.

The ``batch_norm_relu_*`` functions above are the readable reference (float64
sums); composed NumPy ops are faster here, so the reference backend keeps them.
"""
