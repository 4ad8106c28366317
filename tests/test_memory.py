"""Kernel memory is bounded by the sub-block, not by the number of rows in a chunk."""

import tracemalloc

import numpy as np
import pytest

from dgmm.covariance import get_covariance_type
from dgmm.estep import TEMPORARY_BYTES, StatsJob, chunk_statistics
from dgmm.params import GaussianParams
from dgmm.sources import Posterior

from .conftest import COV_TYPES


def _unit_params(cov: str, means: np.ndarray) -> GaussianParams:
    """Equal weights, the given means and unit covariances of the given type."""
    k, d = means.shape
    covs = {
        "full": np.stack([np.eye(d)] * k),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[cov]
    strat = get_covariance_type(cov)
    return GaussianParams(cov, np.full(k, 1 / k), means, covs, strat.precision_cholesky(covs))


def _peak_extra(n_rows: int, cov: str, frames: str, k: int = 8, d: int = 16) -> int:
    """Peak extra memory of one block's statistics, with ``frames``: "none" (standard rows),
    "some" (float32, components 1e4 sd apart, one at the shift: the rows of the others
    re-centred after a plain E-step) or "all" (every component far from the shift: every row
    re-centred)."""
    x = np.random.default_rng(0).normal(size=(n_rows, d))
    if frames != "none":  # float32, where every type's E-step would lose to rounding
        x = (x + 1e4 * np.arange(n_rows)[:, None] % (k * 1e4)).astype(np.float32)
    p = _unit_params(cov, x[:k].copy())
    strat = get_covariance_type(cov)
    shift = np.full(d, -1e5 if frames == "all" else 0.0)
    job = StatsJob(Posterior(p.shifted(shift, x.dtype)), strat)
    tracemalloc.start()
    (stats,) = chunk_statistics(x, None, 0, shift, [job])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    expected = {"none": 0, "some": n_rows - n_rows // k, "all": n_rows}[frames]
    assert abs(stats.recentred - expected) <= (k if frames == "some" else 0)
    return peak


@pytest.mark.parametrize("frames", ["none", "some", "all"])
@pytest.mark.parametrize("cov", COV_TYPES)
def test_peak_memory_does_not_grow_with_rows(cov, frames):
    small, large = _peak_extra(50_000, cov, frames), _peak_extra(400_000, cov, frames)
    # 400k rows x 16 features is 51 MB of data; the kernel's extra memory stays what the memory
    # model charges for a sub-block's temporaries
    assert large < TEMPORARY_BYTES
    assert large < 1.5 * small + 2**20


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_peak_memory_of_wide_full_rows_does_not_grow(dtype):
    """From 64 features a full model projects and multiplies each component's centred rows
    (`Full.expanded_form` is False): its temporaries stay within the sub-block budget too."""
    k, d = 8, 96

    def peak(n_rows: int) -> int:
        x = np.random.default_rng(0).normal(size=(n_rows, d)).astype(dtype)
        p = _unit_params("full", x[:k].astype(np.float64))
        job = StatsJob(Posterior(p.shifted(np.zeros(d), x.dtype)), p.strategy)
        tracemalloc.start()
        chunk_statistics(x, None, 0, np.zeros(d), [job])
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    assert not get_covariance_type("full").expanded_form(d)
    small, large = peak(20_000), peak(120_000)
    assert large < TEMPORARY_BYTES + 3 * k * d * d * 8  # and the statistics themselves
    assert large < 1.5 * small + 2**20


@pytest.mark.parametrize("seed", range(8))
def test_chained_first_level_gives_the_tree_bits_and_holds_one_result_per_group(seed):
    """Folding each group's blocks one after another (statistics added in place, one result
    held per group) gives the same bits as combining the group's finished blocks, for any
    layout, weights and fan-in."""
    import dask.array as da

    from dgmm._reduce import RowBlocks
    from dgmm.em import PassSpec, _block_kernel
    from dgmm.stats import add_stats_into, sum_stats

    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(50, 3000)), int(rng.integers(1, 6))
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 1e3)
    rows = int(rng.integers(1, max(2, n // 3)))
    xd = da.from_array(x, chunks=(rows, d))
    w = da.from_array(rng.uniform(0, 2, size=n), chunks=(rows,)) if seed % 2 else None
    jobs = []
    for cov in COV_TYPES:
        p = _unit_params(cov, x[: int(rng.integers(1, 5))].copy())
        jobs.append(StatsJob(Posterior(p.shifted(np.zeros(d), x.dtype)), p.strategy))
    spec = PassSpec(jobs, np.zeros(d), False)
    blocks = RowBlocks(xd, w, scheduler="threads")
    fan_in = int(rng.choice([2, 3, 4, 8]))
    tree = blocks.map_reduce(_block_kernel, spec, sum_stats, "t", fan_in)
    chain = blocks.map_reduce(
        _block_kernel, spec, sum_stats, "c", fan_in, accumulate=add_stats_into
    )
    for a, b in zip(tree, chain, strict=True):
        assert (a.n, a.loglik) == (b.n, b.loglik)
        for name in ("nk", "sx", "sxx"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def _blas_threads(x, w, row0, spec) -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def _concatenated(parts: list[list[int]]) -> list[int]:
    return [t for part in parts for t in part]


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_local_passes_run_one_blas_thread_per_scheduler_thread(scheduler):
    """On the local schedulers their threads are the parallelism: inside every pass each BLAS
    pool runs one thread, and after it the pools are as they were (the pools are found once per
    process, not per pass). OpenMP's setting is per thread, and the kernels use none."""
    import dask.array as da
    from threadpoolctl import threadpool_limits

    from dgmm._reduce import RowBlocks

    blocks = RowBlocks(da.zeros((40, 2), chunks=(10, 2)), scheduler=scheduler)
    for outside in (2, 3, 2):
        with threadpool_limits(limits=outside):
            before = _blas_threads(None, None, 0, None)
            inside = blocks.map_reduce(_blas_threads, None, _concatenated, "b")
            assert inside and set(inside) == {1}
            assert _blas_threads(None, None, 0, None) == before
            assert set(before) == {outside}
