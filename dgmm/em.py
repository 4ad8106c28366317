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
    SPLIT_EVERY,
    RowBlocks,
    StalledError,
    bounded,
    cluster_memory_limit,
    cluster_workers,
    compute,
    run_tasks,
)
from .covariance import DegenerateCovarianceError, get_covariance_type
from .estep import (
    TEMPORARY_BYTES,
    Posterior,
    ScoringPosterior,
    StatsJob,
    chunk_statistics,
    compute_dtype,
    row_output,
)
from .mstep import m_step
from .params import GaussianParams
from .sampling import RowSample, SamplePlan, SampleSpec, combine_samples, sample_block
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
    "PassPlan",
    "StalledError",
    "TaskMemoryError",
    "bounded",
    "cluster_memory_limit",
    "compute",
    "judged_rows",
    "max_sample_rows",
    "plan_for",
    "plan_passes",
    "run_em",
    "run_em_on_workers",
    "statistics_nbytes",
]

logger = logging.getLogger(__name__)


def statistics_nbytes(covariance_type: str, n_components: int, n_features: int) -> int:
    """Bytes of one candidate's statistics (float64 counts, sums and second moments)."""
    shape = get_covariance_type(covariance_type).moment_shape(n_components, n_features)
    return 8 * (2 + n_components + n_components * n_features + int(np.prod(shape)))


# What a worker holds besides the passes' data: the interpreter and its imports (measured
# ~104 MiB after dgmm's passes with the dgmm.worker preload, 161 MiB without, ~385 MiB once
# dask-ml's k-means ran there), plus the allocator's retained heap (<= limit/16)
WORKER_BASELINE_BYTES = 256 * 2**20
# Share of a worker's memory limit the passes plan to use (Dask pauses a worker at 80%)
WORKER_BUDGET_FRACTION = 0.75
# Statistics that small always go: a worker that cannot hold them cannot hold a chunk either
MIN_TASK_BUDGET = 16 * 2**20
FAN_INS = (SPLIT_EVERY, 4, 2)


# The sampling pass's last combine holds its inputs and their concatenation, twice the sample;
# a binomial draw can exceed its expected size by a few per cent.
SAMPLE_HELD = 2.2


def sample_row_bytes(n_features: int, dtype: np.dtype, weighted: bool) -> int:
    """Bytes one sampled row takes: its values in the data's dtype, its row number, its weight."""
    return n_features * np.dtype(dtype).itemsize + 8 + (8 if weighted else 0)


