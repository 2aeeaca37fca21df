"""The one place that chooses how a convolution is computed: the algorithms, the rules, and the settings.

``ALGORITHMS`` lists every algorithm by name (a new one is one file and one
line here).  ``conv_method`` picks one for a layer: the method asked for by
``settings(method=...)`` wherever it fits, or, for ``"auto"`` (the default),
the rules below, read off ``benchmarks/bench_conv_methods.py``.
``settings`` is a context manager for the method and the chunk budgets::

    with minimtl.conv.settings(method="winograd", chunk_bytes=2**20):
        y = conv2d(x, weight, None, 1, "same")

``Conv2dFunction`` reads the settings once per call, in the calling thread,
and hands the chunk workers what it read.
"""
from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from minimtl import kernels
from minimtl.conv.algorithm import ConvAlgorithm
from minimtl.conv.im2col import IM2COL
from minimtl.conv.shifted import SHIFTED, PaddedGrid
from minimtl.conv.winograd import WINOGRAD_2X2, WINOGRAD_4X4, WinogradTiles, winograd_tile

ALGORITHMS: dict[str, ConvAlgorithm] = {algorithm.name: algorithm for algorithm in (
    IM2COL,  # im2col + one matrix product per chunk (im2col.py)
    SHIFTED,  # shifted products over the padded grid (shifted.py)
    WINOGRAD_2X2,  # "winograd": F(2×2, 3×3) tiles (winograd.py)
    WINOGRAD_4X4,  # "winograd4": F(4×4, 3×3) tiles (winograd.py)
)}
METHODS = ("auto", *ALGORITHMS)  # what settings(method=...) accepts

# "auto" takes shifted products when the layer has at least this many input
# channels (each product's inner dimension is C: with fewer, BLAS runs far below
# its peak) and computes at most this much more than its output needs (the whole
# padded grid).  BKNet at batch 128 (benchmarks/bench_conv_methods.py, forward +
# backward): shifted products ×2.1 at 48×48 (waste 1.09) and ×1.4–1.5 at 24×24
# (1.17), no faster at 12×12 (1.36) and ×0.5 at 6×6 (1.78), where im2col's
# columns are small anyway.
SHIFTED_MIN_CHANNELS = 16
SHIFTED_MAX_WASTE = 1.25

# "auto" takes Winograd tiles for 3×3 layers with at least this many input
# channels (each of the α² products per tile position has C as inner dimension).
WINOGRAD_MIN_CHANNELS = 16
# ... and at least this many 2×2 tiles in the batch: transforming the filters
# costs about as much as transforming a few tiles per filter, and has to pay off.
WINOGRAD_MIN_TILES = 64
# ... with 4×4 output tiles (F(4×4, 3×3)) where they need fewer multiplications
# than 2×2 ones, 2×2 on a tie (winograd_tile).


@dataclass(frozen=True)
class Settings:
    """How convolutions are computed: the method and the chunk budgets.

    Attributes:
        method: ``"auto"`` or a name in ``ALGORITHMS``.
        chunk_bytes: bytes of working memory one chunk may hold, by algorithm
            name; an algorithm not named here uses its own ``chunk_bytes``.
    """

    method: str = "auto"
    chunk_bytes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def chunk_bytes_for(self, algorithm: ConvAlgorithm) -> int:
        """The chunk budget of ``algorithm``: the setting, or the algorithm's default."""
        return self.chunk_bytes.get(algorithm.name, algorithm.chunk_bytes)


# The default of every context: one instance shared by all of them, which is safe
# because Settings is frozen and its chunk_bytes a read-only mapping.
_DEFAULT_SETTINGS = Settings()
_CURRENT = contextvars.ContextVar("minimtl_conv_settings", default=_DEFAULT_SETTINGS)


def current_settings() -> Settings:
    """The settings in force in this thread (the defaults outside every ``settings`` block)."""
    return _CURRENT.get()


