"""The rows a model is fitted to or applied on: numpy, Dask, Zarr, DataFrames and table files,
checked and wrapped as row blocks (`load_input`), columns matched by name."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import zarr
from dask.array.core import PerformanceWarning

from . import tables
from ._reduce import compute
from .io import block_rows, open_zarr_array, zarr_to_dask
from .validation import (
    ColumnProfile,
    as_numpy_2d,
    check_dtype_and_shape,
    check_magnitude,
    check_sample_weight,
)

__all__ = [
    "MANY_BLOCKS",
    "InputData",
    "in_memory_chunk_rows",
    "load_input",
]


class InputData:
    """Training or prediction input as row blocks, with what the estimator needs to know.

    Attributes
    ----------
    x : dask.array.Array
        The rows, chunked along rows only.
    x_mem, w_mem : ndarray or None
        The in-memory arrays when the input was numpy (None for Dask / Zarr input).
    w : dask.array.Array or None
        Row weights chunked like ``x``.
    scheduler : str or None
        ``"threads"`` for in-memory input, else None (the current default scheduler).
    lazy : bool
        Whether results of per-row methods should be returned as Dask arrays.
    feature_names : tuple of str or None
        The names of ``x``'s columns, in order, when the input had them (a DataFrame, Parquet
        or CSV); None for arrays.
    ranges : (lo, hi) of ndarray, or None
        For non-empty in-memory input, each column's smallest and largest value.
    """

    def __init__(self, x, x_mem, w, w_mem, scheduler, lazy, feature_names=None):
        self.x, self.x_mem, self.w, self.w_mem = x, x_mem, w, w_mem
        self.scheduler, self.lazy = scheduler, lazy
        self.feature_names: tuple[str, ...] | None = feature_names
        # in memory: each column's smallest and largest value (float64), taken by the checks
        self.ranges: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def checked(self) -> bool:
        return self.x_mem is not None

    def shift(self, n_rows: int = 1024) -> np.ndarray:
        """A row-like offset near the data (mean of the first rows) to centre moments on."""
        head = self.x_mem[:n_rows] if self.x_mem is not None else compute(self.x[:n_rows])[0]
        with np.errstate(all="ignore"):
            finite = np.where(np.isfinite(head), head, np.nan).astype(np.float64)
            shift = (
                np.nanmean(finite, axis=0) if np.isfinite(finite).any() else np.zeros(head.shape[1])
            )
        shift = np.nan_to_num(shift)
        return shift.astype(self.x.dtype).astype(np.float64)


def in_memory_chunk_rows(n_samples: int, n_features: int, itemsize: int) -> int:
    """Row chunks for in-memory input: ~16 MiB each, and work for both cores on large arrays."""
    by_bytes = (16 * 2**20) // max(1, n_features * itemsize)
    by_cores = -(-n_samples // (2 * (os.cpu_count() or 1)))
    return int(max(4096, min(by_bytes, by_cores)))


# Above this many row blocks, blocks smaller than SMALL_BLOCK_BYTES get a warning: each costs
# the scheduler ~12 ms per pass on 2 cores (benchmarks/many_blocks.py), their data far less.
MANY_BLOCKS = 1000
SMALL_BLOCK_BYTES = 2**20


def _warn_small_blocks(x: da.Array, name: str) -> None:
    n_blocks = x.numblocks[0]
    mean_bytes = x.nbytes / max(n_blocks, 1)
    if n_blocks <= MANY_BLOCKS or mean_bytes >= SMALL_BLOCK_BYTES:
        return
    rows = block_rows(x.shape[0], x.shape[1] * x.dtype.itemsize, 1)
    warnings.warn(
        f"{name} has {n_blocks} row blocks of ~{mean_bytes / 2**10:.0f} KiB: every block costs "
        "the Dask scheduler milliseconds per pass, more than its data; rechunk to fewer, "
        f"larger blocks, e.g. {name}.rechunk({{0: {rows}}})",
        PerformanceWarning,
        stacklevel=4,
    )


def _read_table(X: Any, columns: Sequence[str] | None, name: str) -> tuple[Any, tuple | None]:
    """``X`` as an array and its column names: a DataFrame or a Parquet / CSV / ``.npy`` path
    is read as a `tables.Table` (with ``columns`` given, matched by name and put in their
    order); anything else is returned as it is, unnamed."""
    if isinstance(X, tables.Table):
        table = X
    elif isinstance(X, (str, os.PathLike)):
        if tables.infer_format(X) == "zarr":
            return X, None
        table = tables.read_path(X)
    elif tables.is_frame(X):
        table = tables.from_frame(X, where=name)
    else:
        return X, None
    x = table.values if table.x is None else table.x
    if columns is None or table.names is None:
        return x, table.names
    return tables.in_columns(x, table.names, columns, name), tuple(columns)


def load_input(
    X: Any, sample_weight: Any = None, name: str = "X", columns: Sequence[str] | None = None
) -> InputData:
    """Check and wrap the rows to fit or apply a model on.

    ``X`` is a numpy-like array, a Dask or Zarr array, a pandas or Dask DataFrame, a
    `tables.Table` (rows with their column names), or a path to a Zarr array or to a Parquet,
    CSV or ``.npy`` file. Given ``columns`` (the names a
    model was fitted on), named input is matched to them by name: its columns are put in that
    order, and a missing or an extra column is refused by name.
    """

    X, names = _read_table(X, columns, name)
    if isinstance(X, (str, os.PathLike)):
        X = open_zarr_array(X)
    if isinstance(X, zarr.Array):
        check_dtype_and_shape(X.dtype, X.shape, name)
        X = zarr_to_dask(X)
    if isinstance(X, da.Array):
        dtype = check_dtype_and_shape(X.dtype, X.shape, name)
        if any(np.isnan(c) for c in X.chunks[0]):
            raise ValueError(
                f"Input {name} has unknown chunk sizes; call X.compute_chunk_sizes() first."
            )
        x = X.astype(dtype) if X.dtype != dtype else X
        if len(x.chunks[1]) != 1:
            x = x.rechunk({1: -1})
        _warn_small_blocks(x, name)
        w = None
        if sample_weight is not None:
            w = da.asarray(sample_weight).astype(np.float64)
            if w.shape != (x.shape[0],):
                raise ValueError(
                    f"sample_weight.shape == {w.shape}, expected ({x.shape[0]},) "
                    f"(one weight per row of {name})."
                )
            w = w.rechunk((x.chunks[0],))
        return InputData(x, None, w, None, None, lazy=True, feature_names=names)
    x_mem = as_numpy_2d(X, name)
    ranges = None
    if x_mem.size:  # finite by now; a spread float64 cannot square is refused by name
        ranges = x_mem.min(axis=0).astype(np.float64), x_mem.max(axis=0).astype(np.float64)
        check_magnitude(ColumnProfile(x_mem.shape[0], 0, -1, False, *ranges), name)
    w_mem = None if sample_weight is None else check_sample_weight(sample_weight, x_mem.shape[0])
    rows = in_memory_chunk_rows(*x_mem.shape, x_mem.dtype.itemsize)
    x = da.from_array(x_mem, chunks=(rows, x_mem.shape[1]), name=False)
    w = None if w_mem is None else da.from_array(w_mem, chunks=(rows,), name=False)
    data = InputData(x, x_mem, w, w_mem, "threads", lazy=False, feature_names=names)
    data.ranges = ranges
    return data
