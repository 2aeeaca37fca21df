"""The one place that chooses which implementation of the heavy kernels runs.

Backends, each a module with the same functions (``im2col``, ``col2im``,
``max_pool2d_forward``, ``max_pool2d_backward``, ``shifted_matmul``,
``shifted_matmul_grad_weights``, the four ``winograd_*`` tile transforms,
``channel_sums``, ``batch_norm_relu_forward``, ``batch_norm_relu_sums``,
``batch_norm_relu_backward``; see ``numpy_backend`` for their exact contract)
and flags ``FAST_WINOGRAD``, ``FAST_SHIFTED_MATMUL``, ``FAST_BATCH_NORM_RELU``
and ``FAST_CHANNEL_SUMS`` that tell the layers whether the backend's Winograd
tiles, shifted products, fused batch-norm + ReLU and batch-norm statistics
beat the NumPy ways (im2col, two ops, NumPy reductions):

``cython``
    loops compiled by ``setup.py`` from ``kernels/cython_kernels.pyx``, OpenMP
    over the batch (``minimtl/kernels/cython_backend.py``); the default when built.
``numba``
    the same loops as ``@njit`` Python (``minimtl/kernels/numba_loops.py``, put
    under the contract's names by ``numba_backend.py``), compiled at first use and cached.
``numpy``
    the reference, plain NumPy (``minimtl/kernels/numpy_backend.py``).

The fast backends may lay memory out differently (channels-last views,
Fortran-order columns; see ``minimtl/kernels/compiled.py``) but return the
same shapes and values as the reference.

Choose with the environment variable ``MINIMTL_BACKEND`` or
``minimtl.kernels.set_backend(name)``.  ``get_backend()`` returns the module in
use.  Layers call ``minimtl.kernels.im2col(...)`` etc., which forward to it.
Nothing is loaded at import: the first kernel call (or ``get_backend()``)
loads the backend that ``MINIMTL_BACKEND`` names, or the fastest.

Loading a compiled backend sets ``OMP_WAIT_POLICY=PASSIVE`` unless the
environment already sets it (``load_openmp_quietly``): OpenMP threads that
finished a parallel loop otherwise spin, waiting for the next one, and on a
2-core machine fight OpenBLAS's threads for the cores (a batch-1 forward pass
ran 12x slower than with NumPy alone).  libgomp reads the variable once, when
the Cython extension or Numba's OpenMP layer loads it, so it is set just before.
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from minimtl.kernels import numpy_backend

# Fastest first: the default is the first that imports.
BACKEND_MODULES = {
    "numpy": "minimtl.kernels.numpy_backend",
    "numba": "minimtl.kernels.numba_backend",
    "cython": "minimtl.kernels.cython_backend",
}
PREFERENCE = ["cython", "numba", "numpy"]

_current: ModuleType | None = None  # the backend's module, loaded at first use (_backend)
_current_name = "numpy"
_kernels = numpy_backend  # what the contract functions below call: the module, or a compiled backend's ``kernels``


def load_openmp_quietly() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless set: idle OpenMP threads then sleep instead of spinning (see the module)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _import(name: str) -> ModuleType:
    if name != "numpy":
        load_openmp_quietly()
    return importlib.import_module(BACKEND_MODULES[name])


def available_backends() -> list[str]:
    """Names of the backends that import on this machine, fastest first."""
    names = []
    for name in PREFERENCE:
        try:
            _import(name)
        except ImportError:
            continue
        names.append(name)
    return names


def set_backend(name: str) -> str:
    """Use backend ``name``; if it cannot be imported, fall back to the next fastest with a one-line warning.

    Returns the name of the backend actually in use.
    """
    global _current, _current_name, _kernels
    if name not in BACKEND_MODULES:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {sorted(BACKEND_MODULES)}")
    candidates = [name] + [n for n in PREFERENCE if n != name and PREFERENCE.index(n) > PREFERENCE.index(name)]
    for candidate in candidates:
        try:
            module = _import(candidate)
        except ImportError as error:
            warnings.warn(f"minimtl: kernel backend {candidate!r} unavailable ({error}); falling back", RuntimeWarning,
                          stacklevel=2)
            continue
        _current, _current_name, _kernels = module, candidate, getattr(module, "kernels", module)
        return candidate
    _current, _current_name, _kernels = numpy_backend, "numpy", numpy_backend
    return "numpy"


def get_backend() -> ModuleType:
    """The module of the backend in use (loaded now if no kernel has run yet)."""
    if _current is None:
        set_backend(os.environ.get("MINIMTL_BACKEND", PREFERENCE[0]))
    return _current


def backend_name() -> str:
    """The name of the backend in use: "cython", "numba" or "numpy"."""
    get_backend()
    return _current_name


def _backend():
    """What the contract functions call: loaded at first use."""
    if _current is None:
        get_backend()
    return _kernels


def im2col(x, kernel, stride, padding):
    return _backend().im2col(x, kernel, stride, padding)


def col2im(cols, x_shape, kernel, stride, padding):
    return _backend().col2im(cols, x_shape, kernel, stride, padding)


def max_pool2d_forward(x, kernel, stride, padding):
    return _backend().max_pool2d_forward(x, kernel, stride, padding)


def max_pool2d_backward(grad_out, indices, x_shape):
    return _backend().max_pool2d_backward(grad_out, indices, x_shape)


def shifted_matmul(rows, weights, offsets, count):
    return _backend().shifted_matmul(rows, weights, offsets, count)


def shifted_matmul_grad_weights(rows, grad, offsets):
    return _backend().shifted_matmul_grad_weights(rows, grad, offsets)


def winograd_input_transform(x, tile=2):
    return _backend().winograd_input_transform(x, tile)


def winograd_output_transform(products, tiles_hw, out=None, tile=2):
    return _backend().winograd_output_transform(products, tiles_hw, out, tile)


def winograd_output_transform_grad(grad, tile=2):
    return _backend().winograd_output_transform_grad(grad, tile)


def winograd_input_transform_grad(grad_tiles, tiles_hw, tile=2):
    return _backend().winograd_input_transform_grad(grad_tiles, tiles_hw, tile)


def channel_sums(x_rows, shift):
    return _backend().channel_sums(x_rows, shift)


def batch_norm_relu_forward(x_rows, mean, scale, shift, out=None):
    return _backend().batch_norm_relu_forward(x_rows, mean, scale, shift, out)


def batch_norm_relu_sums(grad_rows, x_rows, y_rows, mean, inv_std):
    return _backend().batch_norm_relu_sums(grad_rows, x_rows, y_rows, mean, inv_std)


def batch_norm_relu_backward(grad_rows, x_rows, y_rows, mean, inv_std, mean_g, mean_gx, scale, out=None):
    return _backend().batch_norm_relu_backward(grad_rows, x_rows, y_rows, mean, inv_std, mean_g, mean_gx, scale, out)


def fast_batch_norm_relu() -> bool:
    """Whether the backend in use has compiled batch-norm + ReLU kernels (``FAST_BATCH_NORM_RELU``)."""
    return bool(getattr(_backend(), "FAST_BATCH_NORM_RELU", False))


def fast_channel_sums() -> bool:
    """Whether the backend in use computes batch-norm's statistics with compiled ``channel_sums`` (``FAST_CHANNEL_SUMS``)."""
    return bool(getattr(_backend(), "FAST_CHANNEL_SUMS", False))


def fast_winograd() -> bool:
    """Whether the backend in use has compiled Winograd tile transforms that beat im2col (``FAST_WINOGRAD``)."""
    return bool(getattr(_backend(), "FAST_WINOGRAD", False))


def fast_shifted_matmul() -> bool:
    """Whether the backend in use has compiled shifted products (``FAST_SHIFTED_MATMUL``)."""
    return bool(getattr(_backend(), "FAST_SHIFTED_MATMUL", False))

