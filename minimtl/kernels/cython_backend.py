"""The Cython backend: the compiled loops of ``kernels/cython_kernels.pyx`` under the contract's names.

``setup.py`` compiles ``kernels/cython_kernels.pyx`` into the extension
``minimtl.kernels.cython_kernels`` (``pip install -e .`` or
``python setup.py build_ext --inplace``).  If it was not built, importing this
module raises ``ImportError`` and ``minimtl.kernels`` falls back to the next
backend with a one-line warning.  Checks and layout choice live in
``minimtl/kernels/compiled.py``; the contract is in ``numpy_backend.py``.
"""
from __future__ import annotations

from minimtl.kernels.compiled import CompiledBackend  # first: it sets OMP_WAIT_POLICY before OpenMP loads

from minimtl.kernels import cython_kernels as loops  # ImportError when the extension was not built  # noqa: E402

_backend = CompiledBackend(loops)

im2col = _backend.im2col
col2im = _backend.col2im
max_pool2d_forward = _backend.max_pool2d_forward
max_pool2d_backward = _backend.max_pool2d_backward
shifted_matmul = _backend.shifted_matmul
shifted_matmul_grad_weights = _backend.shifted_matmul_grad_weights
winograd_input_transform = _backend.winograd_input_transform
winograd_output_transform = _backend.winograd_output_transform
winograd_output_transform_grad = _backend.winograd_output_transform_grad
winograd_input_transform_grad = _backend.winograd_input_transform_grad
channel_sums = _backend.channel_sums
batch_norm_relu_forward = _backend.batch_norm_relu_forward
batch_norm_relu_sums = _backend.batch_norm_relu_sums
batch_norm_relu_backward = _backend.batch_norm_relu_backward
FAST_SHIFTED_MATMUL = True
FAST_WINOGRAD = True
FAST_BATCH_NORM_RELU = True
FAST_CHANNEL_SUMS = True

__all__ = ["im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward", "shifted_matmul",
           "shifted_matmul_grad_weights", "winograd_input_transform", "winograd_output_transform",
           "winograd_output_transform_grad", "winograd_input_transform_grad", "channel_sums",
           "batch_norm_relu_forward", "batch_norm_relu_sums", "batch_norm_relu_backward",
           "FAST_SHIFTED_MATMUL", "FAST_WINOGRAD", "FAST_BATCH_NORM_RELU", "FAST_CHANNEL_SUMS"]
