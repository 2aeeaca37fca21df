"""The Cython backend: the compiled loops of ``kernels/cython_kernels.pyx`` under the contract's names.

``setup.py`` compiles ``kernels/cython_kernels.pyx`` into the extension
``minimtl.kernels.cython_kernels`` (``pip install -e .`` or
``python setup.py build_ext --inplace``).  If it was not built, importing this
module raises ``ImportError`` and ``minimtl.kernels`` falls back to the next
backend with a one-line warning.  Checks and layout choice live in
``minimtl/kernels/compiled.py``; the contract is in ``numpy_backend.py``.
"""
from __future__ import annotations

from minimtl.kernels.compiled import backend_exports  # first: it sets OMP_WAIT_POLICY before OpenMP loads

from minimtl.kernels import cython_kernels as loops  # ImportError when the extension was not built  # noqa: E402

_exports = backend_exports(loops)  # im2col, col2im, ... (compiled.CONTRACT), and FAST_WINOGRAD etc. = True
globals().update(_exports)
__all__ = list(_exports)
