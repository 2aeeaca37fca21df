"""Compiled Cython kernels are built into this package by setup.py from kernels/*.pyx."""
