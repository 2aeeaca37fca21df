"""The Numba backend: the loops of ``numba_loops.py`` under the contract's names.

``numba_loops.py`` holds the same loops as ``kernels/cython_kernels.pyx`` as
``@njit`` Python, compiled at first use and cached on disk; with
``NUMBA_DISABLE_JIT=1`` they run as plain Python.  Checks and layout choice
live in ``minimtl/kernels/compiled.py``; the contract is in ``numpy_backend.py``.
"""
from __future__ import annotations

from minimtl.kernels import numba_loops  # ImportError without Numba
from minimtl.kernels.compiled import CONTRACT, FAST_FLAGS, CompiledBackend, contract_getattr

kernels = CompiledBackend(numba_loops)  # the contract's functions (im2col, col2im, ...) running the Numba loops
__all__ = [*CONTRACT, *FAST_FLAGS]
__getattr__ = contract_getattr(kernels, __name__)  # numba_backend.im2col is kernels.im2col
