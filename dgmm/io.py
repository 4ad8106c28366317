"""Zarr input and output, and saving models without pickle (JSON + ``.npz``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from dask.array.core import PerformanceWarning

from .paths import absolute_path

MODEL_FORMAT = "dgmm-gaussian-mixture"
MODEL_VERSION = 1
_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
_INIT_ARRAYS = ("weights_init", "means_init", "precisions_init")
_ARRAY_TYPES = (np.ndarray, list, tuple)


def open_zarr_array(path: str | os.PathLike) -> zarr.Array:
    """Open a Zarr array read-only, with a message that says what is wrong if it is not one.

    A path may point into a group (``store.zarr/X``). The array is opened at the absolute
    path (`absolute_path`), so tasks that read it on workers in other folders read the same.
    """
    p = absolute_path(path, "the Zarr path")
    if not p.exists():
        raise FileNotFoundError(f"No Zarr array at '{path}': the path does not exist.")
    if p.is_file():
        raise ValueError(f"'{path}' is a file, not a Zarr array (a Zarr store is a folder).")
    if not any((p / meta).exists() for meta in ("zarr.json", ".zarray", ".zgroup")):
        raise ValueError(
            f"'{path}' is not a Zarr array: the folder holds no Zarr metadata (zarr.json, "
            ".zarray or .zgroup)."
        )
    try:
        node = zarr.open(store=str(p), mode="r")
    except Exception as e:
        raise ValueError(
            f"'{path}' is not a readable Zarr array ({type(e).__name__}: {e})."
        ) from None
    if isinstance(node, zarr.Group):
        names = sorted(node.array_keys())
        hint = f"; arrays in it: {names}" if names else " and holds no arrays"
        raise ValueError(
            f"'{path}' is a Zarr group, not an array: name the array inside it "
            f"(e.g. '{path}/{names[0] if names else 'X'}'){hint}."
        )
    return node


class ZarrChunkError(OSError):
    """A chunk of a Zarr array could not be read or decoded."""


class _ChunkReader:
    """Row blocks of a Zarr array for Dask; a chunk that fails to read is named in the error."""

    def __init__(self, arr: zarr.Array):
        self.arr = arr
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __dask_tokenize__(self) -> tuple:
        return (str(self.arr.store_path), self.shape, self.arr.chunks, str(self.dtype))

    def __getitem__(self, key: tuple) -> np.ndarray:
        try:
            return self.arr[key]
        except Exception as e:
            rows = key[0] if isinstance(key, tuple) else key
            bad, e = self._failing_row(rows, e)
            raise ZarrChunkError(
                f"cannot read rows {rows.start} to {rows.stop - 1} of the Zarr array "
                f"'{_where(self.arr)}': chunk {_chunk_names(self.arr, bad)} is corrupt or "
                f"unreadable ({type(e).__name__}: {e})"
            ) from e

    def _failing_row(self, rows: slice, error: Exception) -> tuple[int, Exception]:
        """The first row of the stored chunk that fails, when a block spans several."""
        step = self.arr.chunks[0]
        for r0 in range(rows.start, rows.stop, step):
            try:
                self.arr[r0 : min(r0 + step, rows.stop)]
            except Exception as e:
                return r0, e
        return rows.start, error


def _where(arr: zarr.Array) -> str:
    root = getattr(arr.store, "root", None)
    return str(Path(root) / arr.path) if root is not None else str(arr.store_path)


def _grid(arr: zarr.Array) -> tuple[int, ...]:
    """The stored-object grid: shards when the array is sharded, else chunks."""
    block = arr.shards or arr.chunks
    return tuple(-(-n // c) for n, c in zip(arr.shape, block, strict=True))


def _chunk_names(arr: zarr.Array, row: int) -> str:
    block = arr.shards or arr.chunks
    i = row // block[0]
    keys = [arr.metadata.encode_chunk_key((i, *rest)) for rest in np.ndindex(*_grid(arr)[1:])]
    return keys[0] if len(keys) == 1 else f"{keys[0]} (or another of {len(keys)} in that row)"


def missing_chunks(arr: zarr.Array) -> list[tuple[str, int, int]]:
    """Stored chunks (or shards) of a local Zarr array that are absent: ``(key, row0, row1)``.

    Zarr reads an absent chunk as the fill value, so a deleted chunk file would pass silently as
    data; callers that need every row to be real data check this first. Only local stores are
    listed (others return no names).
    """
    if arr.nchunks_initialized == arr.nchunks or getattr(arr.store, "root", None) is None:
        return []
    base = Path(arr.store.root) / arr.path
    rows = (arr.shards or arr.chunks)[0]
    out = []
    for coords in np.ndindex(*_grid(arr)):
        key = arr.metadata.encode_chunk_key(coords)
        if not (base / key).exists():
            r0 = coords[0] * rows
            out.append((key, r0, min(r0 + rows, arr.shape[0]) - 1))
    return out


# Small Zarr chunks are read several to a Dask block, up to this many bytes, while at least
# MIN_BLOCKS blocks remain for the workers to share: every block is a few tasks, which cost the
# scheduler milliseconds however little they read (~12 ms a block measured on 2 cores,
# benchmarks/many_blocks.py).
TARGET_BLOCK_BYTES = 16 * 2**20
MIN_BLOCKS = 64


def block_rows(n_rows: int, row_bytes: int, stored_rows: int) -> int:
    """Rows per Dask block over stored chunks of ``stored_rows``: a multiple of them."""
    n_stored = -(-n_rows // stored_rows) if n_rows else 0
    by_size = TARGET_BLOCK_BYTES // max(stored_rows * row_bytes, 1)
    group = max(1, min(by_size, n_stored // MIN_BLOCKS))
    return stored_rows * group


def zarr_to_dask(arr: zarr.Array) -> da.Array:
    """A Dask view of a Zarr array, columns in one block and rows in blocks of whole stored
    chunks (one each, or several when they are small; see `block_rows`).

    The array is inlined into each read task (no separate "original" key): otherwise Dask's graph
    optimisation gives one chunk key different definitions in different passes, which the
    distributed scheduler warns about (dask/dask#9888).
    """
    stored = arr.chunks[0]  # a shard's inner chunks can be read alone
    # blocks are sized as computed: other dtypes than float32 become float64 as they are read
    itemsize = max(arr.dtype.itemsize, 4 if arr.dtype == np.float32 else 8)
    row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * itemsize
    rows = block_rows(arr.shape[0], row_bytes, stored)
    chunks = (rows, *arr.shape[1:]) if arr.ndim == 2 else (rows,)
    reader = _ChunkReader(arr)
    return da.from_array(
        reader,
        chunks=chunks,
        name="from-zarr-" + dask.base.tokenize(reader),
        inline_array=True,
        asarray=False,
        fancy=False,
        meta=np.empty((0,) * arr.ndim, dtype=arr.dtype),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise TypeError(f"cannot store parameter value of type {type(value).__name__}")


def save_model(est: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a fitted estimator to a directory (``model.json`` + ``arrays.npz``), atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True to replace it.")
    params = est.get_params()
    fitted = _ARRAYS + getattr(est, "_FITTED_ARRAYS", ())
    arrays = {name: np.asarray(getattr(est, name)) for name in fitted}
    array_params = [k for k, v in params.items() if isinstance(v, _ARRAY_TYPES)]
    for name in array_params:
        arrays[name] = np.asarray(params[name])
        params[name] = None
    if not isinstance(params["random_state"], (int, np.integer, type(None))):
        params["random_state"] = None  # a RandomState's state is not part of the model
    meta = {
        "format": MODEL_FORMAT,
        "class": type(est).__name__,
        "version": MODEL_VERSION,
        "params": {k: _jsonable(v) for k, v in params.items()},
        "attributes": {
            "converged_": bool(est.converged_),
            "n_iter_": int(est.n_iter_),
            "lower_bound_": float(est.lower_bound_),
            "lower_bounds_": [float(v) for v in est.lower_bounds_],
            "n_features_in_": int(est.n_features_in_),
            **{k: float(getattr(est, k)) for k in getattr(est, "_FITTED_SCALARS", ())},
        },
        "array_params": array_params,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)
    (tmp / "model.json").write_text(json.dumps(meta, indent=2))
    np.savez(tmp / "arrays.npz", **arrays)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def saved_class(path: str | os.PathLike) -> str:
    """The estimator class a saved model was written by (older models: GaussianMixture)."""
    meta_file = Path(path) / "model.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"No dgmm model at '{path}' (missing model.json).")
    name = json.loads(meta_file.read_text()).get("class", "GaussianMixture")
    if name not in ("GaussianMixture", "BayesianGaussianMixture"):
        raise ValueError(f"'{path}' holds a model of unknown class {name!r}.")
    return name


def load_model(path: str | os.PathLike, cls: type) -> Any:
    """Read a model written by `save_model`; no pickle is involved."""
    path = Path(path)
    meta_file = path / "model.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"No dgmm model at '{path}' (missing model.json).")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
        raise ValueError(
            f"'{path}' is not a dgmm model of version {MODEL_VERSION}: "
            f"format={meta.get('format')!r}, version={meta.get('version')!r}."
        )
    if meta.get("class", "GaussianMixture") != cls.__name__:
        raise ValueError(
            f"'{path}' holds a {meta['class']}, not a {cls.__name__}; load it with dgmm.load."
        )
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    params = dict(meta["params"])
    for name in meta.get("array_params", _INIT_ARRAYS):
        params[name] = arrays.pop(name, None)
    est = cls(**params)
    for name, value in {**meta["attributes"], **arrays}.items():
        setattr(est, name, value)
    est._set_derived()
    return est


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
    """

    def __init__(self, x, x_mem, w, w_mem, scheduler, lazy):
        self.x, self.x_mem, self.w, self.w_mem = x, x_mem, w, w_mem
        self.scheduler, self.lazy = scheduler, lazy

    @property
    def checked(self) -> bool:
        return self.x_mem is not None

    def shift(self, n_rows: int = 1024) -> np.ndarray:
        """A row-like offset near the data (mean of the first rows) to centre moments on."""
        from ._reduce import compute

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


def load_input(X: Any, sample_weight: Any = None, name: str = "X") -> InputData:
    """Check and wrap numpy / Dask / Zarr input (or a path to a Zarr array)."""
    from .validation import as_numpy_2d, check_dtype_and_shape, check_sample_weight

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
        return InputData(x, None, w, None, None, lazy=True)
    x_mem = as_numpy_2d(X, name)
    w_mem = None if sample_weight is None else check_sample_weight(sample_weight, x_mem.shape[0])
    rows = in_memory_chunk_rows(*x_mem.shape, x_mem.dtype.itemsize)
    x = da.from_array(x_mem, chunks=(rows, x_mem.shape[1]), name=False)
    w = None if w_mem is None else da.from_array(w_mem, chunks=(rows,), name=False)
    return InputData(x, x_mem, w, w_mem, "threads", lazy=False)
