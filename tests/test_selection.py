"""`dgmm.select`: the same table as a scikit-learn loop, ICL, one engine, pass accounting."""

from __future__ import annotations

import ast
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris, load_wine
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import dgmm

from .conftest import COV_TYPES

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
ROOT = Path(__file__).resolve().parents[1]


def _datasets(seed_example):
    return {
        "iris": load_iris().data,
        "wine": load_wine().data,
        "seed example": seed_example[0],
    }


@pytest.mark.parametrize("name", ["iris", "wine", "seed example"])
def test_same_table_and_choice_as_a_scikit_learn_loop(name, seed_example):
    """Every cell's best restart: the log-likelihood, BIC and AIC of scikit-learn's fit with the
    same init and seed, and the same selected cell; ICL from scikit-learn's responsibilities."""
    X = _datasets(seed_example)[name]
    ks = [1, 2, 3, 4]
    found = dgmm.select(
        X, ks, COV_TYPES, n_init=2, random_state=0, max_iter=200, screen_degenerate=False
    )
    screened = dgmm.select(X, ks, COV_TYPES, n_init=2, random_state=0, max_iter=200)
    for a, b in zip(found.results, screened.results, strict=True):  # only NA is added
        flagged = (b["error"] or "").startswith("degenerate")
        assert flagged or a["log_likelihood"] == b["log_likelihood"]
    sk_bic = {}
    for row in found.cells():
        k, cov = row["n_components"], row["covariance_type"]
        sk = SkGaussianMixture(k, covariance_type=cov, n_init=2, random_state=0, max_iter=200)
        sk.fit(X)
        ll = sk.score(X) * X.shape[0]
        assert row["log_likelihood"] == pytest.approx(ll, rel=1e-6), (k, cov)
        assert row["bic"] == pytest.approx(sk.bic(X), rel=1e-6), (k, cov)
        assert row["aic"] == pytest.approx(sk.aic(X), rel=1e-6), (k, cov)
        tau = sk.predict_proba(X)
        entropy = np.sum(np.where(tau > 0, tau * np.log(np.where(tau > 0, tau, 1)), 0.0))
        assert row["icl"] == pytest.approx(sk.bic(X) - 2 * entropy, rel=1e-8), (k, cov)
        sk_bic[(cov, k)] = sk.bic(X)
    best = min(sk_bic, key=sk_bic.get)
    assert (found.best_params_["covariance_type"], found.best_params_["n_components"]) == best


@pytest.mark.parametrize(
    ("input_type", "init"),
    [
        *[("numpy", i) for i in ("kmeans", "k-means++", "random", "random_from_data")],
        # Dask 'kmeans' is dask-ml's k-means||, ~1 minute here for 24 fits: k-means++ stands in
        *[("dask", i) for i in ("k-means++", "random", "random_from_data")],
    ],
)
def test_estimator_and_selection_fit_bitwise_the_same(input_type, init, blobs):
    """A cell of a sweep is exactly the estimator's fit: same seed, same data, same bits."""
    X = blobs[0] if input_type == "numpy" else da.from_array(blobs[0], chunks=(200, 3))
    found = dgmm.select(
        X, [1, 2, 4], COV_TYPES, n_init=2, init_params=init, random_state=5, max_iter=30
    )
    for row in found.cells():
        k, cov = row["n_components"], row["covariance_type"]
        gm = dgmm.GaussianMixture(
            k, covariance_type=cov, n_init=2, init_params=init, random_state=5, max_iter=30
        ).fit(X)
        ours = found.estimator(k, cov)
        for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            assert np.array_equal(getattr(gm, attr), getattr(ours, attr)), (k, cov, attr)
        assert gm.lower_bound_ == ours.lower_bound_ and gm.n_iter_ == ours.n_iter_


def test_selected_model_is_a_fitted_estimator(seed_example):
    """The seed article's loop in one call. Its four blobs are isotropic blobs under one linear
    map, so they share one covariance: BIC picks tied with K = 4 over all four types."""
    X = seed_example[0]
    found = dgmm.select(X, range(1, 7), COV_TYPES, n_init=3, random_state=0)
    assert found.best_params_ == {"n_components": 4, "covariance_type": "tied"}
    gm = found.best_estimator_
    assert isinstance(gm, dgmm.GaussianMixture) and gm.n_components == 4
    assert gm.bic(X) == pytest.approx(
        next(
            r["bic"]
            for r in found.cells()
            if r["covariance_type"] == "tied" and r["n_components"] == 4
        ),
        rel=1e-10,
    )
    assert len(found.results) == 6 * 4 * 3
    frame = found.to_pandas()
    assert list(frame.columns[:3]) == ["n_components", "covariance_type", "restart"]
    assert len(frame) == 72


