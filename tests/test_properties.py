"""The principles the engine rests on, as properties: a failure shrinks to its smallest case.

- Statistics are additive: the statistics of any split of the rows sum to those of the whole.
- The uniform sample does not depend on how the rows are chunked.
- A fit does not depend on how the rows are chunked.
"""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dgmm
from dgmm.covariance import get_covariance_type
from dgmm.em import DataPasses
from dgmm.estep import StatsJob, chunk_statistics
from dgmm.inputs import load_input
from dgmm.params import GaussianParams
from dgmm.sampling import SamplePlan
from dgmm.sources import Posterior

from .conftest import COV_TYPES

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def _rows_and_cuts(draw, min_rows: int = 2, max_rows: int = 400):
    """Seeded rows (n × d, float32 or float64, offset far or near the origin) and a chunking."""
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    offset = draw(st.sampled_from([0.0, 1e3, -1e6]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(seed)
    x = (offset + rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=d)).astype(dtype)
    cuts = draw(st.lists(st.integers(1, n - 1), max_size=8, unique=True)) if n > 1 else []
    bounds = [0, *sorted(cuts), n]
    return x, rng.uniform(0.1, 3.0, size=n), bounds


def _params(cov: str, x: np.ndarray, k: int) -> GaussianParams:
    strategy = get_covariance_type(cov)
    x64 = x.astype(np.float64)
    d = x.shape[1]
    var = x64.var(axis=0) + 1.0
    covs = {
        "full": np.stack([np.diag(var)] * k),
        "tied": np.diag(var),
        "diag": np.tile(var, (k, 1)),
        "spherical": np.full(k, var.mean()),
    }[cov]
    means = x64[np.linspace(0, len(x64) - 1, k).astype(int)] + np.arange(k)[:, None] * 0.1
    return GaussianParams(
        cov, np.full(k, 1 / k), means.reshape(k, d), covs, strategy.precision_cholesky(covs)
    )


@SETTINGS
@given(data=_rows_and_cuts(), cov=st.sampled_from(COV_TYPES), k=st.integers(1, 4))
def test_statistics_of_any_split_sum_to_the_whole(data, cov, k):
    x, w, bounds = data
    p = _params(cov, x, k)
    shift = x[:8].astype(np.float64).mean(axis=0)

    def stats(a: int, b: int):
        job = StatsJob(Posterior(p.shifted(shift, x.dtype)), p.strategy)
        return chunk_statistics(x[a:b], w[a:b], a, shift, [job])[0]

    whole = stats(0, len(x))
    parts = [stats(a, b) for a, b in itertools.pairwise(bounds)]
    total = parts[0]
    for q in parts[1:]:
        total = total + q
    for field in ("n", "loglik", "nk", "sx", "sxx"):
        a, b = getattr(total, field), getattr(whole, field)
        scale = np.max(np.abs(b)) if np.size(b) else 1.0
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * max(scale, 1.0), err_msg=field)


@SETTINGS
@given(
    data=_rows_and_cuts(min_rows=20, max_rows=2000),
    size=st.integers(1, 2500),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_sample_is_the_same_rows_whatever_the_chunking(data, size, seed):
    x, w, bounds = data
    chunks = tuple(int(b - a) for a, b in itertools.pairwise(bounds))

    def sample(rows, weights):
        passes = DataPasses.over(load_input(rows, weights))
        passes.sampling = SamplePlan(size, seed)
        return passes.sample()

    ref = sample(x, w)
    got = sample(da.from_array(x, chunks=(chunks, x.shape[1])), da.asarray(w))
    np.testing.assert_array_equal(got.index, ref.index)
    np.testing.assert_array_equal(got.x, x[ref.index])
    np.testing.assert_array_equal(got.w, w[ref.index])


@SETTINGS
@given(data=_rows_and_cuts(min_rows=40, max_rows=600), cov=st.sampled_from(COV_TYPES))
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 5 iterations
def test_a_fit_does_not_depend_on_the_chunking(data, cov):
    """From the same explicit start, numpy rows and the same rows in any Dask chunking give
    the same fit (float64 accumulation; to rounding)."""
    x, _, bounds = data
    chunks = tuple(int(b - a) for a, b in itertools.pairwise(bounds))
    p = _params(cov, x, 2)
    kw = dict(
        covariance_type=cov,
        max_iter=5,
        tol=0.0,
        weights_init=p.weights,
        means_init=p.means,
        precisions_init=p.strategy.precisions(p.precisions_cholesky),
    )
    a = dgmm.GaussianMixture(2, **kw).fit(x)
    b = dgmm.GaussianMixture(2, **kw).fit(da.from_array(x, chunks=(chunks, x.shape[1])))
    tol = 1e-5 if x.dtype == np.float32 else 1e-9
    assert abs(a.lower_bound_ - b.lower_bound_) <= tol * max(1.0, abs(a.lower_bound_))
    np.testing.assert_allclose(b.means_, a.means_, rtol=tol, atol=tol * np.abs(a.means_).max())
