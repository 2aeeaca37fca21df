"""minimtl.memory: glibc's thresholds raised by apply_default() (the tools and fit call it), unless the user says otherwise."""
import platform
import subprocess
import sys

import pytest

from minimtl import memory

pytestmark = pytest.mark.kernels


def test_the_environment_can_turn_it_off(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("MINIMTL_KEEP_FREED_MEMORY", raising=False)
    assert memory.wanted()
    monkeypatch.setenv("MINIMTL_KEEP_FREED_MEMORY", "0")
    assert not memory.wanted()
    monkeypatch.setenv("MINIMTL_KEEP_FREED_MEMORY", "1")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user tuned glibc: leave it
    assert not memory.wanted()


def large_block_is_on_the_heap(keep: str) -> bool:
    """In a fresh process: whether a 64 MB array lies in the process's [heap] (brk) region, per /proc/self/maps.

    On the heap, a freed block is kept and handed to the next array; a block
    of its own (glibc's default above its mmap threshold) is unmapped when freed,
    and the next one arrives as new pages that the kernel must zero first.
    """
    program = """
import numpy as np
from minimtl import memory
memory.apply_default()
block = np.empty(16 * 2**20, np.float32)
address = block.ctypes.data
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        start, stop = (int(v, 16) for v in line.split()[0].split("-"))
        print(start <= address < stop)
        break
else:
    print(False)
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                            env={"PATH": "", "MINIMTL_KEEP_FREED_MEMORY": keep})
    return result.stdout.split()[-1] == "True"


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_with_it_large_arrays_come_from_the_heap_and_without_it_they_do_not():
    assert memory.keep_freed_memory()
    assert large_block_is_on_the_heap("1")
    assert not large_block_is_on_the_heap("0")
