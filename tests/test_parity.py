"""Numerical parity with scikit-learn's GaussianMixture on the same data and the same init."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGM

from dgmm import GaussianMixture

from .conftest import COV_TYPES, COV_TYPES_TIED_SLOW, explicit_init

RTOL = 1e-6


def _fit_both(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SkGM(**kw).fit(X), GaussianMixture(**kw).fit(X)


def _aligned(sk, ours):
    """``ours`` with its components in scikit-learn's order.

    Restarts that reach the same optimum with the components in another order tie to the last
    bits, and rounding then decides which one each library keeps; the fit is the same.
    """
    order = np.array([np.argmin(((ours.means_ - m) ** 2).sum(axis=1)) for m in sk.means_])
    assert sorted(order) == list(range(len(order)))
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        if ours.covariance_type == "tied" and name not in ("weights_", "means_"):
            continue  # one shared covariance
        setattr(ours, name, getattr(ours, name)[order])
    return ours


def _assert_same_fit(sk, ours, rtol=RTOL):
    assert ours.n_iter_ == sk.n_iter_
    assert ours.converged_ == sk.converged_
    np.testing.assert_allclose(ours.weights_, sk.weights_, rtol=rtol)
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(
        ours.precisions_cholesky_, sk.precisions_cholesky_, rtol=rtol, atol=1e-9
    )
    np.testing.assert_allclose(ours.precisions_, sk.precisions_, rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=rtol)
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=rtol)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_explicit_init_parity(cov_type, blobs):
    X, _ = blobs
    kw = dict(
        n_components=4,
        covariance_type=cov_type,
        tol=1e-6,
        max_iter=300,
        **explicit_init(X, 4, cov_type),
    )
    sk, ours = _fit_both(X, **kw)
    assert sk.n_iter_ > 2  # a real EM run, not a one-step fit
    _assert_same_fit(sk, ours)
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-9)
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    assert ours.score(X) == pytest.approx(sk.score(X), rel=1e-10)
    assert ours.bic(X) == pytest.approx(sk.bic(X), rel=1e-10)
    assert ours.aic(X) == pytest.approx(sk.aic(X), rel=1e-10)


@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_seeded_init_parity(cov_type, init, blobs):
    """Same random_state and init method => the same fit as scikit-learn (numpy input)."""
    if cov_type == "tied" and init in ("k-means++", "random_from_data"):
        pytest.skip(
            "scikit-learn's initial tied covariance adds the raw second moments (about the "
            "origin) of rows with no responsibility; dgmm pools only the chosen rows"
        )
    X, _ = blobs
    sk, ours = _fit_both(
        X,
        n_components=3,
        covariance_type=cov_type,
        init_params=init,
        n_init=2,
        random_state=7,
        max_iter=20,
    )
    _assert_same_fit(sk, _aligned(sk, ours))


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_max_iter_zero_returns_init(cov_type, blobs):
    X, _ = blobs
    sk, ours = _fit_both(X, n_components=3, covariance_type=cov_type, max_iter=0, random_state=0)
    assert ours.n_iter_ == 0 and ours.lower_bound_ == -np.inf and not ours.converged_
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-12)
    np.testing.assert_allclose(ours.weights_, sk.weights_, rtol=1e-12)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_warm_start_parity(cov_type, blobs):
    X, _ = blobs
    kw = dict(n_components=4, covariance_type=cov_type, max_iter=2, warm_start=True, random_state=3)
    sk, ours = _fit_both(X, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X)
        ours.fit(X)
    _assert_same_fit(sk, ours)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_sample_parity(cov_type, blobs):
    X, _ = blobs
    sk, ours = _fit_both(X, n_components=3, covariance_type=cov_type, random_state=5)
    xs, ys = sk.sample(200)
    xo, yo = ours.sample(200)
    np.testing.assert_array_equal(yo, ys)
    np.testing.assert_allclose(xo, xs, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_likelihood_is_monotone(cov_type, blobs):
    X, _ = blobs
    gm = GaussianMixture(
        5, covariance_type=cov_type, init_params="random", random_state=0, tol=0, max_iter=30
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-10)


@pytest.mark.parametrize("cov_type", COV_TYPES_TIED_SLOW)
def test_shifted_data_same_covariances(cov_type, blobs):
    X, _ = blobs
    kw = explicit_init(X, 4, cov_type)
    a = GaussianMixture(4, covariance_type=cov_type, tol=1e-6, max_iter=1000, **kw).fit(X)
    kw_shift = dict(kw, means_init=kw["means_init"] + 1e6)
    b = GaussianMixture(4, covariance_type=cov_type, tol=1e-6, max_iter=1000, **kw_shift).fit(
        X + 1e6
    )
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(b.means_ - 1e6, a.means_, atol=1e-6)
    np.testing.assert_allclose(b.weights_, a.weights_, rtol=1e-6)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_fit_predict_equals_fit_then_predict(cov_type, blobs):
    X, _ = blobs
    kw = dict(n_components=4, covariance_type=cov_type, random_state=2, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = GaussianMixture(**kw).fit_predict(X)
        gm = GaussianMixture(**kw).fit(X)
    np.testing.assert_array_equal(labels, gm.predict(X))


@pytest.mark.parametrize("cov_type", COV_TYPES_TIED_SLOW)
def test_float32_close_to_float64(cov_type, blobs):
    X, _ = blobs
    kw = dict(
        n_components=4,
        covariance_type=cov_type,
        tol=1e-6,
        max_iter=1000,
        **explicit_init(X, 4, cov_type),
    )
    a = GaussianMixture(**kw).fit(X)
    b = GaussianMixture(**kw).fit(X.astype(np.float32))
    assert b.means_.dtype == np.float64
    assert b.lower_bound_ == pytest.approx(a.lower_bound_, rel=1e-4)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-3, atol=1e-3)


def test_convergence_warning(blobs):
    X, _ = blobs
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        GaussianMixture(4, max_iter=1, random_state=0).fit(X)


def test_same_seed_same_result(blobs):
    X, _ = blobs
    a = GaussianMixture(4, n_init=3, random_state=11).fit(X)
    b = GaussianMixture(4, n_init=3, random_state=11).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
    assert a.lower_bound_ == b.lower_bound_


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_float32_single_row_starts_do_not_degenerate(cov_type):
    """Components started from one row have (near) zero scatter: float32 products of rows far
    from the shift would swamp reg_covar; the moments must be taken in float64."""
    import tempfile

    from pipelines.data import make_data

    with tempfile.TemporaryDirectory() as d:
        g = make_data(f"{d}/x.zarr", 20_000, 32, 8, seed=0, chunk_rows=5000, dtype="float32")
        X = g["X"][:]
    kw = dict(
        n_components=8,
        covariance_type=cov_type,
        init_params="random_from_data",
        random_state=0,
        max_iter=3,
        tol=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(**kw).fit(X)  # raised "Component 0 ... not positive definite"
    assert gm.n_iter_ == 3 and np.isfinite(gm.lower_bound_)
    assert np.all(np.isfinite(gm.covariances_))
