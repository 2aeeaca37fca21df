"""The Cython backend: the compiled loops of ``kernels/cython_kernels.pyx`` under the contract's names.

``setup.py`` compiles ``kernels/cython_kernels.pyx`` into the extension
``minimtl.kernels.cython_kernels`` (``pip install -e .`` or
``python setup.py build_ext --inplace``).  If it was not built, importing this
module raises ``ImportError`` and ``minimtl.kernels`` falls back to the next
backend with a one-line warning.  Checks and layout choice live in
``minimtl/kernels/compiled.py``; the contract is in ``numpy_backend.py``.
"""
from __future__ import annotations

from minimtl.kernels import cython_kernels  # ImportError when the extension was not built
from minimtl.kernels.compiled import CONTRACT, FAST_FLAGS, CompiledBackend, contract_getattr

kernels = CompiledBackend(cython_kernels)  # the contract's functions (im2col, col2im, ...) running the Cython loops
__all__ = [*CONTRACT, *FAST_FLAGS]
__getattr__ = contract_getattr(kernels, __name__)  # cython_backend.im2col is kernels.im2col
