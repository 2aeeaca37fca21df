"""Keep freed memory for the next array instead of handing it back to the system (glibc only).

A training step allocates and frees dozens of arrays of tens of megabytes (a
``(128, 32, 48, 48)`` float32 activation is 38 MB).  glibc serves every block
over its mmap threshold with a fresh ``mmap`` and returns it with ``munmap``
when freed, so the next array of that size starts as untouched pages and the
first write to each page is a page fault that the kernel serves by zeroing
it.  (glibc raises its threshold by itself after such a block is freed, which
helps a loop that repeats one size, but not a training step of many sizes in
several threads.)  On this
project's 2-core machine a Config C training step at batch 128 took 1451 ms
with this module's setting and 1897 ms without, with the same peak memory
(``python benchmarks/bench_malloc.py --rounds 5``, the two in turns).

``keep_freed_memory()`` raises glibc's mmap and trim thresholds
(``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``), as a caching
allocator would: large blocks then come from the heap and go back to it, and
are reused.  The cost is that the process keeps its peak memory until it
exits, so ``import minimtl`` does not do it: ``apply_default()`` does, and
the heavy entry points call it (every command-line tool through
``minimtl.cli.run``, ``minimtl.train.fit``, the benchmarks), unless the
environment variable ``MINIMTL_KEEP_FREED_MEMORY`` is ``0``, or the user
already tuned glibc with ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``.
On other C libraries it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB from the heap
TRIM_THRESHOLD = 1 << 31  # keep up to 2 GiB of freed heap before trimming

_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds once; True if they are (now or already) raised by this module."""
    global _applied
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied


def wanted() -> bool:
    """Whether ``apply_default`` should call ``keep_freed_memory``: see the module's docstring."""
    if os.environ.get("MINIMTL_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    return not any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))


def apply_default() -> bool:
    """``keep_freed_memory()`` if ``wanted()``; True if the thresholds are raised."""
    return keep_freed_memory() if wanted() else _applied
