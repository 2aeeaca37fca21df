"""Build script for the compiled kernels.

Everything about the package lives in pyproject.toml; this file only adds the
Cython extensions built from ``kernels/*.pyx``.  If Cython or a C compiler is
missing the package still installs: minimtl falls back to its Numba or NumPy
kernels with a one-line warning (see ``minimtl/kernels/__init__.py``).
"""
import glob
import os
import sys

from setuptools import setup


def cython_extensions():
    sources = sorted(glob.glob(os.path.join("kernels", "*.pyx")))
    if not sources:
        return []
    try:
        import numpy
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError as error:  # pragma: no cover - depends on the build machine
        print(f"minimtl: not building Cython kernels ({error})", file=sys.stderr)
        return []
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    extensions = [
        Extension(
            "minimtl.kernels." + os.path.splitext(os.path.basename(path))[0],
            [path],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O3"] + openmp,
            extra_link_args=openmp,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for path in sources
    ]
    return cythonize(extensions, compiler_directives={"language_level": 3})


setup(ext_modules=cython_extensions())
