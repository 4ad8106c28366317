"""Zarr input: arrays opened read-only and read as Dask row blocks, chunk by chunk, with a
clear error for a chunk that cannot be read and a count of chunks absent from a store."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import zarr

from .paths import absolute_path

__all__ = [
    "MIN_BLOCKS",
    "TARGET_BLOCK_BYTES",
    "ZarrChunkError",
    "block_rows",
    "missing_chunks",
    "open_zarr_array",
    "zarr_to_dask",
]


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
