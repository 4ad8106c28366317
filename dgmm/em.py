"""The EM driver: many candidate models advance together, one pass over the data per iteration.

A candidate is a covariance type with its current parameters. Each iteration runs one pass that
computes every active candidate's statistics; each candidate then takes its own M-step and
convergence test and leaves the active set when converged or failed. ``n_init`` restarts and a
model-selection sweep are the same loop with more candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ._reduce import RowBlocks
from .covariance import DegenerateCovarianceError
from .estep import Posterior, StatsJob, chunk_statistics, compute_dtype
from .mstep import m_step
from .params import GaussianParams
from .stats import SuffStats, sum_stats

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassSpec:
    """What one pass computes: the jobs, the shift, and whether to check for NaN/inf."""

    jobs: list[StatsJob]
    shift: np.ndarray
    check_finite: bool


def _block_kernel(x, w, row0: int, spec: PassSpec) -> list[SuffStats]:
    return chunk_statistics(x, w, row0, spec.shift, spec.jobs, spec.check_finite)


class DataPasses:
    """Runs statistics passes over row blocks; the first pass also checks for NaN/inf."""

    def __init__(self, blocks: RowBlocks, shift: np.ndarray, checked: bool = False):
        self.blocks = blocks
        self.shift = shift
        self.dtype = compute_dtype(blocks.x.dtype)
        self.eps = float(np.finfo(self.dtype).eps)
        self.checked = checked
        self.n_passes = 0

    def first_read_array(self):
        """The Dask array for a pass run by another library (k-means||): checked if first."""
        x = self.blocks.x if self.checked else self.blocks.checked()
        self.checked = True
        return x

    def statistics(self, jobs: list[StatsJob], name: str = "dgmm-estep") -> list[SuffStats]:
        """One pass over the data: the reduced statistics of every job."""
        spec = PassSpec(jobs, self.shift, check_finite=not self.checked)
        stats = self.blocks.map_reduce(_block_kernel, spec, sum_stats, name)
        self.checked = True
        self.n_passes += 1
        return stats


@dataclass
class EMResult:
    """Outcome of one candidate's EM run (scikit-learn's per-init bookkeeping)."""

    params: GaussianParams
    lower_bound: float = -np.inf
    lower_bounds: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


IterationCallback = Callable[[int, list[EMResult], list[int]], None]


def run_em(
    passes: DataPasses,
    starts: list[GaussianParams],
    *,
    tol: float,
    max_iter: int,
    reg_covar: float,
    lower_bound: float = -np.inf,
    callback: IterationCallback | None = None,
) -> list[EMResult]:
    """Run EM for every starting point in lockstep and return one result per start.

    Each iteration's ``lower_bound`` is the mean (weighted) log-likelihood of the parameters
    before that iteration's M-step; a candidate converges when it changes by less than ``tol``.
    A candidate whose covariance degenerates stops with ``error`` set; the others go on.
    """
    results = [EMResult(p, lower_bound) for p in starts]
    active = list(range(len(starts)))
    for it in range(1, max_iter + 1):
        if not active:
            break
        jobs = [
            StatsJob(
                Posterior(results[i].params.shifted(passes.shift, passes.dtype)),
                results[i].params.strategy,
            )
            for i in active
        ]
        stats = passes.statistics(jobs)
        still = []
        for i, st in zip(active, stats, strict=True):
            r = results[i]
            lb = st.loglik / st.n
            try:
                r.params = m_step(st, r.params.strategy, reg_covar, passes.shift, passes.eps)
            except DegenerateCovarianceError as e:
                r.error = str(e)
                logger.info("candidate %d failed at iteration %d: %s", i, it, e)
                continue
            change = lb - r.lower_bound
            r.lower_bound, r.n_iter = lb, it
            r.lower_bounds.append(lb)
            if abs(change) < tol:
                r.converged = True
            else:
                still.append(i)
        active = still
        if callback is not None:
            callback(it, results, active)
    return results
