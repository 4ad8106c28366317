"""A Dask worker preload for dgmm's passes: ``dask worker --preload dgmm.worker ...``.

A dgmm block task needs numpy, scipy.linalg, Dask and zarr, nothing else. The run's own
LocalCluster loads this module into every worker, and it is worth adding to hand-started
workers whose memory limit is small (the images in ``docker/`` do). It

- keeps the ``sparse`` package (and through it numba, ~58 MiB resident) out of the worker:
  ``dask.array`` imports it only to register sparse chunks, which dgmm never makes;
- sets the allocator up before the first task (see `dgmm._malloc`).

A worker that has already imported ``sparse`` keeps it. dask-ml's k-means (``init_params``
'kmeans' or 'k-means||' on Dask input) imports numba, scikit-learn and pandas on the workers
anyway (~220 MiB more); ``k-means++`` and ``random_from_data`` do not.
"""

from __future__ import annotations

import sys

from ._malloc import tune_allocator

__all__ = [
    "dask_setup",
    "keep_out_unused_imports",
]


def keep_out_unused_imports(names: tuple[str, ...] = ("sparse",)) -> bool:
    """Make ``import`` of these packages fail in this process (Dask then skips them), unless
    they are imported already; whether the first was kept out.

    Workers keep out only ``sparse``: other work sent to a shared worker may need ``xarray``.
    The ``dgmm`` command, which runs nothing but dgmm, keeps out ``xarray`` as well.
    """
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # import -> ImportError
    return sys.modules[names[0]] is None


keep_out_unused_imports()


def dask_setup(worker) -> None:
    """Called by Dask once the worker starts: tune the allocator for its memory limit."""
    tune_allocator(worker.memory_manager.memory_limit or None)
