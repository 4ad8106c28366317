"""The EM driver: many candidate models advance together, one pass over the data per iteration.

A candidate is a covariance type with its current parameters. Each iteration runs one pass that
computes every active candidate's statistics; each candidate then takes its own M-step and
convergence test and leaves the active set when converged or failed. ``n_init`` restarts and a
model-selection sweep are the same loop with more candidates.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._reduce import SPLIT_EVERY, RowBlocks
from .covariance import DegenerateCovarianceError, get_covariance_type
from .estep import SUB_BLOCK_BYTES, Posterior, StatsJob, chunk_statistics, compute_dtype
from .mstep import m_step
from .params import GaussianParams
from .stats import SuffStats, sum_stats
from .validation import WEIGHTS_SUM_TO_ZERO, ColumnProfile, block_profile

if TYPE_CHECKING:
    from .io import InputData

logger = logging.getLogger(__name__)


def statistics_nbytes(covariance_type: str, n_components: int, n_features: int) -> int:
    """Bytes of one candidate's statistics (float64 counts, sums and second moments)."""
    shape = get_covariance_type(covariance_type).moment_shape(n_components, n_features)
    return 8 * (2 + n_components + n_components * n_features + int(np.prod(shape)))


def pass_task_nbytes(
    candidates: list[tuple[str, int]], n_features: int, chunk_rows: int, itemsize: int
) -> int:
    """Peak bytes one task of a statistics pass holds, as the code allocates them.

    A block task holds its chunk (rows × D in the compute dtype, plus a float64 copy of a
    sub-block), sub-block temporaries and its output statistics; a combine task holds up to
    ``SPLIT_EVERY`` inputs and its output. ``candidates`` lists (covariance type, K).
    """
    stats = sum(statistics_nbytes(cov, k, n_features) for cov, k in candidates)
    chunk = chunk_rows * n_features * itemsize
    block = chunk + 2 * SUB_BLOCK_BYTES + stats
    return max(block, (SPLIT_EVERY + 1) * stats)


@dataclass(frozen=True)
class PassSpec:
    """What one pass computes: the jobs, the shift, and whether to check for NaN/inf."""

    jobs: list[StatsJob]
    shift: np.ndarray
    check_finite: bool


def _block_kernel(x, w, row0: int, spec: PassSpec) -> list[SuffStats]:
    return chunk_statistics(x, w, row0, spec.shift, spec.jobs, spec.check_finite)


def _profile_kernel(x, w, row0: int, spec: None) -> ColumnProfile:
    return block_profile(x, row0)


def _sum_profiles(parts: list[ColumnProfile]) -> ColumnProfile:
    return functools.reduce(operator.add, parts)


class DataPasses:
    """The passes over one dataset: it runs them, counts them and knows whether the data was
    checked for NaN/inf (the first pass checks it). Nothing else changes its state.
    """

    def __init__(self, blocks: RowBlocks, shift: np.ndarray, checked: bool = False):
        self.blocks = blocks
        self.shift = shift
        self.dtype = compute_dtype(blocks.x.dtype)
        self.eps = float(np.finfo(self.dtype).eps)
        self.checked = checked
        self.n_passes = 0

    @classmethod
    def over(cls, data: InputData) -> DataPasses:
        """The passes over checked input (numpy input was checked on arrival)."""
        return cls(RowBlocks(data.x, data.w, data.scheduler), data.shift(), checked=data.checked)

    def resume(self, n_passes: int) -> None:
        """Continue the count of a resumed run, whose first pass checked the data."""
        self.n_passes, self.checked = n_passes, True

    def profile(self) -> ColumnProfile:
        """One pass: column ranges, NaN/inf rows and a digest of the bytes (`ColumnProfile`)."""
        profile = self.blocks.map_reduce(_profile_kernel, None, _sum_profiles, "dgmm-profile")
        self.n_passes += 1
        self.checked = self.checked or profile.n_bad == 0
        return profile

    def first_read_array(self):
        """The Dask array for a pass run by another library (k-means||): checked if first.

        Such passes are not counted: dask-ml's k-means makes as many as it needs.
        """
        x = self.blocks.x if self.checked else self.blocks.checked()
        self.checked = True
        return x

    def run(
        self,
        kernel: Callable[..., Any],
        make_spec: Callable[[bool], Any],
        combine: Callable[[list[Any]], Any],
        name: str,
    ) -> Any:
        """One counted pass of ``kernel``; ``make_spec(check_finite)`` builds its spec, told
        whether this pass must check the data for NaN/inf (the first pass does)."""
        result = self.blocks.map_reduce(kernel, make_spec(not self.checked), combine, name)
        self.checked = True
        self.n_passes += 1
        return result

    def statistics(self, jobs: list[StatsJob], name: str = "dgmm-estep") -> list[SuffStats]:
        """One pass over the data: the reduced statistics of every job."""
        spec = PassSpec(jobs, self.shift, check_finite=not self.checked)
        stats = self.blocks.map_reduce(_block_kernel, spec, sum_stats, name)
        if stats and stats[0].n <= 0:
            raise ValueError(WEIGHTS_SUM_TO_ZERO)
        self.checked = True
        self.n_passes += 1
        return stats


@dataclass
class EMState:
    """One candidate's EM state (scikit-learn's per-init bookkeeping), updated in place."""

    params: GaussianParams
    reg_covar: float
    lower_bound: float = -np.inf
    lower_bounds: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


IterationCallback = Callable[[list[EMState], list[int]], None]


def run_em(
    passes: DataPasses,
    states: list[EMState],
    *,
    tol: float,
    max_iter: int,
    callback: IterationCallback | None = None,
) -> list[EMState]:
    """Advance every candidate with EM in lockstep until each converges, fails or hits max_iter.

    Each iteration's ``lower_bound`` is the mean (weighted) log-likelihood of the parameters
    before that iteration's M-step; a candidate converges when it changes by less than ``tol``.
    A candidate whose covariance degenerates stops with ``error`` set; the others go on. States
    that already ran (a resumed checkpoint) continue where they stopped.
    """
    active = [
        i for i, s in enumerate(states) if not (s.converged or s.failed) and s.n_iter < max_iter
    ]
    while active:
        jobs = [
            StatsJob(
                Posterior(states[i].params.shifted(passes.shift, passes.dtype)),
                states[i].params.strategy,
            )
            for i in active
        ]
        stats = passes.statistics(jobs)
        still = []
        for i, st in zip(active, stats, strict=True):
            if _em_step(states[i], st, passes, tol) and states[i].n_iter < max_iter:
                still.append(i)
        active = still
        if callback is not None:
            callback(states, active)
    return states


def _em_step(s: EMState, st: SuffStats, passes: DataPasses, tol: float) -> bool:
    """M-step and convergence test of one candidate; whether it keeps running."""
    lb = st.loglik / st.n
    try:
        s.params = m_step(st, s.params.strategy, s.reg_covar, passes.shift, passes.eps)
    except DegenerateCovarianceError as e:
        s.error = str(e)
        logger.info("candidate failed at iteration %d: %s", s.n_iter + 1, e)
        return False
    change = lb - s.lower_bound
    s.lower_bound, s.n_iter = lb, s.n_iter + 1
    s.lower_bounds.append(lb)
    s.converged = bool(abs(change) < tol)
    return not s.converged