@pytest.mark.parametrize("criterion", ["bic", "aic", "icl"])
def test_each_criterion_picks_its_own_minimum(criterion, seed_example):
    found = dgmm.select(
        seed_example[0], range(1, 6), ["full", "spherical"], criterion=criterion, random_state=0
    )
    ok = [r for r in found.cells() if r["error"] is None]
    low = min(ok, key=lambda r: r[criterion])
    assert found.best_params_ == {
        "n_components": low["n_components"],
        "covariance_type": low["covariance_type"],
    }


def test_sample_weight_and_resume_from_a_checkpoint(blobs, tmp_path):
    """Weights reach every cell as the estimator's; a checkpointed selection resumes bitwise."""
    X = blobs[0][:600]
    w = np.tile([1.0, 2.0, 3.0], 200)
    kw = dict(n_init=1, init_params="random_from_data", random_state=0, tol=0, max_iter=8)
    weighted = dgmm.select(da.from_array(X, chunks=100), [2, 3], ["diag"], sample_weight=w, **kw)
    assert weighted.n_passes_ == 1 + 8 + 1
    gm = dgmm.GaussianMixture(3, covariance_type="diag", **kw)
    gm.fit(da.from_array(X, chunks=100), sample_weight=da.from_array(w, chunks=100))
    assert np.array_equal(gm.means_, weighted.estimator(3, "diag").means_)
    unweighted = dgmm.select(da.from_array(X, chunks=100), [3], ["diag"], **kw)
    assert not np.array_equal(gm.means_, unweighted.best_estimator_.means_)
    ckpt = tmp_path / "c.npz"

    class Stop(Exception):
        pass

    def stop_after(n):
        seen = []

        def progress(report):
            seen.append(report.phase)
            if seen.count("em") == n:
                raise Stop

        return progress

    x = da.from_array(X, chunks=100)
    with pytest.raises(Stop):
        dgmm.select(x, [2, 3], ["full"], checkpoint=ckpt, progress=stop_after(3), **kw)
    resumed = dgmm.select(x, [2, 3], ["full"], checkpoint=ckpt, **kw)
    fresh = dgmm.select(x, [2, 3], ["full"], **kw)
    assert resumed.resumed_from == 1 + 1 + 3  # profile, init and three EM passes
    assert resumed.n_passes_ == fresh.n_passes_ + 1  # the same, plus the profile pass
    for a, b in zip(resumed.results, fresh.results, strict=True):
        assert a["log_likelihood"] == b["log_likelihood"]
    assert np.array_equal(resumed.best_estimator_.means_, fresh.best_estimator_.means_)
    # a finished checkpoint stays: the same call again only scores (and profiles)
    again = dgmm.select(x, [2, 3], ["full"], checkpoint=ckpt, **kw)
    assert again.resumed_from == fresh.n_passes_ - 1 + 1
    assert [r["bic"] for r in again.results] == [r["bic"] for r in fresh.results]
    # a checkpoint of other settings is not resumed
    ckpt.unlink()
    with pytest.raises(Stop):
        dgmm.select(x, [2, 3], ["full"], checkpoint=ckpt, progress=stop_after(2), **kw)
    other = dgmm.select(x, [2, 3], ["full"], checkpoint=ckpt, **{**kw, "max_iter": 7})
    assert other.resumed_from is None


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_components": []}, "n_components must be"),
        ({"n_components": [0, 2]}, "every n_components must be >= 1"),
        ({"n_components": [True]}, "n_components must be"),
        ({"covariance_types": "round"}, "covariance_type"),
        ({"covariance_types": []}, "covariance_types is empty"),
        ({"criterion": "bick"}, "criterion must be one of"),
        ({"n_init": 0}, "'n_init' parameter must be >= 1"),
        ({"tol": -1.0}, "'tol' parameter must be >= 0"),
        ({"n_components": [2000]}, "Expected n_samples >= n_components"),
    ],
)
def test_bad_parameters_are_named(kw, match, blobs):
    with pytest.raises(ValueError, match=match):
        dgmm.select(blobs[0], **{"n_components": [1, 2], **kw})