@contextmanager
def settings(method: str | None = None, chunk_bytes: int | Mapping[str, int] | None = None) -> Iterator[Settings]:
    """Compute the convolutions inside the ``with`` block with ``method`` and these chunk budgets.

    The previous settings come back when the block ends, however it ends.
    Blocks nest; each thread (and each ``contextvars`` context) has its own.

    Args:
        method: ``"auto"``, ``"im2col"``, ``"shifted"``, ``"winograd"`` (2×2
            output tiles) or ``"winograd4"`` (4×4), taken wherever it fits
            (elsewhere im2col); None keeps the current method.
        chunk_bytes: one budget for every algorithm, or a mapping from
            algorithm name to budget (the others keep theirs); at least 1.

    Yields:
        The ``Settings`` in force inside the block.

    Raises:
        ValueError: for an unknown method or algorithm name, or a budget below 1.
    """
    current = current_settings()
    if method is not None and method not in METHODS:
        raise ValueError(f"conv method must be one of {METHODS}, got {method!r}")
    budgets = dict(current.chunk_bytes)
    if chunk_bytes is not None:
        given = dict.fromkeys(ALGORITHMS, chunk_bytes) if not isinstance(chunk_bytes, Mapping) else dict(chunk_bytes)
        for name, budget in given.items():
            if name not in ALGORITHMS:
                raise ValueError(f"chunk_bytes names an unknown algorithm {name!r}; "
                                 f"the algorithms are {tuple(ALGORITHMS)}")
            if int(budget) != budget or budget < 1:
                raise ValueError(f"chunk_bytes must be a positive integer, got {budget!r} for {name!r}")
            budgets[name] = int(budget)
    new = replace(current, method=current.method if method is None else method,
                  chunk_bytes=MappingProxyType(budgets))
    token = _CURRENT.set(new)
    try:
        yield new
    finally:
        _CURRENT.reset(token)


def conv_method(channels: int, kernel: tuple[int, int], stride: tuple[int, int], padding, size_hw: tuple[int, int],
                images: int | None = None, method: str | None = None) -> str:
    """``"winograd4"``, ``"winograd"``, ``"shifted"`` or ``"im2col"``: how ``Conv2dFunction`` computes a layer.

    ``method`` (default: the current ``settings``) chooses, and for "auto" the
    rules above.  Shifted products (``PaddedGrid``) need stride 1, Winograd
    tiles (``WinogradTiles``: "winograd" with 2×2 output tiles, "winograd4"
    with 4×4) a 3×3 kernel with stride 1; a layer that cannot take the method
    asked for takes im2col.  "auto" also wants a backend whose kernels for the
    method are compiled (``kernels.fast_winograd()``, ``kernels.fast_shifted_matmul()``).

    Args:
        channels: C, the input channels.
        kernel: ``(KH, KW)``.
        stride: ``(SH, SW)``.
        padding: ``((top, bottom), (left, right))``.
        size_hw: ``(H, W)`` of the input.
        images: the batch size N, if known (Winograd wants enough tiles).
        method: ``"auto"`` or an algorithm name; None reads the current settings.

    Returns:
        The name of an algorithm in ``ALGORITHMS``.
    """
    method = current_settings().method if method is None else method
    if method not in METHODS:
        raise ValueError(f"conv method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method if ALGORITHMS[method].fits(kernel, stride) else IM2COL.name
    if tuple(stride) != (1, 1):
        return IM2COL.name
    if WINOGRAD_2X2.fits(kernel, stride) and kernels.fast_winograd() and channels >= WINOGRAD_MIN_CHANNELS:
        tiles = WinogradTiles(size_hw, padding)
        if images is None or tiles.count(images) >= WINOGRAD_MIN_TILES:
            return WINOGRAD_4X4.name if winograd_tile(size_hw, padding) == 4 else WINOGRAD_2X2.name
    waste = PaddedGrid(size_hw, kernel, padding).waste()
    if kernels.fast_shifted_matmul() and channels >= SHIFTED_MIN_CHANNELS and waste <= SHIFTED_MAX_WASTE:
        return SHIFTED.name
    return IM2COL.name
