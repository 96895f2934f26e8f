"""Hand the C heap's free memory back to the system.

MindSpore's graph compiler allocates with malloc and frees it all once the graph is built; glibc
keeps freed memory for later mallocs, but MindSpore's memory pool takes tensors elsewhere, so that
memory would stay in the process's resident set for the whole run and count towards the peak a
pod's memory limit has to cover (MobileNetV2's training graph: about 120 MB). malloc_trim returns it.
"""

from __future__ import annotations

import ctypes
from functools import cache


@cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only; musl and macOS have none
    except AttributeError:
        return None


def release_free_heap() -> bool:
    """Return the heap's free pages to the system; False when none could be (or no glibc)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
