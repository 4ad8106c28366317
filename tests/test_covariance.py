"""Covariance strategies: densities, parameter counts, precision factors."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from dgmm.covariance import COVARIANCE_TYPES, DegenerateCovarianceError, get_covariance_type
from dgmm.params import GaussianParams

from .conftest import COV_TYPES


def _random_covariances(cov_type, k, d, rng):
    a = rng.normal(size=(k, d, d))
    full = a @ a.transpose(0, 2, 1) + d * np.eye(d)
    return {
        "full": full,
        "tied": full[0],
        "diag": rng.uniform(0.5, 2.0, size=(k, d)),
        "spherical": rng.uniform(0.5, 2.0, size=k),
    }[cov_type]


def _dense(cov_type, covs, k, d):
    return {
        "full": lambda: covs,
        "tied": lambda: np.stack([covs] * k),
        "diag": lambda: np.stack([np.diag(c) for c in covs]),
        "spherical": lambda: np.stack([c * np.eye(d) for c in covs]),
    }[cov_type]()


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_log_gaussian_matches_scipy(cov_type, rng):
    k, d = 3, 4
    strat = get_covariance_type(cov_type)
    covs = _random_covariances(cov_type, k, d, rng)
    means = rng.normal(size=(k, d))
    X = rng.normal(size=(50, d)) * 2
    shift = rng.normal(size=d)
    lp = strat.log_gaussian(X - shift, means - shift, strat.precision_cholesky(covs))
    dense = _dense(cov_type, covs, k, d)
    expected = np.column_stack(
        [multivariate_normal(means[j], dense[j]).logpdf(X) for j in range(k)]
    )
    np.testing.assert_allclose(lp, expected.T, rtol=1e-10)


@pytest.mark.parametrize(
    ("cov_type", "expected"), [("spherical", 13), ("diag", 21), ("tied", 26), ("full", 41)]
)
def test_n_parameters(cov_type, expected, rng):
    k, d = 2, 5
    strat = get_covariance_type(cov_type)
    covs = _random_covariances(cov_type, k, d, rng)
    p = GaussianParams(
        cov_type, np.full(k, 0.5), np.zeros((k, d)), covs, strat.precision_cholesky(covs)
    )
    assert p.n_parameters() == expected


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_precision_roundtrip(cov_type, rng):
    strat = get_covariance_type(cov_type)
    covs = _random_covariances(cov_type, 3, 4, rng)
    pc = strat.precision_cholesky(covs)
    pc2 = strat.precision_cholesky_from_precisions(strat.precisions(pc))
    np.testing.assert_allclose(strat.precisions(pc2), strat.precisions(pc), rtol=1e-10)
    np.testing.assert_allclose(strat.covariances_from_precision_cholesky(pc), covs, rtol=1e-10)


@pytest.mark.parametrize("cov_type", ["full", "diag", "spherical"])
def test_degenerate_names_component(cov_type, rng):
    strat = get_covariance_type(cov_type)
    covs = _random_covariances(cov_type, 3, 4, rng)
    covs[1] = 0.0 if cov_type != "full" else np.zeros((4, 4))
    with pytest.raises(DegenerateCovarianceError, match="Component 1 ") as info:
        strat.precision_cholesky(covs)
    assert info.value.component == 1
    assert "reg_covar" in str(info.value)


def test_unknown_covariance_type():
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        get_covariance_type("banana")
    assert set(COVARIANCE_TYPES) == set(COV_TYPES)


def test_float32_scatter_is_centred_and_accurate(rng):
    """Wide float32 rows far from the shift: the moments keep the covariance to float32 accuracy
    (a plain float32 product about the shift would lose it entirely)."""
    from dgmm._cov_full import _CENTRE_FROM_D, _scatter

    d = _CENTRE_FROM_D + 8
    x64 = rng.normal(size=(3000, d)) * 0.01 + 1e3
    x32 = x64.astype(np.float32)
    xs64 = x32.astype(np.float64)
    r = rng.random(3000)
    n, s = r.sum(), r @ xs64
    exact = (xs64 * r[:, None]).T @ xs64
    mean = s / n
    cov_exact = exact / n - np.outer(mean, mean)
    cov = _scatter(x32, xs64, r, n, s) / n - np.outer(mean, mean)
    np.testing.assert_allclose(cov, cov_exact, rtol=0, atol=1e-4 * np.abs(cov_exact).max())
    plain = ((x32 * r.astype(np.float32)[:, None]).T @ x32).astype(np.float64)
    assert np.abs(plain / n - np.outer(mean, mean) - cov_exact).max() > np.abs(cov_exact).max()


def test_wide_full_moments_are_taken_about_the_centres(rng):
    """From _CENTRED_FROM_D features, rows far from the origin: full moments about each
    component's centre keep the covariance to float32 accuracy for float32 rows, with weights
    (a plain float32 product about the origin would lose it entirely), and to float64
    accuracy for float64 rows."""
    from dgmm._cov_full import _CENTRED_FROM_D

    full = get_covariance_type("full")
    assert not full.moves_moments(_CENTRED_FROM_D)
    d = _CENTRED_FROM_D + 8
    x64 = rng.normal(size=(3000, d)) * 0.01 + 1e3
    x32 = x64.astype(np.float32)
    xs64 = x32.astype(np.float64)
    r = rng.random((2, 3000))
    nk, sx = r.sum(axis=1), r @ xs64
    centres = sx / nk[:, None] + rng.normal(size=(2, d)) * 0.01  # near each component's mean
    for xs, tol in ((x32, 1e-4), (xs64, 1e-12)):
        out = np.zeros((2, d, d))
        full.centred_moments(xs, xs64, r, nk, sx, -centres, out)
        got = out
        for k in range(2):
            z = xs64 - centres[k]
            exact = (z * r[k][:, None]).T @ z
            np.testing.assert_allclose(got[k], exact, rtol=0, atol=tol * np.abs(exact).max())
            np.testing.assert_array_equal(got[k], got[k].T)
    mean = sx[0] / nk[0]
    cov_exact = ((xs64 - mean) * r[0][:, None]).T @ (xs64 - mean) / nk[0]
    plain = ((x32 * r[0].astype(np.float32)[:, None]).T @ x32).astype(np.float64)
    assert np.abs(plain / nk[0] - np.outer(mean, mean) - cov_exact).max() > np.abs(cov_exact).max()


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_safe_form_is_where_the_form_loss_falls_within_bounds(cov_type):
    """`safe_form` is the smallest form ≥ 1 from which on `form_loss ≤ loss·(1 + f)`: generated
    term sizes over 30 decades, both dtypes' eps and several losses; checked on a grid of forms
    beyond it, and just below it where it is above 1."""
    strategy = get_covariance_type(cov_type)
    gen = np.random.default_rng(7)
    for _ in range(200):
        eps = float(np.finfo(gen.choice([np.float32, np.float64])).eps)
        loss = 10.0 ** gen.uniform(-8, -2)
        sizes = 10.0 ** gen.uniform(-5, 25, size=50)
        safe = strategy.safe_form(sizes, eps, loss)
        assert np.all(safe >= 1.0)
        forms = safe[:, None] * np.logspace(0, 12, 25)[None, :]
        lost = strategy.form_loss(sizes[:, None], forms, eps)
        assert np.all(lost <= loss * (1.0 + forms) * (1 + 1e-9))
        inner = safe > 1.0
        below = safe[inner] * (1 - 1e-6)
        lost = strategy.form_loss(sizes[inner], below, eps)
        assert np.all(lost > loss * (1.0 + below))
