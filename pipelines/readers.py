"""Input formats beyond Zarr: Parquet and CSV (through Dask's readers) and ``.npy`` files.

Each reader returns the rows as a Dask array of whole rows, with every chunk's row count known
(computed once when the file does not store it), or raises a `ConfigError` that names the
problem: a missing path, a missing or non-numeric column, an array that is not 2-D.
"""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np

from .schema import ConfigError

# Rows per Dask chunk for a memory-mapped .npy file: whole rows, about 16 MiB a chunk.
NPY_CHUNK_BYTES = 16 * 2**20


def _check_columns(frame, columns: list[str] | None, where: str):
    """The frame restricted to ``columns`` (all by default), every one of them numeric."""
    names = [str(c) for c in frame.columns]
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:5])
            raise ConfigError(
                f"data.columns: {shown} not in {where}; its columns are "
                f"{', '.join(repr(c) for c in names[:20])}{' …' if len(names) > 20 else ''}"
            )
        frame = frame[columns]
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    bad = [str(c) for c, t in frame.dtypes.items() if not (is_numeric_dtype(t) or is_bool_dtype(t))]
    if bad:
        raise ConfigError(
            f"data: column(s) {', '.join(repr(c) for c in bad[:5])} of {where} are not numeric "
            f"({', '.join(str(frame.dtypes[c]) for c in bad[:5])}); choose numeric columns with "
            "data.columns"
        )
    if len(frame.columns) == 0:
        raise ConfigError(f"data: {where} has no columns to cluster")
    return frame


def read_table(path: str | Path, fmt: str, columns: list[str] | None) -> da.Array:
    """Parquet or CSV rows as a Dask array; partition row counts are computed once here (a
    CSV is read once for them; Parquet stores them)."""
    import dask.dataframe as dd

    where = f"'{path}'"
    try:
        if fmt == "parquet":
            frame = dd.read_parquet(str(path))
        else:
            frame = dd.read_csv(str(path), sep="\t" if str(path).endswith(".tsv") else ",")
        frame = _check_columns(frame, columns, where)
        x = frame.to_dask_array(lengths=True)
        if 0 in x.chunks[0] and x.shape[0]:  # empty part files (Spark writes them)
            x = x.rechunk({0: max(x.chunks[0])})
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(
            f"data: cannot read {where} as {fmt}: {' '.join(str(e).split())[:300]}"
        ) from None
    return x


def read_npy(path: str | Path) -> da.Array:
    """A ``.npy`` file memory-mapped (nothing read until a pass reads it), in row chunks."""
    try:
        arr = np.load(str(path), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"data: cannot read '{path}' as .npy: {' '.join(str(e).split())}"
        ) from None
    if arr.ndim != 2:
        raise ConfigError(
            f"data: '{path}' holds an array of shape {arr.shape}; expected (rows, features)"
        )
    rows = max(1, NPY_CHUNK_BYTES // max(1, arr.shape[1] * arr.dtype.itemsize))
    # Each block opens the file itself: the graph holds the path, not the array (a memory map
    # in the graph would be pickled with all its data).
    blocks = [
        da.from_delayed(
            dask.delayed(_npy_rows)(str(path), s, min(s + rows, arr.shape[0])),
            shape=(min(s + rows, arr.shape[0]) - s, arr.shape[1]),
            dtype=arr.dtype,
        )
        for s in range(0, arr.shape[0], rows)
    ]
    return da.concatenate(blocks) if blocks else da.from_array(np.asarray(arr))


def _npy_rows(path: str, start: int, stop: int) -> np.ndarray:
    return np.array(np.load(path, mmap_mode="r", allow_pickle=False)[start:stop])
