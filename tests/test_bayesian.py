"""`BayesianGaussianMixture`: scikit-learn's variational mixture, on numpy, Dask and Zarr input.

Parity with scikit-learn on the same data and init; scikit-learn's own public tests run against
dgmm's class; choosing K in one fit on the seed example; persistence; one engine.
"""

from __future__ import annotations

import copy
import inspect

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine
from sklearn.mixture import BayesianGaussianMixture as SkBayesianGaussianMixture

import dgmm

from .conftest import COV_TYPES, write_zarr

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
PRIOR_TYPES = ["dirichlet_process", "dirichlet_distribution"]


def _datasets(seed_example):
    return {
        "iris": load_iris().data,
        "wine": load_wine().data,
        "seed example": seed_example[0],
    }


def _assert_same_fit(ours, sk, rtol=1e-6):
    assert ours.n_iter_ == sk.n_iter_ and ours.converged_ == sk.converged_
    assert float(ours.lower_bound_) == pytest.approx(float(np.ravel(sk.lower_bound_)[0]), rel=rtol)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        a, b = getattr(ours, attr), getattr(sk, attr)
        assert np.allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max()), attr
    for attr in ("mean_precision_", "degrees_of_freedom_", "mean_prior_", "covariance_prior_"):
        assert np.allclose(getattr(ours, attr), getattr(sk, attr), rtol=rtol), attr
    assert np.allclose(
        np.asarray(ours.weight_concentration_), np.asarray(sk.weight_concentration_), rtol=rtol
    )


@pytest.mark.parametrize("name", ["iris", "wine", "seed example"])
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_same_fit_as_scikit_learn(name, prior_type, seed_example):
    """Every covariance type, numpy and Dask input, k-means init (scikit-learn's own call on
    numpy input; on Dask input the same call on the sample, which small data holds whole):
    the same iterations, parameters and lower bound within rtol 1e-6."""
    X = _datasets(seed_example)[name]
    for cov in COV_TYPES:
        kw = dict(
            n_components=6,
            covariance_type=cov,
            weight_concentration_prior_type=prior_type,
            random_state=1,
            max_iter=60,
        )
        sk = SkBayesianGaussianMixture(**kw).fit(X)
        for x in (X, da.from_array(X, chunks=(347, X.shape[1]))):
            ours = dgmm.BayesianGaussianMixture(**kw).fit(x)
            _assert_same_fit(ours, sk)
        assert np.array_equal(np.asarray(ours.predict(X)), sk.predict(X))
        assert np.allclose(np.asarray(ours.score_samples(X)), sk.score_samples(X), rtol=1e-6)
        assert np.allclose(np.asarray(ours.predict_proba(X)), sk.predict_proba(X), atol=1e-7)


def test_random_init_and_restarts_match_scikit_learn(seed_example):
    """'random' responsibilities and n_init restarts drawn as scikit-learn draws them."""
    X = seed_example[0]
    for cov in COV_TYPES:
        kw = dict(n_components=5, covariance_type=cov, init_params="random", n_init=3)
        sk = SkBayesianGaussianMixture(random_state=0, **kw).fit(X)
        _assert_same_fit(dgmm.BayesianGaussianMixture(random_state=0, **kw).fit(X), sk)


def _sklearn_public_tests():
    """scikit-learn's tests of `BayesianGaussianMixture` that use only its public API."""
    from sklearn.mixture.tests import test_bayesian_mixture as mod

    private = {
        # test scikit-learn's private helpers, not the estimator
        "test_log_dirichlet_norm",
        "test_log_wishart_norm",
        # calls the private `_check_parameters(X)` and `_initialize_parameters(X, rng)`
        "test_compare_covar_type",
    }
    cases = []
    for name, fn in inspect.getmembers(mod, inspect.isfunction):
        if not name.startswith("test_") or name in private:
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        if not marks:
            cases.append(pytest.param(name, {}, id=name))
            continue
        names, values = marks[0].args
        keys = [k.strip() for k in names.split(",")]
        for v in values:
            v = v if isinstance(v, tuple) else (v,)
            cases.append(pytest.param(name, dict(zip(keys, v, strict=True)), id=f"{name}{v}"))
    return mod, cases


