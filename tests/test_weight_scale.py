"""Multiplying every sample weight by one positive constant leaves the fit unchanged.

Generated cases: random scale factors from 1e-12 to 1e12, random base weights, float32 and
float64 data, numpy and Dask input, every covariance type, with an explicit init (the issue's
setting: clusters 100 apart, where an absolute floor on the counts showed up as 430% error).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from dgmm import GaussianMixture

from .conftest import COV_TYPES, explicit_init

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(rng, dtype):
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    x = np.concatenate([c + rng.normal(size=(3000, 2)) for c in centres]).astype(dtype)
    return x


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cov", COV_TYPES)
def test_scaling_all_weights_leaves_the_fit_unchanged(seed, cov):
    rng = np.random.default_rng(seed)
    dtype = np.float32 if seed % 2 else np.float64
    x = _data(rng, dtype)
    w = rng.uniform(0.1, 2.0, size=len(x))
    init = explicit_init(x.astype(np.float64), 3, cov, seed=seed)
    lazy = seed % 3 == 0
    X = da.from_array(x, chunks=(1700, 2)) if lazy else x

    def fit(weights):
        gm = GaussianMixture(3, covariance_type=cov, max_iter=5, tol=0, **init)
        return gm.fit(X, sample_weight=da.from_array(weights, chunks=1700) if lazy else weights)

    ref = fit(w)
    for c in 10.0 ** rng.uniform(-12, 12, size=3):
        got = fit(c * w)
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_allclose(
                getattr(got, name), getattr(ref, name), rtol=1e-10, atol=0, err_msg=f"c={c:g}"
            )
        assert got.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-10, abs=0)


INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


@pytest.mark.parametrize("seed", range(10))
def test_scaling_weights_leaves_every_initialisation_unchanged(seed):
    """The initial M-step too: for generated settings (any init, restarts, covariance type,
    dtype, numpy or Dask input), weights ``c·w`` with ``c`` from 1e-12 to 1e12 give the fit of
    ``w`` (float64 within 1e-10, float32 within 1e-6). (The variational mixture's weights count
    rows against its priors, which are in rows: it is not meant to be invariant.)"""
    rng = np.random.default_rng(100 + seed)
    dtype = np.float32 if rng.random() < 0.4 else np.float64
    d = int(rng.integers(1, 5))
    k = int(rng.integers(2, 5))
    centres = rng.normal(scale=20.0, size=(k, d))
    n = int(rng.integers(600, 3000))
    x = (centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(dtype)
    w = rng.uniform(0.05, 3.0, size=n)
    cov = str(rng.choice(COV_TYPES))
    lazy = bool(rng.random() < 0.5)
    chunk = int(rng.integers(200, n))
    settings = dict(
        n_components=k,
        covariance_type=cov,
        init_params=str(rng.choice(INIT_PARAMS)),
        n_init=int(rng.integers(1, 3)),
        max_iter=4,
        tol=0,
        random_state=seed,
    )
    X = da.from_array(x, chunks=(chunk, d)) if lazy else x

    def fit(weights):
        sw = da.from_array(weights, chunks=chunk) if lazy else weights
        return GaussianMixture(**settings).fit(X, sample_weight=sw)

    ref = fit(w)
    tol = 1e-10 if dtype == np.float64 else 1e-6
    for c in 10.0 ** rng.uniform(-12, 12, size=2):
        got = fit(c * w)
        where = f"c={c:g} {settings} lazy={lazy} {np.dtype(dtype).name}"
        for name in ("weights_", "means_", "covariances_"):
            a, b = getattr(got, name), getattr(ref, name)
            err = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
            assert err <= tol, f"{name} {err:.2e}: {where}"
        assert got.lower_bound_ == pytest.approx(ref.lower_bound_, rel=tol, abs=0), where