def _private_uses(path: Path) -> list[str]:
    """Imports of private dgmm modules or names, and private attributes read, in a file."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dgmm"):
            parts = node.module.split(".")
            names = [a.name for a in node.names]
            if any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names):
                found.append(f"{path.name}:{node.lineno} from {node.module} import {names}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("dgmm") and any(p.startswith("_") for p in a.name.split(".")):
                    found.append(f"{path.name}:{node.lineno} import {a.name}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def _non_public_names(path: Path) -> list[str]:
    """Every dgmm name a file uses (imported, or read as an attribute of ``dgmm`` or of an
    imported dgmm module) that is not in the ``__all__`` of a public dgmm module."""
    import importlib

    def public(module: str) -> set[str]:
        mod = importlib.import_module(module)
        names = set(getattr(mod, "__all__", ()))
        return names if not any(p.startswith("_") for p in module.split(".")) else set()

    def submodule(module: str, name: str) -> bool:
        try:
            return hasattr(importlib.import_module(f"{module}.{name}"), "__all__")
        except ImportError:
            return False

    tree = ast.parse(path.read_text())
    modules: dict[str, str] = {}  # local name -> the dgmm module it is
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "dgmm":
                    modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "dgmm":
            for a in node.names:
                if submodule(node.module, a.name):
                    modules[a.asname or a.name] = f"{node.module}.{a.name}"
                elif a.name not in public(node.module):
                    found.append(f"{path.name}:{node.lineno} {node.module}.{a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = modules.get(node.value.id)
            if module is None or submodule(module, node.attr):
                continue
            if node.attr not in public(module):
                found.append(f"{path.name}:{node.lineno} {module}.{node.attr}")
    return found


def test_pipelines_import_only_what_public_modules_export():
    """The pipeline keeps to the public API: every dgmm name it uses is in the ``__all__`` of
    a public module (no leading underscore in its path)."""
    uses = [u for p in sorted((ROOT / "pipelines").glob("*.py")) for u in _non_public_names(p)]
    assert uses == []


def test_the_public_names_check_finds_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import dgmm\nfrom dgmm import em as e\nfrom dgmm.io import InputData\n"
        "from dgmm.estep import far_rows\ndgmm.select\ndgmm.nothing\ne.run_em\ne.Sweep\n"
    )
    found = _non_public_names(bad)
    assert found == [
        "bad.py:3 dgmm.io.InputData",
        "bad.py:4 dgmm.estep.far_rows",
        "bad.py:6 dgmm.nothing",
        "bad.py:8 dgmm.em.Sweep",
    ], found


def test_pipelines_use_only_public_dgmm():
    """The pipeline is a shell over public API: no private module, name or attribute."""
    uses = [u for p in sorted((ROOT / "pipelines").glob("*.py")) for u in _private_uses(p)]
    assert uses == []


def test_max_iter_zero_keeps_scikit_learns_restart(blobs):
    """With every lower bound −inf (max_iter=0) scikit-learn keeps the last restart; the
    estimator and every cell of a sweep keep the same one."""
    X = blobs[0]
    kw = dict(n_init=3, max_iter=0, init_params="random_from_data", random_state=4)
    sk = SkGaussianMixture(3, covariance_type="diag", **kw).fit(X)
    ours = dgmm.GaussianMixture(3, covariance_type="diag", **kw).fit(X)
    cell = dgmm.select(X, [2, 3], ["diag"], **kw).estimator(3, "diag")
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-12)
    assert np.array_equal(cell.means_, ours.means_)


def test_a_checkpoint_key_difference_stays_one_short_line():
    """Row chunks of a 20,000-block array are summarised, not printed whole."""
    from dgmm._checkpoint import key_difference

    msg = key_difference({"row_chunks": [100] * 20_000}, {"row_chunks": [25_000] * 80})
    assert msg.startswith("the data changed (row_chunks [100, 100, ... 100] (20000 values) ->")
    assert "(80 values)" in msg and len(msg) < 200 and "\n" not in msg


@pytest.mark.parametrize("checkpointed", [False, True])
def test_every_pass_is_reported_once_in_order(blobs, tmp_path, checkpointed):
    """``progress`` gets one report per pass over the data, numbered 1..n_passes_, with the
    phase of each; a resumed checkpoint is reported first, with the passes it holds."""
    x = da.from_array(blobs[0][:600], chunks=150)
    kw = dict(n_init=2, init_params="k-means++", random_state=0, max_iter=6)
    if checkpointed:
        kw["checkpoint"] = tmp_path / "c.npz"
    reports = []
    found = dgmm.select(x, [1, 2, 3], ["full", "diag"], progress=reports.append, **kw)
    assert [r.n_pass for r in reports] == list(range(1, found.n_passes_ + 1))
    phases = [r.phase for r in reports]
    # k-means++ seeds on the sample (whose pass profiles a checkpointed run's data too)
    assert phases == ["sample", "init"] + ["em"] * phases.count("em") + ["score"]
    assert phases.count("em") == max(r["n_iter"] for r in found.results)
    ems = [r for r in reports if r.phase == "em"]
    assert [r.iteration for r in ems] == list(range(1, len(ems) + 1))
    assert ems[0].running == 12 and reports[-1].running == 0
    assert all(r.n_candidates == 12 and r.rows == 600 and r.seconds > 0 for r in reports)
    assert reports[-1].best == pytest.approx(min(r["bic"] for r in found.cells()), rel=1e-6)
    assert all(r.elapsed >= 0 for r in reports)
    line = reports[-1].line()
    assert line.startswith(f"pass {found.n_passes_} score: iteration ") and "rows/s" in line
    if checkpointed:
        again = []
        dgmm.select(x, [1, 2, 3], ["full", "diag"], progress=again.append, **kw)
        resumed = [r for r in again if r.phase == "resume"]
        assert len(resumed) == 1 and resumed[0].n_pass == found.n_passes_ - 1  # all but scoring
        assert again[0].phase == "sample" and again[1] is resumed[0]
        assert (
            resumed[0].line().startswith(f"resumed from the checkpoint after {resumed[0].n_pass}")
        )


def _params(cov: str, weights, covariances, d: int) -> dgmm.GaussianParams:
    from dgmm.covariance import get_covariance_type

    k = len(weights)
    strategy = get_covariance_type(cov)
    covariances = np.asarray(covariances, dtype=float)
    return dgmm.GaussianParams(
        cov,
        np.asarray(weights, dtype=float),
        np.zeros((k, d)),
        covariances,
        strategy.precision_cholesky(covariances),
    )


@pytest.mark.parametrize("seed", range(20))
def test_degenerate_fits_are_named(seed):
    """Generated fits: a component with fewer rows than its covariance needs, or whose
    covariance without reg_covar is singular, is named; healthy fits are not."""
    rng = np.random.default_rng(seed)
    d, k, n, reg = (
        int(rng.integers(1, 6)),
        int(rng.integers(1, 5)),
        1000,
        10.0 ** -rng.integers(3, 9),
    )
    cov = str(rng.choice(["full", "tied", "diag", "spherical"]))
    a = rng.normal(size=(k, d, d))
    full = a @ a.transpose(0, 2, 1) + np.eye(d)
    covs = {
        "full": full + reg * np.eye(d),
        "tied": full[0] + reg * np.eye(d),
        "diag": np.stack([np.diag(c) for c in full]) + reg,
        "spherical": np.array([np.trace(c) / d for c in full]) + reg,
    }[cov]
    need = {"full": d + 1, "tied": 1, "diag": 2, "spherical": 2}[cov]
    weights = rng.dirichlet(np.ones(k)) * 0.5 + 0.5 / k  # every component far above `need`
    assert _params(cov, weights, covs, d).degenerate(n, reg) is None
    far = _params(cov, weights, covs, d)  # tight clusters 1e8 apart are no spurious maximum
    far = dgmm.GaussianParams(
        cov,
        far.weights,
        rng.normal(scale=1e8, size=(k, d)),
        far.covariances,
        far.precisions_cholesky,
    )
    assert far.degenerate(n, reg) is None
    j = int(rng.integers(k))
    few = weights.copy()
    few[j] = (need - rng.uniform(0.01, 0.99)) / n
    reason = _params(cov, few, covs, d).degenerate(n, reg)
    assert reason is not None and f"component {j} holds" in reason
    # A component singular where the others spread is degenerate (a tied covariance is shared:
    # singular for all or none, like collinear data, which is no spurious maximum)
    if cov != "tied" and k >= 2:
        flat = covs.copy()
        if cov == "full":
            w, v = np.linalg.eigh(full[j])
            w[0] = 0.0
            flat[j] = (v * w) @ v.T + reg * np.eye(d)
        elif cov == "diag":
            col = int(rng.integers(d))
            flat[j, col] = reg
        else:
            flat[j] = reg
        if cov == "full" and d == 1:
            flat[j] = reg
        reason = _params(cov, weights, flat, d).degenerate(n, reg)
        assert reason is not None and f"component {j} has a singular covariance" in reason
        assert "raise reg_covar" in reason and "screen_degenerate=False" in reason
        if cov == "diag":  # the direction is one column: named, by name when there are names
            assert f"along column {col} (0-based)" in reason, reason
            names = [f"c{i}" for i in range(d)]
            named = _params(cov, weights, flat, d).degenerate(n, reg, names)
            assert f"along column 'c{col}' (its" in named, named
    if cov == "full" and d >= 2:  # collinear data: every component flat along one direction
        u = rng.normal(size=d)
        u /= np.linalg.norm(u)
        p = np.eye(d) - np.outer(u, u)
        collinear = np.stack([p @ c @ p for c in full]) + reg * np.eye(d)
        assert _params(cov, weights, collinear, d).degenerate(n, reg) is None


def test_selection_never_picks_a_degenerate_fit():
    """Two rows far from everything: a K that gives them a component of their own finds a
    likelihood as large as the regularisation allows; that fit is NA with its reason and no
    cell is made of it."""
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(size=(300, 3)), rng.normal(size=(300, 3)) + 6, [[40.0, 40, 40]] * 2])
    found = dgmm.select(
        x, [2, 3], ["full", "diag"], n_init=2, init_params="k-means++", random_state=0
    )
    flagged = [r for r in found.results if (r["error"] or "").startswith("degenerate")]
    assert flagged, "the 2-row component was not found"
    assert all(r["bic"] is None and not r["best_in_cell"] for r in flagged)
    assert found.best_params_["n_components"] == 2
    for r in found.cells():
        assert (
            r["error"] is None
            or not r["error"].startswith("degenerate")
            or all(
                c["error"]
                for c in found.results
                if (c["covariance_type"], c["n_components"])
                == (r["covariance_type"], r["n_components"])
            )
        )


@pytest.mark.parametrize("seed", range(4))
def test_select_warns_exactly_when_the_selected_fit_did_not_converge(blobs, seed):
    """Random grids and iteration limits: a ConvergenceWarning naming the selected cell comes
    when, and only when, the selected estimator's ``converged_`` is false."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(seed)
    X = blobs[0][:600]
    types = [str(t) for t in rng.choice(COV_TYPES, size=2, replace=False)]
    converging = seed % 2 == 0  # both outcomes, each with a random grid
    kw = dict(max_iter=200 if converging else int(rng.integers(1, 30)), tol=1e-3 * converging)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = dgmm.select(X, [2, 3, 4], types, random_state=seed, **kw)
    ours = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    best = found.best_params_
    assert found.best_estimator_.converged_ == converging
    assert len(ours) == (not converging), (kw, ours)
    if ours:
        assert f"({best['covariance_type']}, K={best['n_components']})" in str(ours[0].message)


