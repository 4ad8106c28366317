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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._reduce import (
    RowBlocks,
    StalledError,
    bounded,
    cluster_memory_limit,
    compute,
)
from .covariance import DegenerateCovarianceError
from .estep import StatsJob, chunk_statistics, compute_dtype, row_output
from .memory import PassPlan, max_sample_rows, plan_passes, statistics_nbytes
from .mstep import m_step
from .params import GaussianParams
from .sampling import RowSample, SamplePlan, SampleSpec, combine_samples, sample_block
from .sources import Posterior, ScoringPosterior
from .stats import SuffStats, add_stats_into, sum_stats
from .validation import (
    WEIGHTS_SUM_TO_ZERO,
    ColumnProfile,
    block_profile,
    check_finite_profile,
    check_magnitude,
)
from .variational import VariationalParams, lower_bound, variational_m_step

if TYPE_CHECKING:
    from .inputs import InputData

__all__ = [
    "DataPasses",
    "EMState",
    "StalledError",
    "bounded",
    "cluster_memory_limit",
    "compute",
    "judged_rows",
    "run_em",
]

logger = logging.getLogger(__name__)


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

    def __init__(
        self,
        blocks: RowBlocks,
        shift: np.ndarray,
        checked: bool = False,
        memory_limit: int | None = None,
    ):
        self.blocks = blocks
        self.shift = shift
        self.dtype = compute_dtype(blocks.x.dtype)
        self.eps = float(np.finfo(self.dtype).eps)
        self.checked = checked
        self.memory_limit = memory_limit
        self.n_passes = 0
        # Rows the statistics passes ran a model's E-step on (one per model), and how many of
        # them were re-centred on a component's mean (`dgmm.estep.far_rows`): their cost.
        self.job_rows = 0
        self.recentred_rows = 0
        # Told the pass's name after every counted pass (progress reports).
        self.on_pass: Callable[[str], None] | None = None
        self.name = "X"  # what error messages call the data
        self.columns: tuple[str, ...] | None = None  # and its columns, when they have names
        self.last_seconds = 0.0
        # The uniform sample of rows `sample` draws (set by the engine), once drawn, and the
        # profile its pass took.
        self.sampling: SamplePlan | None = None
        self._sample: RowSample | None = None
        self.sample_profile: ColumnProfile | None = None

    def _counted(self, name: str, started: float) -> None:
        self.checked = True
        self.n_passes += 1
        self.last_seconds = time.perf_counter() - started
        if self.on_pass is not None:
            self.on_pass(name)

    @classmethod
    def over(cls, data: InputData) -> DataPasses:
        """The passes over checked input (numpy input was checked on arrival), planned to fit
        the smallest worker of the active Dask cluster, if any."""
        blocks = RowBlocks(data.x, data.w, data.scheduler)
        limit = None if data.scheduler is not None else cluster_memory_limit()
        return cls(blocks, data.shift(), checked=data.checked, memory_limit=limit)

    def recentred_fraction(self) -> float:
        """The fraction of the rows of model E-steps so far that were re-centred (0 if none)."""
        return self.recentred_rows / self.job_rows if self.job_rows else 0.0

    def resume(self, n_passes: int) -> None:
        """Continue the count of a resumed run, whose first pass checked the data."""
        self.n_passes, self.checked = n_passes, True

    def max_sample_rows(self) -> int | None:
        """The most rows the sampling pass can gather on one worker of the cluster (None: no
        memory limit known): the sample, held twice by its last combine, must fit the same
        budget as a pass's statistics (`task_budget`)."""
        x = self.blocks.x
        chunk_rows = max(x.chunks[0], default=0)
        weighted = self.blocks.w is not None
        return max_sample_rows(self.memory_limit, x.shape[1], chunk_rows, x.dtype, weighted)

    def profile(self) -> ColumnProfile:
        """One pass: column ranges, NaN/inf rows and a digest of the bytes (`ColumnProfile`)."""
        started = time.perf_counter()
        profile = self.blocks.map_reduce(_profile_kernel, None, _sum_profiles, "dgmm-profile")
        checked = self.checked
        self._counted("dgmm-profile", started)
        self.checked = checked
        self.use_profile(profile)
        return profile

    def use_profile(self, profile: ColumnProfile) -> None:
        """Take what a profile of these rows tells: whether they were checked for NaN/inf."""
        if profile.n_bad == 0:
            self.checked = True

    @property
    def drawn_sample(self) -> RowSample | None:
        """The sample `sample` drew, or None when none was drawn (nothing is read here)."""
        return self._sample

    def sample(self, rows: int | None = None) -> RowSample:
        """The uniform sample of rows ``sampling`` asks for, or (``rows``) the part of it a
        draw of that many rows keeps (`RowSample.subset`).

        Drawn by one counted pass the first time, which also profiles the data (and so checks
        it for NaN/inf: `DataError`); later calls return the same sample.
        """
        if rows is not None and rows < self.sampling.size:
            # not kept: the client holds the sample and at most the one part in use
            fraction = min(1.0, rows / self.blocks.x.shape[0])
            return self.sample().subset(self.sampling.seed, fraction)
        if self._sample is None:
            if self.sampling is None:
                raise RuntimeError("no sampling plan set for these passes")
            n = self.blocks.x.shape[0]
            spec = SampleSpec(self.sampling.seed, min(1.0, self.sampling.size / n))
            started = time.perf_counter()
            profile, sample = self.blocks.map_reduce(
                sample_block, spec, combine_samples, "dgmm-sample"
            )
            checked = self.checked
            self._counted("dgmm-sample", started)
            self.checked = checked
            check_finite_profile(profile, self.blocks.x.dtype, self.name)
            check_magnitude(profile, self.name)  # before any fit squares these spreads
            if sample.weight_total <= 0:
                raise ValueError(WEIGHTS_SUM_TO_ZERO)
            self.use_profile(profile)
            self.sample_profile = profile
            self._sample = sample.in_row_order()
        return self._sample

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
        started = time.perf_counter()
        result = self.blocks.map_reduce(kernel, make_spec(not self.checked), combine, name)
        self._counted(name, started)
        return result

    def weight_scale(self, stats: SuffStats) -> float:
        """The mean row weight of a pass over every row (exactly 1.0 without weights)."""
        return stats.n / self.blocks.x.shape[0]

    def _sizes(self, jobs: list[StatsJob]) -> tuple[list[int], int]:
        """Bytes of each job's statistics, and of the largest chunk in the compute dtype."""
        d = self.blocks.x.shape[1]
        stats = [statistics_nbytes(j.strategy.name, j.source.n_components, d) for j in jobs]
        return stats, max(self.blocks.x.chunks[0]) * d * self.dtype.itemsize

    def plan(self, jobs: list[StatsJob]) -> PassPlan:
        """How `statistics` will group ``jobs`` into passes that fit the workers."""
        return plan_passes(*self._sizes(jobs), self.memory_limit)

    def statistics(self, jobs: list[StatsJob], name: str = "dgmm-estep") -> list[SuffStats]:
        """The reduced statistics of every job: one pass, or several when their statistics
        would not fit a worker together (see `plan_passes`)."""
        out: list[SuffStats | None] = [None] * len(jobs)
        sizes, chunk = self._sizes(jobs)
        plan = plan_passes(sizes, chunk, self.memory_limit) if jobs else PassPlan([], 0, None)
        for members, fan_in in plan.batches:
            started = time.perf_counter()
            spec = PassSpec([jobs[i] for i in members], self.shift, not self.checked)
            # Statistics larger than the chunk dominate a worker's memory: fold the blocks of a
            # group one after another (same bits, one result held per group) rather than in
            # parallel (every finished block's result held until its group is combined).
            chained = plan.budget is not None and sum(sizes[i] for i in members) > chunk
            stats = self.blocks.map_reduce(
                _block_kernel,
                spec,
                sum_stats,
                name,
                fan_in,
                need=plan.task_bytes,
                accumulate=add_stats_into if chained else None,
            )
            if stats and stats[0].n <= 0:
                raise ValueError(WEIGHTS_SUM_TO_ZERO)
            # E-steps of models only: a hard start re-centres all its rows by design
            models = [
                st
                for i, st in zip(members, stats, strict=True)
                if isinstance(jobs[i].source, Posterior)
            ]
            rows = self.blocks.x.shape[0] * len(models)
            recentred = sum(st.recentred for st in models)
            self.job_rows += rows
            self.recentred_rows += recentred
            if models:
                logger.debug("%s: %d of %d rows re-centred", name, recentred, rows)
            self._counted(name, started)
            for i, st in zip(members, stats, strict=True):
                out[i] = st
        return out