_MOD, _CASES = _sklearn_public_tests()


@pytest.mark.parametrize(("name", "kwargs"), _CASES)
def test_scikit_learn_public_tests_pass(name, kwargs, monkeypatch):
    """scikit-learn's own test functions, with its class replaced by dgmm's."""
    monkeypatch.setattr(_MOD, "BayesianGaussianMixture", dgmm.BayesianGaussianMixture)
    getattr(_MOD, name)(**kwargs)


def test_one_fit_chooses_k_on_the_seed_example(seed_example, tmp_path):
    """The seed article's four stretched blobs: a Dirichlet-process fit at K=10 leaves four
    components above 1% weight, from a Zarr array as from numpy; the labels are lazy."""
    X = seed_example[0]
    kw = dict(n_components=10, covariance_type="full", random_state=0, max_iter=500, n_init=2)
    bgm = dgmm.BayesianGaussianMixture(**kw).fit(X)
    assert int((bgm.weights_ > 0.01).sum()) == 4
    z = write_zarr(tmp_path / "x.zarr", X, (200, 2))
    lazy = dgmm.BayesianGaussianMixture(**kw).fit(z)
    assert int((lazy.weights_ > 0.01).sum()) == 4
    labels = lazy.predict(z)
    assert isinstance(labels, da.Array)
    assert len(np.unique(labels.compute())) == 4


def test_save_and_load_without_pickle(seed_example, tmp_path):
    X = seed_example[0]
    for prior_type in PRIOR_TYPES:
        bgm = dgmm.BayesianGaussianMixture(
            4,
            covariance_type="diag",
            weight_concentration_prior_type=prior_type,
            mean_prior=np.zeros(2),
            random_state=0,
        ).fit(X)
        bgm.save(tmp_path / prior_type)
        back = dgmm.load(tmp_path / prior_type)
        assert isinstance(back, dgmm.BayesianGaussianMixture)
        assert np.array_equal(back.mean_prior, np.zeros(2))
        assert np.array_equal(back.score_samples(X), bgm.score_samples(X))
        assert type(back.weight_concentration_) is type(bgm.weight_concentration_)
        with pytest.raises(ValueError, match="holds a BayesianGaussianMixture"):
            dgmm.GaussianMixture.load(tmp_path / prior_type)


