"""Tabular input: pandas and Dask DataFrames, Parquet and CSV files, ``.npy`` files.

Every reader gives a `Table`: the rows as a Dask array of whole rows with every chunk's row
count known, and the column names where the input has them. Columns are matched by name
(`Table.columns`), so a table whose columns come in another order gives the same rows.
Errors are `ValueError` (``FileNotFoundError`` for a missing path) and name the problem: a
missing or non-numeric column, an unreadable file, an array that is not 2-D.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

__all__ = [
    "Table",
    "from_frame",
    "in_columns",
    "infer_format",
    "is_frame",
    "read_path",
    "unmatched_columns",
]

# Rows per Dask chunk for a memory-mapped .npy file: whole rows, about 16 MiB a chunk.
NPY_CHUNK_BYTES = 16 * 2**20
_SHOWN = 20  # column names a message lists before "…"


@dataclass(frozen=True)
class Table:
    """Rows read from a table, with the names of their columns.

    A `Table` is accepted wherever the estimators and `dgmm.select` take data: its names
    become the fitted ``feature_names_in_`` (e.g. rows standardised as a Dask array that keep
    the names of the table they came from).

    Attributes
    ----------
    x : dask.array.Array
        The rows, chunked along rows only, every chunk's length known.
    names : tuple of str or None
        The column names, in the order of ``x``'s columns; None for unnamed input (``.npy``).
    values : ndarray or None
        The rows in memory when the input was a pandas frame (``x`` is None then).
    """

    x: da.Array | None
    names: tuple[str, ...] | None
    values: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.names is None:
            return
        rows = self.values if self.x is None else self.x
        if not all(isinstance(c, str) for c in self.names):
            raise ValueError("a Table's column names must be strings")
        if len(set(self.names)) != len(self.names):
            twice = sorted({c for c in self.names if self.names.count(c) > 1})
            raise ValueError(f"a Table has more than one column named {_listed(twice)}")
        if rows is not None and rows.ndim == 2 and rows.shape[1] != len(self.names):
            raise ValueError(
                f"a Table has {len(self.names)} column names for {rows.shape[1]} columns"
            )


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(str(c)) for c in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def infer_format(path: str | os.PathLike) -> str:
    """The format a path names: by its suffix (``.parquet``/``.pq``, ``.csv``/``.csv.gz``/
    ``.tsv``, ``.npy``), a folder of Parquet files, else Zarr."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".tsv")) or ("*" in name and ".csv" in name):
        return "csv"
    if name.endswith(".npy"):
        return "npy"
    if p.is_dir() and not (p / "zarr.json").exists() and any(p.glob("*.parquet")):
        return "parquet"
    return "zarr"


def is_frame(X: Any) -> bool:
    """Whether ``X`` is a pandas or Dask DataFrame (checked without importing either)."""
    module = type(X).__module__
    root = module.split(".")[0]
    return type(X).__name__ == "DataFrame" and root in ("pandas", "dask", "dask_expr")


def unmatched_columns(names: Sequence[str], wanted: Sequence[str], where: str) -> str | None:
    """A one-line refusal when the columns ``names`` of ``where`` are not ``wanted`` (as a set,
    any order), naming the missing and the extra ones; None when they match."""
    have = set(names)
    missing = [c for c in wanted if c not in have]
    extra = [c for c in names if c not in set(wanted)]
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"lacks {len(missing)} column(s) the model was fitted on: {_listed(missing)}")
    if extra:
        parts.append(f"has {len(extra)} column(s) the model was not fitted on: {_listed(extra)}")
    return f"{where}: {'; '.join(parts)} (columns are matched by name)"


def in_columns(x: Any, names: Sequence[str], wanted: Sequence[str], where: str) -> Any:
    """The rows ``x`` (columns ``names``) with the columns ``wanted``, in that order: matched
    by name; a missing or an extra column is refused (`unmatched_columns`, a ValueError)."""
    refusal = unmatched_columns(names, wanted, where)
    if refusal is not None:
        raise ValueError(refusal)
    order = [list(names).index(c) for c in wanted]
    return x if order == list(range(len(order))) else x[:, order]


