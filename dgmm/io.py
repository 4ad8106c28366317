"""Zarr input and output, and saving models without pickle (JSON + ``.npz``)."""

from __future__ import annotations

import difflib
import json
import math
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from dask.array.core import PerformanceWarning

from . import tables
from .covariance import CovarianceType, get_covariance_type
from .paths import absolute_path
from .variational import mean_weights

__all__ = [
    "ModelFileError",
    "ZarrChunkError",
    "load_input",
    "load_model",
    "missing_chunks",
    "open_zarr_array",
    "save_model",
    "saved_class",
    "zarr_to_dask",
]


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
            **(
                {"feature_names_in_": [str(c) for c in est.feature_names_in_]}
                if hasattr(est, "feature_names_in_")
                else {}
            ),
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


class ModelFileError(ValueError):
    """A saved model's file is missing, unreadable, or holds what no fitted model holds.

    The message is one line: the file, the field, what was expected and what was found.
    """


# The parameters either estimator accepts as arrays (`save_model` stores them in arrays.npz).
_ARRAY_PARAMS = (*_INIT_ARRAYS, "mean_prior", "covariance_prior")
# Parameters added after the first models were written: absent, they take their defaults (only
# fitting reads them).
_LATER_PARAMS = ("strategy", "sample_size")
# Parameters that set the shapes the others are checked against: checked first.
_SHAPING_PARAMS = ("n_components", "covariance_type", "weight_concentration_prior_type")
_TOP_LEVEL = ("format", "class", "version", "params", "attributes", "array_params")
_CLASSES = ("GaussianMixture", "BayesianGaussianMixture")
# Loose: the covariances and precision factors of real fits agree to ~1e-11 (every type,
# float32 and ill-conditioned data, condition numbers past 1e10); one edited value misses by far
# more.
_FACTOR_TOL = 1e-6
# The largest quadratic form allowed between the model's own means and the origin: 1e50
# standard deviations, beyond any fit and far inside float64, so that no float64 E-step on rows
# among the components overflows (float32 data computes in float32, whose smaller range is the
# E-step's own limit whatever the model).
_MAX_TERM = 1e100


def _one_line(value: Any, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: Any) -> str:
    """A found value for a message: its repr, on one short line."""
    return _one_line(repr(value), 80)


def _bad(file: Path, field: str, expected: str, found: str) -> ModelFileError:
    return ModelFileError(f"{file}: {field}: expected {expected}, found {found}")


def _is_int(value: Any) -> bool:
    """A JSON integer within 64 bits (no count or seed of a model is larger)."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63


def _is_finite(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _read_meta(path: Path) -> dict:
    """``model.json`` of a saved model: a UTF-8 JSON object of dgmm's format and version."""
    file = path / "model.json"
    if not file.exists():
        raise FileNotFoundError(f"No dgmm model at '{path}' (missing model.json).")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(file, "text", "UTF-8", f"byte {e.start} ({e.object[e.start]:#04x})") from None
    except OSError as e:
        raise ModelFileError(f"{file}: cannot be read ({_one_line(e)})") from None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise _bad(file, "text", "JSON", f"invalid JSON ({_one_line(e)})") from None
    if not isinstance(meta, dict):
        raise _bad(file, "top level", "a JSON object", f"a {type(meta).__name__}")
    found = (meta.get("format"), meta.get("version"))
    if found[0] != MODEL_FORMAT or not (_is_int(found[1]) and found[1] == MODEL_VERSION):
        raise ModelFileError(
            f"{file}: format, version: expected {MODEL_FORMAT!r}, {MODEL_VERSION}, found "
            f"{_shown(found[0])}, {_shown(found[1])}: '{path}' is not a dgmm model of version "
            f"{MODEL_VERSION}."
        )
    unknown = sorted(set(meta) - set(_TOP_LEVEL))
    if unknown:
        raise _bad(file, "top level", f"only the keys {list(_TOP_LEVEL)}", f"{unknown[0]!r}")
    return meta


def _class_name(meta: dict, file: Path) -> str:
    name = meta.get("class", "GaussianMixture")  # models written before the class was stored
    if name not in _CLASSES:
        raise _bad(file, "class", f"one of {list(_CLASSES)}", _shown(name))
    return name