def max_sample_rows(
    memory_limit: int | None, n_features: int, chunk_rows: int, dtype: np.dtype, weighted: bool
) -> int | None:
    """The most rows a sampling pass can gather on a worker under ``memory_limit`` (None: no
    limit): held twice by the last combine, they get the budget a pass's statistics get."""
    if memory_limit is None:
        return None
    budget = task_budget(memory_limit, chunk_rows * n_features * compute_dtype(dtype).itemsize)
    return max(int(budget // (SAMPLE_HELD * sample_row_bytes(n_features, dtype, weighted))), 1)


class TaskMemoryError(ValueError):
    """One candidate's statistics cannot fit a worker, even alone in its pass."""


@dataclass(frozen=True)
class PassPlan:
    """How the candidates of one round of passes are grouped so that every task fits a worker.

    Attributes
    ----------
    batches : list of (list of int, int)
        Candidate indices of each pass, with the reduction fan-in of that pass.
    task_bytes : int
        The largest estimated bytes a worker holds for one pass of the plan.
    budget : int or None
        Bytes the plan keeps each worker under (None: no limit known, one pass).
    """

    batches: list[tuple[list[int], int]]
    task_bytes: int
    budget: int | None


def task_budget(memory_limit: int | None, chunk_bytes: int) -> int | None:
    """Bytes of statistics a worker may hold at once under ``memory_limit``."""
    if memory_limit is None:
        return None
    usable = WORKER_BUDGET_FRACTION * memory_limit - WORKER_BASELINE_BYTES
    return int(max(usable - chunk_bytes - TEMPORARY_BYTES, MIN_TASK_BUDGET))


def plan_passes(stats_bytes: list[int], chunk_bytes: int, memory_limit: int | None) -> PassPlan:
    """Group candidates into passes whose statistics fit a worker's memory.

    A worker holds, besides its chunk and sub-block temporaries, the statistics of the block
    results waiting to be combined: with fan-in ``s``, up to ``s`` inputs, the output and one
    more block result, ``(s + 2)`` sets of a pass's statistics. Candidates are packed in order
    into as few passes as fit, at the fan-in that needs the fewest (the largest among equals).
    With no memory limit everything is one pass at the default fan-in, so results do not
    depend on the plan there; under a limit a candidate's sums may be added in another order
    than alone (the same to rounding).

    Raises
    ------
    TaskMemoryError
        When one candidate alone does not fit at the smallest fan-in.
    """
    chunk = chunk_bytes + TEMPORARY_BYTES
    budget = task_budget(memory_limit, chunk_bytes)
    if budget is None:
        held = (SPLIT_EVERY + 2) * sum(stats_bytes)
        return PassPlan([(list(range(len(stats_bytes))), SPLIT_EVERY)], chunk + held, None)
    largest = max(stats_bytes, default=0)
    options = []
    for s in FAN_INS:
        cap = budget // (s + 2)
        if largest > cap:
            continue
        batches: list[list[int]] = []
        total = cap + 1
        for i, b in enumerate(stats_bytes):
            if total + b > cap:
                batches.append([])
                total = 0
            batches[-1].append(i)
            total += b
        options.append([(b, s) for b in batches])
    if not options:
        s = FAN_INS[-1]
        raise TaskMemoryError(
            f"a candidate's statistics ({largest / 2**20:.0f} MiB) need "
            f"{(s + 2) * largest / 2**20:.0f} MiB on a worker, more than the "
            f"{max(budget, 0) / 2**20:.0f} MiB its memory limit ({memory_limit / 2**20:.0f} "
            "MiB) leaves"
        )
    plan = min(options, key=len)  # min keeps the first (largest fan-in) among equals
    worst = max((s + 2) * sum(stats_bytes[i] for i in b) for b, s in plan)
    return PassPlan(plan, chunk + worst, budget)


def plan_for(
    candidates: list[tuple[str, int]],
    n_features: int,
    chunk_rows: int,
    itemsize: int,
    memory_limit: int | None,
) -> PassPlan:
    """`plan_passes` for (covariance type, K) candidates on chunks of ``chunk_rows`` rows."""
    stats = [statistics_nbytes(cov, k, n_features) for cov, k in candidates]
    return plan_passes(stats, chunk_rows * n_features * itemsize, memory_limit)


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

    def sample(self) -> RowSample:
        """The uniform sample of rows ``sampling`` asks for.

        Drawn by one counted pass the first time, which also profiles the data (and so checks
        it for NaN/inf: `DataError`); later calls return the same sample.
        """
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
    return (
        ScoringPosterior(shifted) if isinstance(params, VariationalParams) else Posterior(shifted)
    )


def _em_step(s: EMState, st: SuffStats, passes: DataPasses, tol: float) -> bool:
    """M-step and convergence test of one candidate; whether it keeps running.

    A Gaussian mixture's bound is the mean log-likelihood before the M-step; a variational
    mixture's is scikit-learn's evidence bound after it (a total, not a mean).
    """
    try:
        if isinstance(s.params, VariationalParams):
            s.params = variational_m_step(
                st,
                s.params.strategy,
                s.params.prior,
                s.reg_covar,
                passes.shift,
                passes.eps,
                weight_scale=passes.weight_scale(st),
            )
            lb = lower_bound(st.entropy, s.params)
        else:
            lb = st.loglik / st.n
            s.params = m_step(
                st,
                s.params.strategy,
                s.reg_covar,
                passes.shift,
                passes.eps,
                weight_scale=passes.weight_scale(st),
            )
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


def gaussian_view(params: GaussianParams | VariationalParams) -> GaussianParams:
    """The mixture a fit stands for: a variational fit's posterior means."""
    return params.gaussian if isinstance(params, VariationalParams) else params


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
    return row_output(gaussian_view(params), x, output)


def judged_outputs(params: GaussianParams | VariationalParams) -> tuple[str, ...]:
    """The `judged_rows` a fit on the sample is always compared by (a Gaussian mixture's
    evidence is its score)."""
    return ("score", "evidence") if isinstance(params, VariationalParams) else ("score",)


def _em_task(
    rows: MemoryRows, job: tuple[EMState, float, int, bool]
) -> tuple[EMState, int, dict[str, np.ndarray]]:
    state, tol, max_iter, judged = job
    passes = rows.passes()
    run_em(passes, [state], tol=tol, max_iter=max_iter)
    values = {}
    if judged and not state.failed and state.n_iter:
        values = {o: judged_rows(state.params, rows.x, o) for o in judged_outputs(state.params)}
    return state, passes.n_passes, values


def em_task_bytes(stats_bytes: int) -> int:
    """What a worker holds for one EM task over rows in memory besides the rows (which its
    tasks share): the sub-block temporaries and up to ``SPLIT_EVERY + 2`` sets of the
    candidate's statistics (the pass's one reduction, with no memory limit)."""
    return TEMPORARY_BYTES + (SPLIT_EVERY + 2) * stats_bytes


def run_em_on_workers(
    passes: DataPasses,
    x: np.ndarray,
    w: np.ndarray | None,
    states: list[EMState],
    *,
    tol: float,
    max_iter: int,
    judged: bool = False,
) -> list[tuple[EMState, dict[str, np.ndarray]]] | None:
    """`run_em` of each state as its own task on the active cluster's workers, over the rows
    ``x`` (weights ``w``) in memory that ``passes`` runs over.

    Returns each state finished, in order, with (if ``judged`` and it ran without failing)
    its `judged_outputs` (`judged_rows` of ``x``) computed in its task, else an empty dict;
    or None, having run nothing, for fewer than two states, without a cluster of two or more
    worker threads, or when a worker's memory limit would not hold its tasks
    (the rows, and `em_task_bytes` per worker thread, within the budget a pass plans with).

    Candidates over rows in memory share no read, only the interpreter: in separate worker
    processes they run at once, where the local threaded scheduler scales little past one
    thread on these kernels. Each state gets the same arithmetic as in lockstep (its
    sub-blocks do not depend on the other candidates), so the same results. The most costly
    candidates per iteration start first. ``passes`` counts the passes the longest took.
    """
    workers = cluster_workers()
    if len(states) < 2 or sum(t for t, _ in workers) < 2:
        return None
    d = x.shape[1]
    cost = [statistics_nbytes(s.params.covariance_type, s.params.n_components, d) for s in states]
    rows_bytes = x.nbytes + (0 if w is None else w.nbytes)
    for threads, limit in workers:
        need = rows_bytes + threads * em_task_bytes(max(cost))
        if limit is not None and need > WORKER_BUDGET_FRACTION * limit - WORKER_BASELINE_BYTES:
            logger.info(
                "EM on the sample in this process: its tasks need ~%.0f MiB on a worker of "
                "%.0f MiB",
                need / 2**20,
                limit / 2**20,
            )
            return None
    rows = MemoryRows(x, w, tuple(passes.blocks.x.chunks[0]), passes.shift)
    done = run_tasks(
        _em_task, rows, [(s, tol, max_iter, judged) for s in states], "dgmm-em-in-memory", cost
    )
    passes.n_passes += max(n for _, n, _ in done)
    return [(s, values) for s, _, values in done]
