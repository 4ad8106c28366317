"""glibc allocator settings for processes that run the block kernels.

A kernel allocates numpy temporaries of a few MiB per row sub-block, thousands of times per
chunk. Under glibc's defaults, and much more under the ``MALLOC_TRIM_THRESHOLD_=65536`` that
Dask's nanny puts into every worker's environment, each of them is a fresh ``mmap`` (or memory
trimmed back to the system and faulted in again), so the kernels spend most of their time
zeroing pages: measured 4× slower per chunk in a worker than with the settings below.

The settings keep blocks up to ``MMAP_THRESHOLD`` on the heap, where they are reused, and let up
to ``TRIM_THRESHOLD`` of free heap stay mapped. Chunks of data (tens of MiB) are still mapped and
unmapped one by one, so a worker's memory still returns to the system between tasks. Set
``DGMM_MALLOC_TUNE=0`` to leave the allocator alone; other C libraries are left alone anyway.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 8 * 2**20
TRIM_THRESHOLD = 32 * 2**20
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3

_done = False


def tune_allocator() -> bool:
    """Apply the settings once per process; whether they are in effect."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("DGMM_MALLOC_TUNE", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):  # not glibc
        return False
    _done = ok
    return ok