def saved_class(path: str | os.PathLike) -> str:
    """The estimator class a saved model was written by (older models: GaussianMixture).

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no ``model.json``.
    ModelFileError
        If ``model.json`` is not a dgmm model file or names an unknown class.
    """
    path = Path(path)
    return _class_name(_read_meta(path), path / "model.json")


def _object(meta: dict, key: str, file: Path) -> dict:
    value = meta.get(key)
    if not isinstance(value, dict):
        raise _bad(file, key, "a JSON object", "nothing" if value is None else _shown(value))
    return value


def _check_names(found: Any, required: set, allowed: set, file: Path, where: str) -> None:
    """Unknown and missing names, each named (an unknown one with the nearest valid name)."""
    for name in sorted(set(found) - allowed, key=str):
        near = difflib.get_close_matches(str(name), sorted(allowed), n=1)
        expected = (
            f"a known name (did you mean {near[0]!r}?)" if near else f"one of {sorted(allowed)}"
        )
        raise _bad(file, f"{where}{name}", expected, repr(name))
    for name in sorted(required - set(found)):
        raise _bad(file, f"{where}{name}", "a value", "the name missing")


def _check_attributes(meta: dict, cls: type, file: Path) -> dict:
    """The fitted scalars of ``model.json``: names, types and ranges."""
    attrs = _object(meta, "attributes", file)
    scalars = getattr(cls, "_FITTED_SCALARS", ())
    names = {"converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_", *scalars}
    _check_names(attrs, names, names | {"feature_names_in_"}, file, "attributes.")

    def bad(name: str, expected: str) -> ModelFileError:
        return _bad(file, f"attributes.{name}", expected, _shown(attrs[name]))

    if not isinstance(attrs["converged_"], bool):
        raise bad("converged_", "true or false")
    if not (_is_int(attrs["n_iter_"]) and attrs["n_iter_"] >= 0):
        raise bad("n_iter_", "an integer >= 0")
    d = attrs["n_features_in_"]
    if not (_is_int(d) and d >= 1):
        raise bad("n_features_in_", "an integer >= 1")
    columns = attrs.get("feature_names_in_")  # absent: fitted on unnamed data
    if columns is not None and not (
        isinstance(columns, list)
        and len(columns) == d
        and all(isinstance(c, str) for c in columns)
        and len(set(columns)) == d
    ):
        raise bad("feature_names_in_", f"a list of {d} distinct column names (strings)")
    lb = attrs["lower_bound_"]  # -inf: a fit of max_iter=0
    if not (_is_finite(lb) or lb == -math.inf):
        raise bad("lower_bound_", "a finite number (or -Infinity, before any iteration)")
    lbs = attrs["lower_bounds_"]
    if not (isinstance(lbs, list) and all(_is_finite(v) for v in lbs)):
        raise bad("lower_bounds_", "a list of finite numbers")
    for name in scalars:  # the variational priors: positive; degrees of freedom > D - 1
        low = d - 1 if name == "degrees_of_freedom_prior_" else 0
        v = attrs[name]
        if not (_is_finite(v) and v > low):
            raise bad(name, f"a finite number > {low}")
    out = {**attrs, "lower_bound_": float(lb), "lower_bounds_": [float(v) for v in lbs]}
    if columns is not None:
        out["feature_names_in_"] = np.asarray(columns, dtype=object)
    return out


def _array_param_names(meta: dict, params: dict, file: Path) -> tuple[list[str], set[str]]:
    """The parameters stored in arrays.npz: those ``array_params`` lists (each required), or
    for models written before it was stored, any of the starting values (optional)."""
    if "array_params" not in meta:
        return [], set(_INIT_ARRAYS) & set(params)
    names = meta["array_params"]
    allowed = set(params) & set(_ARRAY_PARAMS)
    if not (
        isinstance(names, list)
        and all(isinstance(n, str) and n in allowed for n in names)
        and len(set(names)) == len(names)
    ):
        raise _bad(
            file, "array_params", f"a list of distinct names of {sorted(allowed)}", _shown(names)
        )
    for name in names:
        if params[name] is not None:
            raise _bad(
                file, f"params.{name}", "null (the value is in arrays.npz)", _shown(params[name])
            )
    return names, set()


