"""mnv2.heap: the C heap's free pages go back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import ctypes
import platform

import pytest
from mnv2.heap import release_free_heap

BLOCK, BLOCKS = 64 * 1024, 3200  # 200 MB in blocks under glibc's mmap threshold: they come from the heap


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_memory_leaves_the_resident_set():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
    assert all(blocks)
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)  # touched, so resident
    keep = libc.malloc(BLOCK)  # a live block above the others: free() alone cannot shrink the heap
    for block in blocks:
        libc.free(block)
    held = _rss_mb()
    assert release_free_heap() is True
    assert held - _rss_mb() > 150  # of the 200 MB freed
    libc.free(keep)