def test_repr_is_one_short_line_whatever_the_number_of_restarts(blobs):
    found = dgmm.select(blobs[0][:300], [1, 2, 3], ["diag"], n_init=60, max_iter=3)
    text = repr(found)
    assert "\n" not in text and len(text) < 200, text
    best = found.best_params_
    assert f"n_components={best['n_components']}" in text and "180 restart(s)" in text
    assert len(found.to_pandas()) == 180


@pytest.mark.parametrize("seed", range(8))
def test_constant_columns_are_named_by_every_entry_point(tmp_path, seed):
    """Random data with constant columns at random places, given as numpy, pandas, Parquet or
    Dask (with or without a checkpoint): `select` refuses it before any fit, naming every
    constant column (by name where the data has names). `GaussianMixture` fits it, as
    scikit-learn does."""
    from dgmm.validation import DataError

    rng = np.random.default_rng(seed)
    n, d = 300, int(rng.integers(3, 8))
    x = rng.normal(size=(n, d)) + 5.0 * rng.integers(3, size=(n, 1))
    const = sorted(
        int(j) for j in rng.choice(d, size=int(rng.integers(1, min(4, d))), replace=False)
    )
    x[:, const] = rng.normal(size=len(const)).round(2)
    names = [f"col_{int(i)}" for i in rng.permutation(100)[:d]]
    kind = ["numpy", "pandas", "parquet", "dask", "dask+checkpoint"][seed % 5]
    kw = dict(random_state=0, max_iter=5)
    if kind == "numpy":
        data, shown = x, [f"{j} (always" for j in const]
    elif kind in ("pandas", "parquet"):
        frame = pd.DataFrame(x, columns=names)
        frame.to_parquet(tmp_path / "t.parquet")
        data = frame if kind == "pandas" else str(tmp_path / "t.parquet")
        shown = [f"'{names[j]}' (always" for j in const]
    else:
        data, shown = da.from_array(x, chunks=70), [f"{j} (always" for j in const]
        if kind == "dask+checkpoint":
            kw.update(
                checkpoint=tmp_path / "c.npz", init_params=str(rng.choice(["random", "k-means||"]))
            )
    with pytest.raises(DataError) as err:
        dgmm.select(data, [1, 2, 3], list(rng.choice(COV_TYPES, 2, replace=False)), **kw)
    message = str(err.value)
    assert f"has {len(const)} constant column(s)" in message, message
    assert all(s in message for s in shown), (shown, message)
    assert not (tmp_path / "c.npz").exists()
    dgmm.GaussianMixture(2, random_state=0, max_iter=5).fit(x)