def _check_params(meta: dict, cls: type, file: Path) -> dict:
    """The parameters in ``model.json``: names, JSON scalar values (finite numbers)."""
    params = _object(meta, "params", file)
    names = set(cls().get_params())
    _check_names(params, names - set(_LATER_PARAMS), names, file, "params.")
    for name, value in params.items():
        if not (value is None or isinstance(value, (str, bool)) or _is_finite(value)):
            expected = (
                "a finite number (integers within 64 bits), a string, true/false or null "
                "(arrays are in arrays.npz)"
            )
            raise _bad(file, f"params.{name}", expected, _shown(value))
    return dict(params)


def _estimator_checks(est: Any, n_features: int) -> None:
    """The estimator's own checks of its parameters (ValueError naming the parameter)."""
    seed = est.random_state
    if not (seed is None or (_is_int(seed) and 0 <= seed < 2**32)):
        raise ValueError(
            f"The 'random_state' parameter must be null or in [0, 2**32); got {seed!r}"
        )
    if not isinstance(est.warm_start, bool):
        raise ValueError(
            f"The 'warm_start' parameter must be true or false; got {est.warm_start!r}"
        )
    est._check_parameters()
    est._user_init(n_features)  # starting values: shapes, ranges
    est._prior_spec(n_features)  # variational priors (None for GaussianMixture)


def _check_param_values(
    cls: type, params: dict, n_features: int, names: list[str], file: Path, where: str
) -> None:
    """Each of ``names`` through the estimator's checks, alone with the parameters that set
    shapes (checked first), so that the message names the parameter that fails; then all."""
    base: dict = {}
    shaping = [n for n in _SHAPING_PARAMS if n in params]
    for name in dict.fromkeys([*shaping, *names]):
        try:
            _estimator_checks(cls(**{**base, name: params[name]}), n_features)
        except (ValueError, TypeError, np.linalg.LinAlgError) as e:
            raise ModelFileError(f"{file}: {where}{name}: {_one_line(e)}") from None
        if name in _SHAPING_PARAMS:
            base[name] = params[name]
    try:
        _estimator_checks(cls(**params), n_features)
    except (ValueError, TypeError, np.linalg.LinAlgError) as e:
        raise ModelFileError(f"{file}: {where}{', '.join(names)}: {_one_line(e)}") from None


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, file: Path) -> np.ndarray:
    with z.open(info) as f:
        try:
            return np.lib.format.read_array(f, allow_pickle=False)
        except Exception as e:  # numpy raises several types for a damaged header or data
            found = f"{type(e).__name__}: {_one_line(e)}"
            expected = "a .npy array of numbers, read without pickle"
            raise _bad(file, info.filename, expected, found) from None


def _read_arrays(file: Path) -> dict[str, np.ndarray]:
    """Every array of ``arrays.npz``, read without pickle; a damaged archive is named as such."""
    if not file.is_file():
        raise _bad(file, "file", "the arrays saved beside model.json", "no such file")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(file) as z:
            damaged = z.testzip()  # reads every member: flipped bytes fail their CRC-32
            if damaged is not None:
                raise _bad(file, damaged, "a member matching its CRC-32", "damaged bytes")
            for info in z.infolist():
                name = info.filename.removesuffix(".npy")
                if name == info.filename or name in arrays:
                    raise _bad(file, info.filename, "one '.npy' member per array", "another")
                arrays[name] = _read_member(z, info, file)
    except ModelFileError:
        raise
    except Exception as e:  # zipfile and zlib raise several types for a damaged archive
        found = f"{type(e).__name__}: {_one_line(e)}"
        raise _bad(file, "archive", "a .npz archive written by save_model", found) from None
    return arrays


def _fitted_shapes(cls: type, params: dict, n_features: int) -> dict[str, tuple]:
    """The shape of every fitted array, from n_components, n_features_in_ and the types."""
    k, d = params["n_components"], n_features
    strategy = get_covariance_type(params["covariance_type"])
    cov = strategy.moment_shape(k, d)  # the covariances' shape, and their factors'
    shapes = {"weights_": (k,), "means_": (k, d), "covariances_": cov, "precisions_cholesky_": cov}
    if getattr(cls, "_FITTED_ARRAYS", ()):  # the variational posterior and priors
        process = params["weight_concentration_prior_type"] == "dirichlet_process"
        factor = strategy.log_det_cholesky(np.ones(strategy.moment_shape(1, 1)), 1)
        shapes |= {
            "weight_concentration_": (2, k) if process else (k,),
            "mean_precision_": (k,),
            # one per precision factor: (K,), or () for a shared (tied) one
            "degrees_of_freedom_": (k,) if np.ndim(factor) else (),
            "mean_prior_": (d,),
            "covariance_prior_": np.shape(strategy.prior_covariance(np.eye(d))),
        }
    return shapes