@dataclass
class EMState:
    """One candidate's EM state (scikit-learn's per-init bookkeeping), updated in place."""

    params: GaussianParams | VariationalParams
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
            StatsJob(e_step(states[i].params, passes), states[i].params.strategy) for i in active
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


def e_step(params: GaussianParams | VariationalParams, passes: DataPasses) -> Posterior:
    """The E-step source of a model; a variational one also sums ``Σ r log r`` (its bound)."""
    shifted = params.shifted(passes.shift, passes.dtype)
    return (ScoringPosterior if params.bound_needs_entropy else Posterior)(shifted)


def _gaussian_update(s: EMState, st: SuffStats, passes: DataPasses):
    """A Gaussian mixture's M-step; its bound is the mean log-likelihood before it."""
    bound = st.loglik / st.n
    p = s.params
    ws = passes.weight_scale(st)
    return m_step(st, p.strategy, s.reg_covar, passes.shift, passes.eps, weight_scale=ws), bound


def _variational_update(s: EMState, st: SuffStats, passes: DataPasses):
    """A variational mixture's M-step; its bound is scikit-learn's evidence bound after it (a
    total, not a mean)."""
    p = s.params
    ws = passes.weight_scale(st)
    params = variational_m_step(
        st, p.strategy, p.prior, s.reg_covar, passes.shift, passes.eps, weight_scale=ws
    )
    return params, lower_bound(st.entropy, params)


