"""glibc allocator settings for processes that run the block kernels.

A kernel allocates numpy temporaries of a few MiB per row sub-block, thousands of times per
chunk, and reading a chunk allocates a few buffers of the chunk's size. Under glibc's defaults,
and much more under the ``MALLOC_TRIM_THRESHOLD_=65536`` that Dask's nanny puts into every
worker's environment (it also freezes glibc's adaptive mmap threshold at 128 KiB), each of them is
a fresh ``mmap`` whose pages the kernel zeroes on first touch. Measured in a worker: the block
kernels ran 4× slower than in a plain process, and reading a 32 MB Zarr chunk took 55–110 ms
instead of 22 ms.

The settings keep blocks up to ``MMAP_THRESHOLD`` (chunks of up to 64 MiB) on the heap, where
they are reused, and let up to ``TRIM_THRESHOLD`` of free heap stay mapped. The cost is a worker
keeping about one chunk's worth of freed memory (~90 MB more resident for 32 MB chunks). In a
Dask worker with a memory limit both thresholds are at most 1/16 of the limit (32 MiB for a
512 MiB worker), and after a task that leaves the process above half its limit the free heap
is handed back (``malloc_trim``), so the retained memory cannot push a small worker to Dask's
pause threshold. Set ``DGMM_MALLOC_TUNE=0`` to leave the allocator alone; other C libraries
are left alone anyway.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 64 * 2**20
TRIM_THRESHOLD = 64 * 2**20
_MMAP_THRESHOLD_MAX_OLD = 32 * 2**20  # the largest value some glibc versions accept
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3

_done = False
_limit: int | None = None  # the worker's memory limit, when running in a limited Dask worker
thresholds: tuple[int, int] | None = None  # (mmap, trim) in effect


def _worker_memory_limit() -> int | None:
    try:
        from distributed import get_worker

        return get_worker().memory_manager.memory_limit or None
    except (ImportError, ValueError, AttributeError):
        return None


def tune_allocator(memory_limit: int | None = None) -> bool:
    """Apply the settings once per process; whether they are in effect.

    ``memory_limit`` is the Dask worker's limit; None looks it up from the running task.
    """
    global _done, _limit, thresholds
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("DGMM_MALLOC_TUNE", "1") == "0":
        return False
    _limit = memory_limit or _worker_memory_limit()
    cap = MMAP_THRESHOLD if _limit is None else min(MMAP_THRESHOLD, _limit // 16)
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap = cap
        ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap) == 1
        if not ok:
            mmap = min(cap, _MMAP_THRESHOLD_MAX_OLD)
            ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap) == 1
        trim = min(TRIM_THRESHOLD, cap)
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1
    except (OSError, AttributeError):  # not glibc
        return False
    _done = ok
    thresholds = (mmap, trim) if ok else None
    return ok


def trim_if_high() -> bool:
    """Hand free heap back to the system when a limited worker is above half its limit."""
    if not _done or _limit is None:
        return False
    try:
        import psutil

        if psutil.Process().memory_info().rss <= _limit // 2:
            return False
        return ctypes.CDLL("libc.so.6").malloc_trim(0) == 1
    except (OSError, AttributeError, ImportError):
        return False
