"""Convolution: the definition, then the fast algorithms, then the function that runs them.

Reading order:

1. ``reference.py``: the convolution as a student first writes it.  The
   definition as nested sums (``direct_conv2d``, the oracle of the tests) and
   the whole-batch ``ReferenceConv2d``: ``Y = W₂ @ im2col(x)`` forward,
   ``col2im(W₂ᵀ @ G)`` backward, side by side.
2. ``algorithm.py``: the small interface every fast algorithm implements
   (a plan per call: chunk size, forward chunk, backward chunk, weight gradient).
3. ``im2col.py``: the reference's product, a cache-sized chunk of images at a time.
4. ``shifted.py``: stride-1 layers as shifted products over the padded pixel grid.
5. ``winograd.py``: 3×3 stride-1 layers by Winograd's F(2×2, 3×3) and F(4×4, 3×3) tiles.
6. ``choose.py``: which algorithm computes a layer (the rules and the
   measurements behind them) and ``settings``, the context manager that
   forces a method or a chunk budget.
7. ``function.py``: ``Conv2dFunction`` (chunks, dispatch, bias and fused ReLU)
   and ``conv2d``, the layer as ``minimtl.nn.Conv2d`` calls it.
"""
from minimtl.conv.algorithm import ConvAlgorithm, ConvPlan
from minimtl.conv.choose import (ALGORITHMS, METHODS, SHIFTED_MAX_WASTE, SHIFTED_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS,
                                 WINOGRAD_MIN_TILES, Settings, conv_method, current_settings, settings)
from minimtl.conv.function import Conv2dFunction, chunk_bounds, conv2d, conv_padding
from minimtl.conv.im2col import IM2COL, conv_chunk_size
from minimtl.conv.reference import ReferenceConv2d, direct_conv2d, direct_conv2d_gradients, reference_conv2d
from minimtl.conv.shifted import SHIFTED, PaddedGrid
from minimtl.conv.winograd import (WINOGRAD_2X2, WINOGRAD_4X4, WinogradTiles, winograd_filter_transform,
                                   winograd_filter_transform_grad, winograd_tile)

__all__ = [
    "ALGORITHMS", "IM2COL", "METHODS", "SHIFTED", "SHIFTED_MAX_WASTE", "SHIFTED_MIN_CHANNELS", "WINOGRAD_2X2",
    "WINOGRAD_4X4", "WINOGRAD_MIN_CHANNELS", "WINOGRAD_MIN_TILES", "Conv2dFunction", "ConvAlgorithm", "ConvPlan",
    "PaddedGrid", "ReferenceConv2d", "Settings", "WinogradTiles", "chunk_bounds", "conv2d", "conv_chunk_size",
    "conv_method", "conv_padding", "current_settings", "direct_conv2d", "direct_conv2d_gradients", "reference_conv2d",
    "settings", "winograd_filter_transform", "winograd_filter_transform_grad", "winograd_tile",
]