# The M-step of each kind of parameters (a registry, as the covariance types have).
UPDATES = {GaussianParams: _gaussian_update, VariationalParams: _variational_update}


def _em_step(s: EMState, st: SuffStats, passes: DataPasses, tol: float) -> bool:
    """M-step and convergence test of one candidate; whether it keeps running."""
    try:
        s.params, lb = UPDATES[type(s.params)](s, st, passes)
    except DegenerateCovarianceError as e:
        s.error = str(e)
        logger.info("candidate failed at iteration %d: %s", s.n_iter + 1, e)
        return False
    change = lb - s.lower_bound
    s.lower_bound, s.n_iter = lb, s.n_iter + 1
    s.lower_bounds.append(lb)
    s.converged = bool(abs(change) < tol)
    return not s.converged


@dataclass(frozen=True)
class MemoryRows:
    """In-memory rows, with the row blocks and shift of the passes they came from: EM
    on them in another process does the same arithmetic, and so gets the same bits."""

    x: np.ndarray
    w: np.ndarray | None
    row_chunks: tuple[int, ...]
    shift: np.ndarray

    def passes(self) -> DataPasses:
        """Passes over these rows in the calling thread (the local synchronous scheduler).

        They leave BLAS as the process has it: a worker started by a nanny runs one thread
        (Dask sets it so), as the client's pinned passes do, and pins taken and released by
        several threads of one worker at once could leave it otherwise."""
        import dask.array as da

        x = da.from_array(self.x, chunks=(self.row_chunks, self.x.shape[1]), name=False)
        w = None if self.w is None else da.from_array(self.w, chunks=(self.row_chunks,), name=False)
        return DataPasses(RowBlocks(x, w, "sync", pin_blas=False), self.shift, checked=True)


def evidence_rows(params: GaussianParams | VariationalParams, x: np.ndarray) -> np.ndarray:
    """Each row's share of a fit's bound: its log-likelihood under a Gaussian mixture; under a
    variational one, the log-normaliser of its E-step, ``log Σ_k exp(E[log π_k] +
    E[log N(x | μ_k, Λ_k)])``, the bound's only term that is a sum over rows."""
    return row_output(params, x, "score")


def judged_rows(params: GaussianParams | VariationalParams, x: np.ndarray, output: str):
    """What the fits on a sample are compared by, per row of ``x``: ``score`` (log-likelihood
    of the mixture the fit stands for), ``entropy`` (its ``Σ_k τ log τ``) or ``evidence``
    (`evidence_rows`)."""
    if output == "evidence":
        return evidence_rows(params, x)
    return row_output(params.gaussian, x, output)


def judged_outputs(params: GaussianParams | VariationalParams) -> tuple[str, ...]:
    """The `judged_rows` a fit on the sample is always compared by (a Gaussian mixture's
    evidence is its score)."""
    return params.judged