def test_weights_and_bad_priors(seed_example):
    """Row weights reach the fit (integer weights equal repeated rows); bad priors are named."""
    X = seed_example[0][:300]
    w = np.tile([1.0, 2.0, 3.0], 100)
    kw = dict(n_components=3, covariance_type="full", random_state=0, init_params="random")
    weighted = dgmm.BayesianGaussianMixture(**kw).fit(X, sample_weight=w)
    scaled = dgmm.BayesianGaussianMixture(**kw).fit(X, sample_weight=w * 7.0)
    assert not np.allclose(weighted.means_, dgmm.BayesianGaussianMixture(**kw).fit(X).means_)
    assert scaled.n_iter_ > 0 and np.isfinite(scaled.lower_bound_)
    for bad, match in [
        ({"weight_concentration_prior_type": "stick"}, "weight_concentration_prior_type"),
        ({"mean_prior": np.zeros(3)}, r"should have the shape of \(2,\)"),
        ({"covariance_prior": -1.0, "covariance_type": "spherical"}, "should be a positive"),
        ({"covariance_prior": np.eye(3)}, r"shape of \(2, 2\)"),
        ({"degrees_of_freedom_prior": 0.5}, "should be greater than 1"),
        ({"mean_precision_prior": 0.0}, "must be > 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            dgmm.BayesianGaussianMixture(**{**kw, **bad}).fit(X)


@pytest.mark.long
def test_variational_selection_is_the_estimator_and_resumes(seed_example, tmp_path):
    """`select(method='variational')`: one fit per type at the largest K, each bitwise the
    `BayesianGaussianMixture` fit with the same seed; types compared by BIC of the effective
    mixture (tied, four components, as the BIC sweep finds); a stopped run resumes bitwise."""
    X = seed_example[0]
    kw = dict(n_init=2, random_state=0, max_iter=300)
    types = ["tied", "spherical"]
    found = dgmm.select(X, range(1, 9), types, method="variational", **kw)
    assert found.best_params_ == {
        "n_components": 8,
        "covariance_type": "tied",
        "effective_components": 4,
    }
    best = found.best_estimator_
    assert isinstance(best, dgmm.BayesianGaussianMixture)
    assert int((best.weights_ > 0.01).sum()) == 4
    row = next(r for r in found.cells() if r["covariance_type"] == "tied")
    assert row["effective_components"] == 4 and row["n_parameters"] == 4 * 2 + 3 + 3
    for cov in types:
        alone = dgmm.BayesianGaussianMixture(8, covariance_type=cov, **kw).fit(X)
        ours = found.estimator(8, cov)
        assert np.array_equal(alone.means_, ours.means_) and alone.n_iter_ == ours.n_iter_
        assert alone.lower_bound_ == ours.lower_bound_

    class Stop(Exception):
        pass

    def stop(report):
        if report.n_pass == 5:
            raise Stop

    x = da.from_array(X, chunks=400)
    ckpt = tmp_path / "c.npz"
    with pytest.raises(Stop):
        dgmm.select(x, 8, types, method="variational", checkpoint=ckpt, progress=stop, **kw)
    lines = []
    resumed = dgmm.select(
        x,
        8,
        types,
        method="variational",
        checkpoint=ckpt,
        progress=lambda r: lines.append(r.line()),
        **kw,
    )
    fresh = dgmm.select(x, 8, types, method="variational", **kw)
    assert resumed.resumed_from == 5  # saved before the progress call that stopped it
    assert [r["lower_bound"] for r in resumed.results] == [r["lower_bound"] for r in fresh.results]
    assert "best lower bound" in lines[-1]
    with pytest.raises(ValueError, match="unknown prior setting"):
        dgmm.select(X, 4, method="variational", prior={"alpha": 1.0})
    with pytest.raises(ValueError, match="method must be one of"):
        dgmm.select(X, 4, method="bayes")


@pytest.mark.long
def test_variational_pipeline_run(tmp_path):
    """A run with ``selection.method: variational`` labels the rows with the chosen fit, plots
    the weights and lists the effective components."""
    import json

    from pipelines.cli import main
    from pipelines.data import make_data

    from .conftest import run_output
    from .helpers import write_cfg

    data = tmp_path / "d.zarr"
    make_data(data, 1500, 2, 3, seed=1, chunk_rows=500)
    cfg = write_cfg(
        tmp_path / "run.yaml",
        data,
        tmp_path / "out",
        model={"n_components": [6], "covariance_types": ["full", "diag"], "max_iter": 150},
        selection={"method": "variational", "weight_threshold": 0.02},
    )
    assert main(["run", str(cfg)]) == 0
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    sel = report["selected"]
    assert sel["n_components"] == 6 and 1 <= sel["effective_components"] <= 6
    assert (out / "weights.png").stat().st_size > 0 and not (out / "criteria.png").exists()
    text = (out / "table.txt").read_text()
    assert f"Effective components: {sel['effective_components']} of K = 6" in text
    labels = run_output(out)["labels"][:]
    assert labels.shape == (1500,) and len(np.unique(labels)) <= sel["effective_components"]
    model = dgmm.load(out / "model")
    assert isinstance(model, dgmm.BayesianGaussianMixture)


@pytest.mark.long
def test_variational_types_trailing_on_the_sample_stop_there():
    """``strategy='sample'``: a covariance type whose criterion (of its effective mixture)
    clearly trails on the sample stops there, named and with its estimate, and the selection
    is the one every type fitted to the end makes."""
    rng = np.random.default_rng(0)
    n, k = 8_000, 4
    centres = rng.normal(scale=6, size=(k, 2))
    stretch = rng.normal(size=(k, 2, 2))
    labels = rng.integers(k, size=n)
    X = centres[labels] + np.einsum("nd,nde->ne", rng.normal(size=(n, 2)), stretch[labels])
    kw = dict(method="variational", n_init=2, random_state=0, max_iter=300)
    types = ["full", "diag", "spherical"]
    fast = dgmm.select(X, 6, types, strategy="sample", sample_size=1500, **kw)
    exact = dgmm.select(X, 6, types, **kw)
    cell = ("n_components", "covariance_type")  # the fits may differ in effective components
    assert [fast.best_params_[c] for c in cell] == [exact.best_params_[c] for c in cell]
    assert [exact.best_params_[c] for c in cell] == [6, "full"]
    assert fast.n_passes_ < exact.n_passes_
    stopped = [c for c in fast.cells() if c["error"]]
    assert {c["covariance_type"] for c in stopped} == {"diag", "spherical"}
    for c in stopped:
        assert "on the sample its estimated BIC trails full,6's" in c["error"]
        truth = next(e for e in exact.cells() if e["covariance_type"] == c["covariance_type"])
        assert c["estimate"]["bic"] > fast.cells()[0]["bic"]
        assert abs(c["estimate"]["bic"] - truth["bic"]) < 0.01 * abs(truth["bic"])
        # the report's weights plot shows the sample fit of a stopped type
        w = np.asarray(c["estimate"]["weights"])
        assert w.shape == (6,) and abs(w.sum() - 1.0) < 1e-9
        assert c["estimate"]["effective_components"] == int((w > 0.01).sum())


def test_variational_restarts_stop_on_the_sample_only_when_they_trail():
    """After EM on the sample, a variational restart stops when its bound is below its cell's
    best's and its rows' terms of the bound trail by more than 3 standard errors, or when it
    is the same fit; continued on all rows, every stopped restart ends below the one kept (on
    generated restarts from four initialisations, fitted to convergence on the sample)."""
    from dgmm._candidates import Candidate
    from dgmm._screening import SampleScores, trailing_restarts
    from dgmm.em import EMState

    rng = np.random.default_rng(1)
    n, k = 3_000, 4
    centres = rng.normal(scale=5, size=(k, 3))
    X = centres[rng.integers(k, size=n)] + rng.normal(size=(n, 3))
    sample = X[rng.choice(n, 1_000, replace=False)]
    inits = ["kmeans", "random", "random_from_data", "k-means++"]
    fits = [
        dgmm.BayesianGaussianMixture(
            6, init_params=inits[seed % 4], max_iter=1000, random_state=seed
        ).fit(sample)
        for seed in range(5)
    ]
    fits.append(max(fits, key=lambda f: f.lower_bound_))  # the best fit again
    cands = []
    for r, est in enumerate(fits):
        assert est.converged_
        c = Candidate("full", 6, r, est.reg_covar)
        c.state = EMState(est._params(), est.reg_covar, est.lower_bound_, n_iter=est.n_iter_)
        cands.append(c)
    scores = SampleScores(sample, None)
    out = trailing_restarts(cands, scores, 1e-3)
    best = max(cands, key=lambda c: c.state.lower_bound)
    assert id(best) not in out
    assert f"same fit as restart {best.restart}" in out[id(cands[-1])]

    def on_all_rows(c: Candidate) -> float:
        est = copy.deepcopy(fits[c.restart]).set_params(warm_start=True, max_iter=1000)
        return est.fit(X).lower_bound_

    kept = on_all_rows(best)
    for c in cands[:-1]:
        mean, se = scores.paired(scores.rows(best, "evidence") - scores.rows(c, "evidence"))
        assert (id(c) in out) == (c is not best and mean > 3 * se)
        if id(c) in out:
            assert "bound's terms over rows trail" in out[id(c)]
            assert on_all_rows(c) < kept
    assert len(out) > 2, "too few restarts trailed to test the rule"
