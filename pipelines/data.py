"""Synthetic Gaussian-mixture data written to Zarr chunk by chunk, and opening a run's data."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import zarr

from dgmm.io import missing_chunks, open_zarr_array, zarr_to_dask
from dgmm.paths import absolute_path
from dgmm.tables import Table, infer_format, read_path
from dgmm.validation import check_dtype_and_shape

from .outputs import publish
from .paths import (
    OUTPUT_KIND_ATTR,
    check_companion,
    check_output_path,
    claim,
    claim_companion,
    remove_companion,
)
from .schema import ConfigError, DataConfig

logger = logging.getLogger(__name__)


def mixture_truth(n_features: int, n_components: int, seed: int, separation: float):
    """The seeded mixture that `make_data` samples from: weights, means, covariance factors."""
    rng = np.random.default_rng([seed, 0xD6])
    weights = rng.uniform(0.5, 1.5, n_components)
    weights /= weights.sum()
    means = rng.normal(scale=separation, size=(n_components, n_features))
    a = 0.5 * rng.normal(size=(n_components, n_features, n_features)) / np.sqrt(n_features)
    chol = a + np.eye(n_features)  # x = mean + z @ chol  =>  cov = cholᵀ chol
    return weights, means, chol


def _block(block_id, n_rows, seed, weights, means, chol, dtype):
    rng = np.random.default_rng([seed, block_id])
    labels = rng.choice(len(weights), size=n_rows, p=weights)
    z = rng.standard_normal((n_rows, means.shape[1]))
    x = np.empty_like(z)
    for k in range(len(weights)):  # one matrix product per component
        rows = labels == k
        x[rows] = z[rows] @ chol[k] + means[k]
    return x.astype(dtype), labels.astype(np.int32)


def make_data(
    path: str | Path,
    n_samples: int,
    n_features: int,
    n_components: int,
    seed: int = 0,
    chunk_rows: int = 100_000,
    dtype: str = "float64",
    separation: float = 6.0,
    compress: bool = False,
    overwrite: bool = False,
) -> zarr.Group:
    """Write a Zarr group with ``X`` (rows × features) and the true ``labels``, chunk by chunk.

    Each chunk is drawn from its own seeded stream, in bounded memory (a few chunks at a time),
    so datasets larger than RAM can be made; the same arguments give the same bytes.
    """
    check_generate_args(n_samples, n_features, n_components, chunk_rows, dtype, separation)
    path = absolute_path(path, "make-data's output")
    check_output_path(path, overwrite, ("make-data",), "--overwrite", "path")
    check_disk_room(path, n_samples * (n_features * np.dtype(dtype).itemsize + 4))
    weights, means, chol = mixture_truth(n_features, n_components, seed, separation)
    tmp = path.with_name(f".{path.name}.partial")
    check_companion(tmp, path, "partial")
    with claim(path):
        claim_companion(tmp, path, "partial", fresh=True)
        try:
            _write_mixture(tmp, n_samples, chunk_rows, dtype, seed, weights, means, chol, compress)
        except BaseException:
            remove_companion(tmp, path, "partial")
            raise
        publish(tmp, path)  # an earlier make-data output (checked above) is replaced only now
    logger.info(
        "wrote %s: X %s %s in chunks of %d rows", path, (n_samples, n_features), dtype, chunk_rows
    )
    return zarr.open_group(str(path), mode="r")


def check_disk_room(path: Path, nbytes: int) -> None:
    """Refuse to write ``nbytes`` (uncompressed) where the file system has less room."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise ConfigError(
            f"make-data: the data needs about {nbytes / 2**30:.3g} GiB but '{folder}' has "
            f"{free / 2**30:.3g} GiB free; make fewer rows or features, or choose another folder"
        )