def _select(frame: Any, columns: Sequence[str] | None, where: str) -> Any:
    """The frame restricted to ``columns`` (all by default) in that order, every one numeric."""
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        twice = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"{where} has more than one column named {_listed(twice)}")
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(
                f"column(s) {_listed(missing)} not in {where}; its columns are {_listed(names)}"
            )
        by_name = dict(zip(names, frame.columns, strict=True))
        frame = frame[[by_name[c] for c in columns]]
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    bad = [c for c, t in frame.dtypes.items() if not (is_numeric_dtype(t) or is_bool_dtype(t))]
    if bad:
        kinds = ", ".join(str(frame.dtypes[c]) for c in bad[:5])
        raise ValueError(
            f"column(s) {_listed([str(c) for c in bad])} of {where} are not numeric ({kinds}); "
            "choose numeric columns"
        )
    if len(frame.columns) == 0:
        raise ValueError(f"{where} has no columns to cluster")
    return frame


def from_frame(frame: Any, columns: Sequence[str] | None = None, where: str = "X") -> Table:
    """A pandas or Dask DataFrame as a `Table`: ``columns`` (by name, in that order; all by
    default), each numeric. A pandas frame's rows stay in memory (`Table.values`, ``x`` None);
    a Dask frame's partition lengths are computed once here."""
    return _table(_select(frame, columns, where))


def _table(frame: Any) -> Table:
    # scikit-learn's convention: a frame has feature names when every column name is a string
    names = tuple(frame.columns) if all(isinstance(c, str) for c in frame.columns) else None
    dtypes = list(frame.dtypes)
    plain = all(isinstance(t, np.dtype) for t in dtypes)
    one = dtypes[0] if plain and len(set(dtypes)) == 1 else np.dtype(np.float64)
    if type(frame).__module__.split(".")[0] == "pandas":
        # mixed and extension dtypes become one float array; a missing value becomes NaN, so
        # the check of the rows names it
        return Table(None, names, frame.to_numpy(dtype=one, na_value=np.nan))
    if one != dtypes[0] or not plain:
        frame = frame.astype(one)
    x = frame.to_dask_array(lengths=True)
    if 0 in x.chunks[0] and x.shape[0]:  # empty partitions (Spark writes empty part files)
        x = x.rechunk({0: max(x.chunks[0])})
    return Table(x, names)


def read_path(
    path: str | os.PathLike, fmt: str | None = None, columns: Sequence[str] | None = None
) -> Table:
    """A Parquet, CSV or ``.npy`` file as a `Table` (``fmt`` None: `infer_format`).

    Parquet stores its partitions' row counts; a CSV is read once here for them. A ``.npy``
    file is memory-mapped: nothing is read until a pass reads its rows.

    Raises
    ------
    FileNotFoundError
        If nothing is at ``path``.
    ValueError
        If the file cannot be read in that format, ``columns`` names a column it lacks or a
        non-numeric one, or a ``.npy`` array is not 2-D.
    """
    fmt = fmt or infer_format(path)
    p = Path(path)
    if not p.exists() and not (fmt == "csv" and "*" in p.name and any(p.parent.glob(p.name))):
        raise FileNotFoundError(f"'{p}' does not exist")
    if fmt == "npy":
        if columns is not None:
            raise ValueError(f"'{p}' is a .npy array: it has no named columns to select")
        return Table(_read_npy(p), None)
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"'{p}': {fmt!r} is not a table format (parquet, csv, npy)")
    import dask.dataframe as dd

    where = f"'{p}'"
    try:
        if fmt == "parquet":
            frame = dd.read_parquet(str(p))
        else:
            frame = dd.read_csv(str(p), sep="\t" if p.name.endswith(".tsv") else ",")
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise _unreadable(where, fmt, e) from None
    frame = _select(frame, columns, where)
    try:
        return _table(frame)  # a CSV is read here, for its row counts
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise _unreadable(where, fmt, e) from None


def _unreadable(where: str, fmt: str, e: BaseException) -> ValueError:
    return ValueError(f"cannot read {where} as {fmt}: {' '.join(str(e).split())[:300]}")


def _read_npy(path: Path) -> da.Array:
    try:
        arr = np.load(str(path), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read '{path}' as .npy: {' '.join(str(e).split())}") from None
    if arr.ndim != 2:
        raise ValueError(f"'{path}' holds an array of shape {arr.shape}; expected (rows, features)")
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
