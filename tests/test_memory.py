"""Kernel memory is bounded by the sub-block, not by the number of rows in a chunk."""

import tracemalloc

import numpy as np
import pytest

from dgmm.covariance import get_covariance_type
from dgmm.estep import SUB_BLOCK_BYTES, Posterior, StatsJob, chunk_statistics
from dgmm.params import GaussianParams

from .conftest import COV_TYPES


def _peak_extra(n_rows: int, cov: str, k: int = 8, d: int = 16) -> int:
    x = np.random.default_rng(0).normal(size=(n_rows, d))
    strat = get_covariance_type(cov)
    covs = {
        "full": np.stack([np.eye(d)] * k),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[cov]
    p = GaussianParams(cov, np.full(k, 1 / k), x[:k].copy(), covs, strat.precision_cholesky(covs))
    shift = np.zeros(d)
    job = StatsJob(Posterior(p.shifted(shift, x.dtype)), strat)
    tracemalloc.start()
    chunk_statistics(x, None, 0, shift, [job])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("cov", COV_TYPES)
def test_peak_memory_does_not_grow_with_rows(cov):
    small, large = _peak_extra(50_000, cov), _peak_extra(400_000, cov)
    # 400k rows x 16 features is 51 MB of data; the kernel's extra memory stays a few sub-blocks
    assert large < 4 * SUB_BLOCK_BYTES
    assert large < 1.5 * small + 2**20