def check_generate_args(
    n_samples: int,
    n_features: int,
    n_components: int,
    chunk_rows: int,
    dtype: str,
    separation: float,
) -> None:
    """Refuse sizes that cannot make data, before anything is written (one-line errors)."""
    for name, value in (
        ("n-samples", n_samples),
        ("n-features", n_features),
        ("n-components", n_components),
        ("chunk-rows", chunk_rows),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"make-data: --{name} must be a whole number >= 1, got {value!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ConfigError(f"make-data: --dtype must be float32 or float64, got {dtype!r}")
    if not np.isfinite(separation) or separation <= 0:
        raise ConfigError(f"make-data: --separation must be > 0 and finite, got {separation!r}")


def _write_mixture(tmp: Path, n_samples, chunk_rows, dtype, seed, weights, means, chol, compress):
    n_features = means.shape[1]
    group = zarr.open_group(str(tmp), mode="a")  # a new folder, holding only its marker
    codec = {} if compress else {"compressors": None}
    x_arr = group.create_array(
        "X",
        shape=(n_samples, n_features),
        chunks=(chunk_rows, n_features),
        dtype=dtype,
        # zarr reads a missing chunk as the fill value: NaN makes a lost chunk fail the NaN
        # check of the first pass instead of passing for rows of zeros
        fill_value=np.nan,
        dimension_names=["sample", "feature"],
        **codec,
    )
    y_arr = group.create_array(
        "labels",
        shape=(n_samples,),
        chunks=(chunk_rows,),
        dtype="int32",
        fill_value=-1,
        dimension_names=["sample"],
    )
    blocks = [
        dask.delayed(_block, nout=2)(
            i, min(chunk_rows, n_samples - s), seed, weights, means, chol, dtype
        )
        for i, s in enumerate(range(0, n_samples, chunk_rows))
    ]
    xs = [
        da.from_delayed(b[0], (min(chunk_rows, n_samples - s), n_features), dtype=dtype)
        for b, s in zip(blocks, range(0, n_samples, chunk_rows), strict=True)
    ]
    ys = [
        da.from_delayed(b[1], (min(chunk_rows, n_samples - s),), dtype=np.int32)
        for b, s in zip(blocks, range(0, n_samples, chunk_rows), strict=True)
    ]
    da.store([da.concatenate(xs), da.concatenate(ys)], [x_arr, y_arr], lock=False)
    group.attrs.update(
        {
            "generator": "dgmm make-data",
            OUTPUT_KIND_ATTR: "make-data",
            "seed": seed,
            "weights": weights.tolist(),
            "means": means.tolist(),
            "covariances": np.einsum("kji,kjl->kil", chol, chol).tolist(),
            "complete": True,
        }
    )


def data_path(cfg: DataConfig) -> Path:
    return Path(cfg.path) / cfg.array if cfg.array else Path(cfg.path)


def open_data(cfg: DataConfig) -> Table:
    """The configured rows as a Dask array, with their column names where the data has them
    (Parquet and CSV), checked without reading its values (a CSV is read once for its row
    counts).

    Checked: the path, dtype and shape, that chunks span whole rows, and that Parquet or CSV
    columns exist and are numeric. A chunk absent from a Zarr store is read as the array's fill
    value, as Zarr defines it (Zarr does not store a chunk equal to the fill value): with a NaN
    fill value, a lost chunk is refused by the first pass's NaN check; `absent_chunks` counts
    them for ``dgmm validate``.
    """
    p = data_path(cfg)
    fmt = cfg.format or infer_format(cfg.path)
    if not p.exists() and not (fmt == "csv" and "*" in p.name and any(p.parent.glob(p.name))):
        where = "array" if cfg.array else "path"
        raise ConfigError(f"data {where} '{p}' does not exist")
    if fmt != "zarr":
        try:
            table = read_path(p, fmt, cfg.columns)
            dtype = check_dtype_and_shape(table.x.dtype, table.x.shape, "data")
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(f"data: {e}") from None
        x = table.x
        if cfg.chunk_rows:
            x = x.rechunk({0: cfg.chunk_rows})
        return Table(x if x.dtype == dtype else x.astype(dtype), table.names)
    try:
        arr = open_zarr_array(p)
        dtype = check_dtype_and_shape(arr.dtype, arr.shape, "data")
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"data: {e}") from None
    if arr.chunks[1] != arr.shape[1]:
        raise ConfigError(
            f"data: the chunks of '{p}' {arr.chunks} split its {arr.shape[1]} columns; every pass "
            f"reads whole rows, so store it with chunks spanning all columns, e.g. "
            f"({arr.chunks[0]}, {arr.shape[1]})"
        )
    x = zarr_to_dask(arr)
    if cfg.chunk_rows:
        x = x.rechunk({0: cfg.chunk_rows})
    # every later step (fits, labels, plots) sees float32 or float64: float16, long double,
    # integers and booleans are cast as each block is read
    return Table(x if x.dtype == dtype else x.astype(dtype), None)


def ensure_data(cfg: DataConfig) -> None:
    """Generate the configured synthetic data if it is asked for and missing."""
    if cfg.generate is not None and not Path(cfg.path).exists():
        g = cfg.generate
        make_data(
            cfg.path,
            g.n_samples,
            g.n_features,
            g.n_components,
            g.seed,
            g.chunk_rows,
            g.dtype,
            g.separation,
        )


def absent_chunks(cfg: DataConfig) -> str | None:
    """A line on the chunks absent from a local Zarr store (read as the fill value), or None."""
    fmt = cfg.format or infer_format(cfg.path)
    if fmt != "zarr":
        return None
    arr = open_zarr_array(data_path(cfg))
    absent = missing_chunks(arr)
    if not absent:
        return None
    shown = ", ".join(f"{key} (rows {r0} to {r1})" for key, r0, r1 in absent[:3])
    more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
    return (
        f"{len(absent)} chunk(s) are absent from the store and read as the fill value "
        f"{arr.fill_value}: {shown}{more}"
    )