def test_every_cell_failing_lists_the_reasons_counted():
    """Digits without their constant pixels: every K >= 2 fit has a component flat along
    some pixels. The error counts the failures and gives an example that names columns and
    the remedies."""
    from sklearn.datasets import load_digits

    x = load_digits().data
    x = x[:, x.std(axis=0) > 0]
    with pytest.raises(ValueError) as err:
        dgmm.select(x, [2, 3], ["full", "diag"], n_init=2, random_state=0)
    message = str(err.value)
    assert message.startswith("every candidate failed (8 of 8 restarts): 8 degenerate (e.g. ")
    assert "singular covariance along" in message and "(0-based)" in message
    assert "raise reg_covar" in message and "screen_degenerate=False" in message
    assert "\n" not in message


@pytest.mark.parametrize("screen", [True, False])
def test_progress_never_reports_a_best_fit_that_cannot_be_selected(screen):
    """Digits (constant pixels dropped): fits with K >= 2 end degenerate. Every pass reports a
    best criterion no lower than the one finally selected (EM only raises a fit's likelihood,
    and the selection takes the lowest selectable criterion): a degenerate fit never shows."""
    from sklearn.datasets import load_digits

    x = load_digits().data
    x = x[:, x.std(axis=0) > 0]
    reports = []
    found = dgmm.select(
        x,
        [1, 2, 3],
        ["diag", "spherical"],
        random_state=0,
        screen_degenerate=screen,
        progress=reports.append,
    )
    chosen = min(r["bic"] for r in found.cells() if r["error"] is None)
    shown = [r.best for r in reports if r.best is not None]
    assert shown and min(shown) >= chosen * (1 - 1e-12) - 1e-9, (min(shown), chosen)
    if screen:
        assert any(r["error"] and r["error"].startswith("degenerate") for r in found.cells())


