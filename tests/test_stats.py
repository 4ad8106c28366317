"""Sufficient statistics form a monoid, and chunking does not change them."""

import numpy as np
import pytest

from dgmm.covariance import get_covariance_type
from dgmm.estep import StatsJob, chunk_statistics
from dgmm.params import GaussianParams
from dgmm.sources import Posterior
from dgmm.stats import SuffStats, sum_stats

from .conftest import COV_TYPES


def _params(cov_type, X, k=3):
    strat = get_covariance_type(cov_type)
    covs = {
        "full": np.stack([np.cov(X.T)] * k),
        "tied": np.cov(X.T),
        "diag": np.tile(X.var(axis=0), (k, 1)),
        "spherical": np.full(k, X.var()),
    }[cov_type]
    return GaussianParams(
        cov_type, np.full(k, 1 / k), X[:k].copy(), covs, strat.precision_cholesky(covs)
    )


def _stats(X, w, row0, p, shift):
    job = StatsJob(Posterior(p.shifted(shift, X.dtype)), p.strategy)
    return chunk_statistics(X, w, row0, shift, [job])[0]


def _assert_equal(a: SuffStats, b: SuffStats, rtol=1e-12):
    for f in ("n", "loglik", "nk", "sx", "sxx"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=rtol, atol=1e-9)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_monoid_laws_and_split_invariance(cov_type, rng):
    X = rng.normal(size=(900, 3))
    w = rng.uniform(0.5, 2.0, size=900)
    p = _params(cov_type, X)
    shift = X[:10].mean(axis=0)
    whole = _stats(X, w, 0, p, shift)
    parts = [_stats(X[a:b], w[a:b], a, p, shift) for a, b in [(0, 100), (100, 517), (517, 900)]]
    zero = SuffStats.zero(3, 3, p.strategy.moment_shape(3, 3))
    _assert_equal(zero + parts[0], parts[0], rtol=0)
    _assert_equal((parts[0] + parts[1]) + parts[2], parts[0] + (parts[1] + parts[2]))
    _assert_equal(parts[0] + parts[1] + parts[2], whole)
    _assert_equal(sum_stats([[q] for q in parts])[0], whole)
    assert whole.n == pytest.approx(w.sum())
    assert whole.nk.sum() == pytest.approx(w.sum())