def _first_bad(a: np.ndarray, ok: np.ndarray) -> str:
    """The first value of ``a`` where ``ok`` is False, with its index."""
    i = tuple(int(j) for j in np.argwhere(~ok)[0])
    return f"{float(a[i])!r}" + (f" at index {i}" if i else "")


def _numeric(
    a: np.ndarray, name: str, file: Path, shape: tuple | None = None, context: str = ""
) -> np.ndarray:
    """``a`` as float64 after checking its dtype, its shape (when given) and that it is finite."""
    if a.dtype.kind not in "iuf":
        raise _bad(file, name, "an array of real numbers", f"dtype {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise _bad(file, name, f"shape {tuple(shape)}{context}", f"shape {a.shape}")
    a = a if a.dtype == np.float64 else a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        raise _bad(file, name, "finite values", _first_bad(a, finite))
    return a


def _cholesky(m: np.ndarray) -> np.ndarray | None:
    """The lower Cholesky factor of a symmetric (to rounding, on the scale of its diagonal)
    positive-definite matrix; None for any other."""
    scale = np.sqrt(np.outer(np.abs(np.diag(m)), np.abs(np.diag(m))))
    if not (np.abs(m - m.T) <= 1e-6 * scale).all():
        return None
    try:
        return np.linalg.cholesky(0.5 * (m + m.T))
    except np.linalg.LinAlgError:
        return None


def _check_mixture(a: dict, strategy: CovarianceType, file: Path) -> None:
    """Weights on the simplex; precision factors upper triangular with a positive diagonal
    (as `CovarianceType.precision_cholesky` makes them), covariances positive definite and
    their inverses; means whose quadratic forms stay far inside float64."""
    w = a["weights_"]
    if (w < 0).any() or not abs(w.sum() - 1.0) <= 1e-6:
        found = f"sum {float(w.sum())!r}, smallest {float(w.min())!r}"
        raise _bad(file, "weights_", "weights >= 0 summing to 1 (within 1e-6)", found)
    d = a["means_"].shape[1]
    if strategy.moment_shape(2, 3)[-2:] == (3, 3):  # full: a matrix a component; tied: one
        _check_matrices(a["covariances_"].reshape(-1, d, d), a["precisions_cholesky_"], file)
    else:  # diag, spherical: one number a variance
        _check_variances(a["covariances_"], a["precisions_cholesky_"], file)
    _check_reach(a, strategy, np.zeros((1, d)), "means_", "the other means and the origin", file)


def _check_matrices(covs: np.ndarray, factors: np.ndarray, file: Path) -> None:
    """Full and tied types: upper-triangular factors with a positive diagonal, symmetric
    positive-definite covariances, and each the other's inverse (LᵀU = I)."""
    d = covs.shape[-1]
    factors = factors.reshape(-1, d, d)
    for j in range(len(covs)):
        u, c = factors[j], covs[j]
        if np.tril(u, -1).any() or not (np.diag(u) > 0).all():
            expected = "upper-triangular factors with a positive diagonal"
            raise _bad(file, f"precisions_cholesky_ (component {j})", expected, _shown(u.tolist()))
        low = _cholesky(c)
        if low is None:
            expected = "a symmetric positive-definite covariance"
            raise _bad(file, f"covariances_ (component {j})", expected, _shown(c.tolist()))
        # U Uᵀ = Σ⁻¹ with Σ = L Lᵀ ⇔ Lᵀ U = I; its rounding grows with √cond(Σ) only
        miss = float(np.abs(low.T @ u - np.eye(d)).max())
        if not miss <= _FACTOR_TOL:
            expected = f"the inverse of precisions_cholesky_'s (LᵀU = I within {_FACTOR_TOL:g})"
            found = f"a difference of {miss:.3g}"
            raise _bad(file, f"covariances_ (component {j})", expected, found)


def _check_variances(cov: np.ndarray, factor: np.ndarray, file: Path) -> None:
    """Diagonal and spherical types, element by element: positive variances and factors that
    are their inverse square roots (factor² · variance = 1 within the factors' tolerance)."""
    for name, values in (("covariances_", cov), ("precisions_cholesky_", factor)):
        if not (values > 0).all():
            raise _bad(file, name, "positive values", _first_bad(values, values > 0))
    miss = np.abs(factor**2 * cov - 1.0)
    if not (miss <= _FACTOR_TOL).all():
        expected = f"precisions_cholesky_² · covariances_ = 1 (within {_FACTOR_TOL:g})"
        raise _bad(file, "covariances_", expected, f"a difference of {float(miss.max()):.3g}")


def _check_reach(
    a: dict, strategy: CovarianceType, points: np.ndarray, name: str, what: str, file: Path
) -> None:
    """Every component's quadratic form at the means and at ``points`` is at most _MAX_TERM."""
    means = a["means_"]
    both = np.vstack([means, points])
    # per feature, the farthest of those points from each mean
    reach = np.maximum(both.max(axis=0) - means, means - both.min(axis=0))
    terms = strategy.term_bound(a["precisions_cholesky_"], reach)
    ok = terms <= _MAX_TERM
    if not ok.all():
        j = int(np.argmin(ok))
        expected = f"every component's quadratic form at {what} <= {_MAX_TERM:g}"
        raise _bad(file, name, expected, f"{float(terms[j]):.3g} for component {j}")


def _check_variational(a: dict, params: dict, strategy: CovarianceType, file: Path) -> None:
    """The variational posterior: positive concentrations and mean precisions, degrees of
    freedom above D − 1, a positive-definite covariance prior, and ``weights_`` the posterior
    mean of the concentrations."""
    d = a["means_"].shape[1]
    for name, low in (
        ("weight_concentration_", 0),
        ("mean_precision_", 0),
        ("degrees_of_freedom_", d - 1),
    ):
        ok = a[name] > low
        if not ok.all():
            raise _bad(file, name, f"values > {low}", _first_bad(a[name], ok))
    # the mean prior is a point the fit's means are drawn towards: as near as they are
    points = np.vstack([np.zeros(d), a["mean_prior_"]])
    _check_reach(a, strategy, points, "mean_prior_", "the means, the origin and mean_prior_", file)
    prior = a["covariance_prior_"].reshape(strategy.moment_shape(1, d))
    if _cholesky(strategy.full(prior, 1, d)[0]) is None:
        expected = "a positive-definite covariance"
        raise _bad(file, "covariance_prior_", expected, _shown(a["covariance_prior_"].tolist()))
    process = params["weight_concentration_prior_type"] == "dirichlet_process"
    expected_w = mean_weights(a["weight_concentration_"], process)
    if not np.allclose(a["weights_"], expected_w, rtol=1e-6, atol=1e-12):
        expected = "the posterior mean weights of weight_concentration_"
        raise _bad(file, "weights_", expected, _shown(a["weights_"].tolist()))


def _check_arrays(
    arrays: dict, cls: type, params: dict, n_features: int, file: Path
) -> dict[str, np.ndarray]:
    """The fitted arrays: dtypes, shapes, finite values and the relations between them;
    returned as float64 (what `save_model` writes, unchanged)."""
    k, d = params["n_components"], n_features
    context = (
        f" (n_components={k}, n_features_in_={d}, "
        f"covariance_type={params['covariance_type']!r} in model.json)"
    )
    # the means first: the shapes below are then of the size of an array the file holds
    fitted = {"means_": _numeric(arrays["means_"], "means_", file, (k, d), context)}
    for name, shape in _fitted_shapes(cls, params, d).items():
        fitted[name] = _numeric(arrays[name], name, file, shape, context)
    strategy = get_covariance_type(params["covariance_type"])
    # finite values may still overflow in the checks: an infinite or NaN result fails them
    with np.errstate(all="ignore"):
        _check_mixture(fitted, strategy, file)
        if getattr(cls, "_FITTED_ARRAYS", ()):
            _check_variational(fitted, params, strategy, file)
    return fitted


class _Variational:
    """Stands for the variational estimator in `_check_arrays`: its arrays are checked too."""

    _FITTED_ARRAYS = True


def check_gaussian_arrays(
    arrays: dict[str, np.ndarray],
    covariance_type: str,
    k: int,
    d: int,
    where: Path,
    process: bool | None = None,
) -> None:
    """Check a mixture's arrays (``weights_``, ``means_``, ``covariances_``,
    ``precisions_cholesky_``; with ``process`` given, a variational posterior's too:
    ``weight_concentration_``, ``mean_precision_``, ``degrees_of_freedom_``, ``mean_prior_``,
    ``covariance_prior_``) as `load_model` checks a saved model's; a `ModelFileError` names
    ``where`` and the first field that fails (used for checkpoints)."""
    params = {"n_components": k, "covariance_type": covariance_type}
    if process is not None:
        params["weight_concentration_prior_type"] = (
            "dirichlet_process" if process else "dirichlet_distribution"
        )
    _check_arrays(arrays, object if process is None else _Variational, params, d, where)


def load_model(path: str | os.PathLike, cls: type) -> Any:
    """Read a model written by `save_model`, every value checked before the estimator is built;
    no pickle is involved.

    Parameters
    ----------
    path : str or path-like
        The folder `save_model` wrote.
    cls : type
        The estimator class the model must be of.

    Returns
    -------
    estimator : cls
        Fitted, as saved.

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no ``model.json``.
    ModelFileError
        If ``model.json`` or ``arrays.npz`` is unreadable, or holds a name, type, shape or
        value that no fitted model of ``cls`` has; the message names the file and the field.
    """
    path = Path(path)
    meta, file, npz = _read_meta(path), path / "model.json", path / "arrays.npz"
    name = _class_name(meta, file)
    if name != cls.__name__:
        found = f"{name!r}: the folder holds a {name}; load it with dgmm.load"
        raise _bad(file, "class", repr(cls.__name__), found)
    attributes = _check_attributes(meta, cls, file)
    d = attributes["n_features_in_"]
    params = _check_params(meta, cls, file)
    stored, optional = _array_param_names(meta, params, file)
    _check_param_values(cls, params, d, list(params), file, "params.")
    arrays = _read_arrays(npz)
    fitted_names = {*_ARRAYS, *getattr(cls, "_FITTED_ARRAYS", ())}
    _check_names(arrays, fitted_names | set(stored), fitted_names | set(stored) | optional, npz, "")
    fitted = _check_arrays(arrays, cls, params, d, npz)
    stored = [*stored, *(optional & set(arrays))]
    for name in stored:  # starting values and priors: numbers here, the estimator checks the rest
        _numeric(arrays[name], name, npz)
        params[name] = arrays[name]
    _check_param_values(cls, params, d, stored, npz, "")
    est = cls(**params)
    for name, value in {**attributes, **fitted}.items():
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
    feature_names : tuple of str or None
        The names of ``x``'s columns, in order, when the input had them (a DataFrame, Parquet
        or CSV); None for arrays.
    """

    def __init__(self, x, x_mem, w, w_mem, scheduler, lazy, feature_names=None):
        self.x, self.x_mem, self.w, self.w_mem = x, x_mem, w, w_mem
        self.scheduler, self.lazy = scheduler, lazy
        self.feature_names: tuple[str, ...] | None = feature_names

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
    refusal = tables.unmatched_columns(table.names, columns, name)
    if refusal is not None:
        raise ValueError(refusal)
    order = [table.names.index(c) for c in columns]
    if order != list(range(len(order))):
        x = x[:, order]
    return x, tuple(columns)


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
    from .validation import (
        ColumnProfile,
        as_numpy_2d,
        check_dtype_and_shape,
        check_magnitude,
        check_sample_weight,
    )

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
    if x_mem.size:  # finite by now; a spread float64 cannot square is refused by name
        lo, hi = x_mem.min(axis=0).astype(np.float64), x_mem.max(axis=0).astype(np.float64)
        check_magnitude(ColumnProfile(x_mem.shape[0], 0, -1, False, lo, hi), name)
    w_mem = None if sample_weight is None else check_sample_weight(sample_weight, x_mem.shape[0])
    rows = in_memory_chunk_rows(*x_mem.shape, x_mem.dtype.itemsize)
    x = da.from_array(x_mem, chunks=(rows, x_mem.shape[1]), name=False)
    w = None if w_mem is None else da.from_array(w_mem, chunks=(rows,), name=False)
    return InputData(x, x_mem, w, w_mem, "threads", lazy=False, feature_names=names)
