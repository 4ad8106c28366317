"""A saved model is untrusted input: whatever is edited in its files, loading it either refuses
it with a `ModelFileError` naming the file, or gives a valid model that predicts.

Small real fits (both estimators, every covariance type, float32 and float64 data, with and
without starting values or priors stored beside them) are saved, then every array of
``arrays.npz``, every key of ``model.json`` and both files as a whole are corrupted in ways
drawn from a seeded generator. The tests check the guarantee, not the messages.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs

import dgmm
from dgmm.covariance import get_covariance_type
from dgmm.persistence import ModelFileError
from pipelines.cli import main

from .conftest import COV_TYPES, explicit_init

K, D = 3, 3
CLASSES = ("GaussianMixture", "BayesianGaussianMixture")
MODELS = [(c, t) for c in CLASSES for t in COV_TYPES]  # (class, covariance type)
ROUNDS = 5  # random corruptions of every target of every model
VALUES = (np.nan, np.inf, -np.inf, -1.0, 0.0, 1e300, -1e300, 1.7e308, "same", "nudge")
PRIOR_TYPES = ["dirichlet_process", "dirichlet_distribution"]
JSON_VALUES = (None, "x", -1, 0, 1, 1e300, 10**30, np.nan, np.inf, -np.inf, True, False, [], {})
FILE_DAMAGE = (
    "arrays.npz#truncate",
    "arrays.npz#flip",
    "arrays.npz#garbage",
    "arrays.npz#delete",
    "arrays.npz#extra",
    "model.json#truncate",
    "model.json#flip",
    "model.json#garbage",
    "model.json#not-utf8",
    "model.json#list",
)


def _data(dtype) -> np.ndarray:
    x, _ = make_blobs(n_samples=150, n_features=D, centers=K, random_state=0)
    return x.astype(dtype)


def _fit(cls_name: str, cov: str, i: int):
    """Real fit ``i`` of MODELS: odd ones on float32 data; of each four, the first two with
    arrays as parameters (starting values, or priors), which arrays.npz then holds, and the
    other two Bayesian ones with a Dirichlet distribution instead of a process."""
    x = _data(np.float32 if i % 2 else np.float64)
    kw: dict = {"random_state": 0, "covariance_type": cov}
    if i % 4 < 2 and cls_name == "GaussianMixture":
        kw.update(explicit_init(x.astype(np.float64), K, cov))
    elif i % 4 < 2:
        prior = get_covariance_type(cov).prior_covariance(np.cov(x.T))
        kw.update(mean_prior=np.zeros(D), covariance_prior=prior)
    elif cls_name == "BayesianGaussianMixture":
        kw["weight_concentration_prior_type"] = "dirichlet_distribution"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: any fit will do
        return getattr(dgmm, cls_name)(K, **kw).fit(x), x


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """Every model of MODELS, fitted and saved: {(class, type): (estimator, data, folder)}."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for i, (cls_name, cov) in enumerate(MODELS):
        est, x = _fit(cls_name, cov, i)
        est.save(root / f"{cls_name}-{cov}")
        out[cls_name, cov] = (est, x, root / f"{cls_name}-{cov}")
    return out