def test_every_result_row_has_a_typed_status_that_agrees_with_its_scores(blobs, tmp_path):
    from dgmm._candidates import STATUSES

    x = da.from_array(blobs[0], chunks=300)
    found = dgmm.select(
        x, [1, 2, 3, 8], ["full", "spherical"], n_init=3, strategy="sample", sample_size=500,
        max_iter=15, random_state=0,
    )  # fmt: skip
    statuses = {r["status"] for r in found.results}
    assert statuses <= set(STATUSES) - {"pending"}, statuses
    assert len(statuses) >= 2
    for r in found.results:
        fitted = r["status"] in ("converged", "not converged")
        assert fitted == (r["error"] is None) == (r["bic"] is not None), r
        assert (r["status"] == "converged") == bool(r["converged"]), r


def test_no_import_cycle_among_dgmm_modules():
    """Module imports, function-level ones included, form no cycle: the engine never imports
    an estimator or the public face."""
    modules = {p.stem: p for p in (ROOT / "dgmm").glob("*.py") if p.stem != "__init__"}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = (
                    [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                )
                edges[name].update(t for t in targets if t in modules)
    state: dict[str, int] = {}

    def cycle_from(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return [*path, m, n]
            if n not in state and (found := cycle_from(n, [*path, m])):
                return found
        state[m] = 2
        return None

    for m in sorted(modules):
        if m not in state:
            found = cycle_from(m, [])
            assert found is None, " -> ".join(found)
    for engine in ("_sweep", "_candidates", "_checkpoint", "_screening", "_progress", "em"):
        assert not edges[engine] & {"estimator", "bayesian", "selection"}, engine
