"""Saved models without pickle: ``model.json`` and ``arrays.npz``, every field checked as it is
read (a model from elsewhere is untrusted input)."""

from __future__ import annotations

import difflib
import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .covariance import CovarianceType, get_covariance_type
from .variational import mean_weights

__all__ = [
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "ModelFileError",
    "check_gaussian_arrays",
    "load_model",
    "save_model",
    "saved_class",
]


MODEL_FORMAT = "dgmm-gaussian-mixture"
MODEL_VERSION = 1
_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
_INIT_ARRAYS = ("weights_init", "means_init", "precisions_init")
_ARRAY_TYPES = (np.ndarray, list, tuple)


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