# ------------------------------------------------------------------ corruptions of the files
def _arrays(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _meta(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def targets(folder: Path) -> list[str]:
    """Everything in a saved model that a corruption can hit."""
    meta = _meta(folder)
    return [
        *(f"arrays.npz/{name}" for name in _arrays(folder)),
        *(f"model.json/params/{key}" for key in meta["params"]),
        *(f"model.json/attributes/{key}" for key in meta["attributes"]),
        *(f"model.json/{key}" for key in meta if key not in ("params", "attributes")),
        "model.json/params",
        "model.json/attributes",
        *FILE_DAMAGE,
    ]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _element(a: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``a`` with one element set to a drawn value (or the value it had, or nudged)."""
    a = np.array(a, dtype=np.float64)
    flat = a.reshape(-1)  # a view: a is a fresh contiguous copy
    if flat.size == 0:
        return a, "empty"
    i = int(rng.integers(flat.size))
    value = _pick(rng, VALUES)
    if value == "same":
        value = flat[i]
    elif value == "nudge":
        value = flat[i] * (1 + _pick(rng, (1e-12, 1e-7, 1e-3)))
    flat[i] = value
    return a, f"element {i} = {value!r}"


def _reshaped(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "transpose":
        return np.swapaxes(a, 0, -1) if a.ndim >= 2 else a[::-1] if a.ndim else a.reshape(1)
    if kind == "reshape":
        return a.reshape(-1) if a.ndim != 1 else a.reshape(1, -1)
    if kind == "drop-row":
        return a[:-1] if a.ndim else a.reshape(1)[:0]
    if kind == "add-row":
        return np.concatenate([a, a[-1:]]) if a.ndim else np.stack([a, a])
    if kind == "strings":
        return a.astype(str)
    if kind == "objects":
        return a.astype(object)  # np.savez pickles it
    return a.astype(np.int64)


def corrupt_array(folder: Path, name: str, rng: np.random.Generator) -> str:
    arrays = _arrays(folder)
    kinds = ("element", "element", "element", "transpose", "reshape", "drop-row", "add-row")
    kind = _pick(rng, (*kinds, "strings", "objects", "integers", "delete"))
    if kind == "delete":
        del arrays[name]
        what = kind
    elif kind == "element":
        arrays[name], what = _element(arrays[name], rng)
    else:
        arrays[name], what = _reshaped(arrays[name], kind), kind
    np.savez(folder / "arrays.npz", **arrays)
    return f"{name}: {what}"


def _nudged(value, rng: np.random.Generator):
    """A near value of the same kind: ±1 (n_components, n_features_in_, ...), another
    covariance or prior type, a list one shorter."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + _pick(rng, (-1, 1))
    if isinstance(value, float):
        return value * (1 + 1e-3)
    for options in (COV_TYPES, PRIOR_TYPES):
        if value in options:
            return _pick(rng, [o for o in options if o != value])
    if isinstance(value, list):
        return value[:-1]
    return value


def corrupt_json(folder: Path, path: list[str], rng: np.random.Generator) -> str:
    meta = _meta(folder)
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    kind = _pick(rng, ("set", "set", "nudge", "delete", "rename"))
    if kind == "set":
        parent[key] = _pick(rng, JSON_VALUES)
    elif kind == "nudge":
        parent[key] = _nudged(parent[key], rng)
    elif kind == "rename":
        parent[key + "x"] = parent.pop(key)
    else:
        del parent[key]
    (folder / "model.json").write_text(json.dumps(meta))
    return f"{'.'.join(path)}: {kind} -> {parent.get(key, '<absent>')!r}"


def damage_file(folder: Path, what: str, rng: np.random.Generator) -> str:
    name, kind = what.split("#")
    file = folder / name
    data = file.read_bytes()
    if kind == "truncate":
        data = data[: int(rng.integers(len(data)))]
    elif kind == "flip":
        i = int(rng.integers(len(data)))
        data = data[:i] + bytes([data[i] ^ (1 << int(rng.integers(8)))]) + data[i + 1 :]
    elif kind == "garbage":
        data = rng.bytes(int(rng.integers(1, 2000)))
    elif kind == "not-utf8":
        data = data.replace(b'"', b'"\xff', 1)
    elif kind == "list":
        data = json.dumps([json.loads(data)]).encode()
    elif kind == "delete":
        file.unlink()
        return what
    elif kind == "extra":  # an array named as an estimator method
        np.savez(file, **_arrays(folder), predict=np.zeros(3))
        return what
    file.write_bytes(data)
    return what


def corrupt(folder: Path, target: str, rng: np.random.Generator) -> str:
    """Apply one drawn corruption of ``target`` to the model in ``folder``; describe it."""
    if "#" in target:
        return damage_file(folder, target, rng)
    file, *path = target.split("/")
    if file == "arrays.npz":
        return corrupt_array(folder, path[0], rng)
    return corrupt_json(folder, path, rng)


# ------------------------------------------------------------------------- the guarantee
def assert_valid_model(model, x: np.ndarray) -> None:
    """A loaded model is one a fit could have made, and predicts on its training rows."""
    k, d = model.n_components, model.n_features_in_
    cov_shape = get_covariance_type(model.covariance_type).moment_shape(k, d)
    shapes = {"weights_": (k,), "means_": (k, d)}
    shapes |= {"covariances_": cov_shape, "precisions_cholesky_": cov_shape}
    for name, shape in shapes.items():
        value = np.asarray(getattr(model, name))
        assert value.shape == shape, name
        assert np.isfinite(value).all(), name
    for name in getattr(model, "_FITTED_ARRAYS", ()):
        assert np.isfinite(np.asarray(getattr(model, name), dtype=np.float64)).all(), name
    w = model.weights_
    assert (w >= 0).all() and abs(w.sum() - 1) <= 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = np.asarray(model.predict(x))
        proba = np.asarray(model.predict_proba(x))
        scores = np.asarray(model.score_samples(x))
    assert labels.shape == (len(x),) and labels.min() >= 0 and labels.max() < k
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-4)
    assert np.isfinite(scores).all()


def load_or_refuse(folder: Path, x: np.ndarray, what: str) -> bool:
    """Whether the model loaded (and is valid); a refusal is a one-line `ModelFileError`
    naming model.json or arrays.npz. Any other outcome fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = dgmm.load(folder)
    except ModelFileError as e:
        message = str(e)
        assert "\n" not in message, (what, message)
        assert "model.json" in message or "arrays.npz" in message, (what, message)
        return False
    except Exception as e:
        pytest.fail(f"{what}: {type(e).__name__}: {e}")
    try:
        assert_valid_model(model, x)
    except Exception as e:
        pytest.fail(f"{what}: loaded, but {type(e).__name__}: {e}")
    return True


@pytest.mark.parametrize("model", MODELS, ids=["-".join(m) for m in MODELS])
def test_every_corruption_is_refused_or_harmless(model, saved, tmp_path):
    _, x, folder = saved[model]
    rng = np.random.default_rng(MODELS.index(model))
    outcomes = []
    for r in range(ROUNDS):
        for i, target in enumerate(targets(folder)):
            work = tmp_path / f"{r}-{i}"
            shutil.copytree(folder, work)
            what = f"{model} {target}: " + corrupt(work, target, rng)
            outcomes.append(load_or_refuse(work, x, what))
            shutil.rmtree(work)
    assert len(outcomes) > 60
    assert sum(outcomes) < len(outcomes) / 2  # the generator is not vacuous: most are refused


@pytest.mark.parametrize("model", MODELS, ids=["-".join(m) for m in MODELS])
def test_real_fits_load_exactly(model, saved):
    """Every saved fit (both dtypes of data, stored starting values and priors) loads as it
    was: the same parameters, attributes and predictions."""
    est, x, folder = saved[model]
    back = dgmm.load(folder)
    assert type(back) is type(est)
    for name, value in est.get_params().items():
        np.testing.assert_array_equal(np.asarray(back.get_params()[name]), np.asarray(value))
    fitted = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")
    for name in fitted + getattr(est, "_FITTED_ARRAYS", ()):
        np.testing.assert_array_equal(
            np.asarray(getattr(back, name)), np.asarray(getattr(est, name))
        )
    for name in ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_"):
        assert getattr(back, name) == getattr(est, name), name
    np.testing.assert_array_equal(back.predict(x), est.predict(x))


def test_models_of_the_first_format_still_load(saved, tmp_path):
    """Models written before ``class``, ``array_params``, ``strategy`` and ``sample_size`` were
    stored (the same format version) load with the defaults they had."""
    est, x, folder = saved["GaussianMixture", "full"]  # with starting values in arrays.npz
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    meta = _meta(old)
    for key in ("class", "array_params"):
        del meta[key]
    for key in ("strategy", "sample_size"):
        del meta["params"][key]
    (old / "model.json").write_text(json.dumps(meta))
    back = dgmm.load(old)
    np.testing.assert_array_equal(back.means_init, est.means_init)
    np.testing.assert_array_equal(back.predict(x), est.predict(x))


# --------------------------------------------------------------------------- the command
def _predict(capsys, model: Path, tmp_path: Path, x: np.ndarray) -> tuple[int, str, Path]:
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "labels"
    status = main(["predict", str(model), str(tmp_path / "x.npy"), str(out)])
    return status, capsys.readouterr().err, out


def _one_line_error(status: int, err: str, names: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dgmm: error: "), err
    assert names in lines[0], err


CLI_CORRUPTIONS = [
    "arrays.npz/means_",
    "arrays.npz/precisions_cholesky_",
    "model.json/params/n_components",
    "model.json/attributes/n_features_in_",
    "arrays.npz#truncate",
    "model.json#not-utf8",
]


@pytest.mark.parametrize("target", CLI_CORRUPTIONS)
def test_predict_refuses_a_corrupted_model(target, saved, tmp_path, capsys):
    """``dgmm predict`` with a corrupted model: exit 2, one line naming the file, no output.
    Corruptions are drawn until one is refused (a few leave a valid model)."""
    _, x, folder = saved["GaussianMixture", "full"]
    rng = np.random.default_rng(0)
    for attempt in range(50):
        model = tmp_path / f"model{attempt}"
        shutil.copytree(folder, model)
        corrupt(model, target, rng)
        try:
            dgmm.load(model)
        except ModelFileError:
            break
    else:
        pytest.skip(f"no refused corruption of {target} drawn")
    status, err, out = _predict(capsys, model, tmp_path, x)
    _one_line_error(status, err, target.split("/")[0].split("#")[0])
    assert not out.exists()
    assert not list(tmp_path.glob(".labels*"))


def _transform(x: np.ndarray) -> dict:
    return {"center": x.mean(axis=0).tolist(), "scale": x.std(axis=0).tolist()}


def _set(key: str, i: int, value) -> Callable[[dict], object]:
    def edit(t: dict) -> object:
        t[key][i] = value
        return t

    return edit


TRANSFORM_DAMAGE = {
    "NaN scale": _set("scale", 1, float("nan")),
    "zero scale": _set("scale", 0, 0.0),
    "negative scale": _set("scale", 2, -1.0),
    "subnormal scale": _set("scale", 0, 1e-310),
    "infinite center": _set("center", 0, float("inf")),
    "string center": _set("center", 1, "0"),
    "short": lambda t: {**t, "scale": t["scale"][:-1]},
    "long": lambda t: {**t, "center": [*t["center"], 0.0]},
    "missing key": lambda t: {"center": t["center"]},
    "unknown key": lambda t: {**t, "shift": 1},
    "a list": lambda t: [t],
    "not JSON": lambda t: b"{center: [",
    "not UTF-8": lambda t: json.dumps(t).encode().replace(b"[", b"[\xff", 1),
    "a folder": lambda t: None,
}


@pytest.mark.parametrize("damage", list(TRANSFORM_DAMAGE))
def test_predict_and_summary_refuse_a_bad_standardize_json(damage, saved, tmp_path, capsys):
    _, x, folder = saved["GaussianMixture", "diag"]
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    content = TRANSFORM_DAMAGE[damage](_transform(x))
    target = model / "standardize.json"
    if content is None:
        target.mkdir()
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(json.dumps(content))
    status, err, out = _predict(capsys, model, tmp_path, x)
    _one_line_error(status, err, "standardize.json")
    assert not out.exists()
    _one_line_error(main(["summary", str(model)]), capsys.readouterr().err, "standardize.json")


def test_predict_applies_a_good_standardize_json(saved, tmp_path, capsys):
    """The checks accept what a run writes: labels of the standardised rows."""
    import zarr

    est, x, folder = saved["GaussianMixture", "diag"]
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    raw = x * 3.0 + 5.0  # rows that standardise back to what the model was fitted to
    transform = {"center": [5.0] * D, "scale": [3.0] * D}
    (model / "standardize.json").write_text(json.dumps(transform))
    status, err, out = _predict(capsys, model, tmp_path, raw)
    assert status == 0, err
    labels = zarr.open_group(str(out), mode="r")["labels"][:]
    np.testing.assert_array_equal(labels, est.predict(((raw - 5.0) / 3.0).astype(x.dtype)))
