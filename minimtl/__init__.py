"""minimtl: a from-scratch multi-task CNN framework in NumPy.

Reproduces Rohani, Farsi and Mohamadzadeh, "Deep Multi-task Convolutional
Neural Networks for Efficient Classification of Face Attributes", IJE 36(11), 2023.

A tour, in reading order:
    autograd.py       Tensor, Function, backward()
    ops.py            arithmetic, matmul, reshape, sum, exp/log, concat
    kernels/          im2col, col2im, max-pool, Winograd and batch-norm kernels (NumPy reference; Cython, Numba)
    checks.py         the argument checks every layer starts with
    conv/             conv2d: reference.py first (im2col + one matrix product), then im2col, shifted, winograd
    pooling.py        max_pool2d
    batch_norm.py     batch_norm: composed, with its ReLU as one op, the evaluation affine map; folding
    functional.py     dropout, linear, prelu, softmax; re-exports conv2d, max_pool2d, batch_norm (F.conv2d ...)
    losses.py         Eq. (1) masked cross-entropy, Eq. (2) total loss with L2
    nn.py             Module, Conv2d, Linear, BatchNorm1d/2d (relu=True), Dropout, ...
    models.py         BKNet Configs A, B, C; fuse_for_inference() folds batch-norm into the convolutions
    optim.py          SGD, Adam, Eq. (4) ExponentialDecay
    serialization.py  save/load weights as .npz
    gradcheck.py      numerical gradient checks
    parallel.py       convolution chunks and element-wise passes on every core
    files.py          atomic_write: a file appears whole or not at all
    memory.py         reuse freed memory (glibc) instead of page-faulting fresh pages (memory.apply_default())
"""
from minimtl.autograd import Function, Tensor, as_tensor, is_grad_enabled, no_grad, tensor
from minimtl.ops import concat
from minimtl.serialization import load, save
from minimtl import functional, losses, nn, optim  # mt.nn.Conv2d after `import minimtl as mt`

__version__ = "0.1.0"

__all__ = ["Function", "Tensor", "as_tensor", "concat", "functional", "is_grad_enabled", "load", "losses", "nn", "no_grad",
           "optim", "save", "tensor"]
