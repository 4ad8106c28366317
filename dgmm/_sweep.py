"""The EM engine: `Sweep` fits many candidates in lockstep, each pass over the data serving
every candidate still running. `GaussianMixture.fit` is its one-cell case, `select` the
many-cell one."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from ._candidates import RETRY_FIRST_REG, Candidate
from ._checkpoint import key_difference, load_checkpoint, read_checkpoint, save_checkpoint
from ._em_workers import run_em_on_workers
from ._reuse import fetch, keep
from ._screening import SampleScores, trailing_cells, trailing_restarts
from .covariance import get_covariance_type
from .em import DataPasses, EMState, run_em
from .estep import StatsJob
from .files import DamagedFile, set_aside
from .init import InitRequest, UserInit, initial_parameters
from .inputs import load_input
from .sampling import (
    RowSample,
    SamplePlan,
    cell_starts_on_sample,
    default_sample_size,
    sample_seed,
)
from .settings import FitSettings
from .sources import ScoringPosterior
from .store import ResultStore
from .variational import PriorSpec

logger = logging.getLogger(__name__)


def starts_on_sample(strategy: str, sampling: SamplePlan, n_rows: int) -> bool:
    """Whether any cell's EM starts on the sample: asked for, and the data is over twice the
    smallest cell's rows of it (`SamplePlan.starts_on_sample`)."""
    return cell_starts_on_sample(strategy, min(sampling.sizes), n_rows)


def plan_sample(
    passes: DataPasses,
    cells: list[tuple[str, int]],
    sample_size: int | None,
    random_state: Any,
    per_cell: bool = True,
) -> SamplePlan:
    """The sample a run draws: ``sample_size`` rows, or `default_sample_size` of the cells,
    at most what the sampling pass can gather on one worker (`DataPasses.max_sample_rows`).

    By default (no ``sample_size``, ``per_cell``) each cell is fitted on its own default's
    rows of it (`SamplePlan.cell_sizes`): the sample a run of that cell alone draws, so a fit
    is the same in any grid that holds its cell (a result store reuses it). Without
    ``per_cell`` (a variational mixture, whose priors' defaults and tolerance follow the
    sample) every cell is fitted on all of it.

    Raises
    ------
    ValueError
        When a given ``sample_size`` would not fit a worker.
    """
    n_rows, n_features = passes.blocks.x.shape
    cap = passes.max_sample_rows()
    if sample_size is not None and cap is not None and min(sample_size, n_rows) > cap:
        raise ValueError(
            f"sample_size={sample_size} does not fit a worker: the sampling pass gathers the "
            f"sample on one worker, and its memory limit ({passes.memory_limit / 2**20:.0f} MiB) "
            f"leaves room for {cap} rows of {n_features} features; give sample_size <= {cap} "
            "or larger workers"
        )
    seed = sample_seed(random_state)
    if sample_size is not None:
        return SamplePlan(sample_size, seed)
    size = default_sample_size(cells, n_features)
    if cap is not None and min(size, n_rows) > cap:
        logger.info(
            "sample of %d rows instead of %d: the workers' memory limit (%.0f MiB) holds no more",
            cap,
            size,
            passes.memory_limit / 2**20,
        )
        size = cap
    own = {}
    if per_cell:
        for cell in cells:
            rows = default_sample_size([cell], n_features)
            if cap is not None:
                rows = min(rows, cap)
            if min(rows, n_rows) < min(size, n_rows):
                own[cell] = rows
    return SamplePlan(size, seed, tuple(sorted(own.items())))


@dataclass
class Sweep:
    """The lockstep EM engine over a set of candidates sharing one dataset.

    Parameters
    ----------
    passes : DataPasses
        The passes over the data; it counts them.
    candidates : list of Candidate
        In the order results are reported; restarts of one cell in restart order.
    settings : FitSettings
        The fitting settings. Each cell draws its restarts' initialisations in turn from its
        own ``check_random_state(random_state)``, as one `GaussianMixture` fit does. With
        ``screen_degenerate``, restarts whose fit is degenerate (`GaussianParams.degenerate`)
        are recorded as NA with the reason after EM. With ``strategy='sample'`` (multi-
        resolution EM) every candidate is initialised and fitted to convergence on a uniform
        sample of rows in memory (one pass draws it), restarts that clearly trail their cell's
        best there are stopped (with ``screen_cells``, whole cells too), and the others continue
        on all rows under the same convergence test; a cell on data less than twice its rows
        of the sample runs 'exact'. The sample is the one planned on ``passes``
        (`plan_sample`).
    user : UserInit
        User-given starting parameters (one-cell sweeps).
    x_mem, w_mem : ndarray or None
        In-memory data and weights (numpy input), for scikit-learn's own initialisations.
    checkpoint : path or None
        Where to save the state after every pass, and to resume from.
    key : dict
        What the checkpoint must match to be resumed (settings and data).
    progress : callable or None
        ``progress(phase)`` after every EM pass (``'em'``, after the M-step) and when a
        checkpoint is resumed (``'resume'``).
    prior : PriorSpec or None
        A variational mixture's priors, checked against the data (None: EM).
    store : ResultStore or None
        Fits of earlier runs: a candidate stored under its specification (``store_base``
        and its cell and restart) is read back instead of fitted, at each stage (EM on the
        sample, the finished fit), and every fit made is kept there (by ``origin``).
    """

    passes: DataPasses
    candidates: list[Candidate]
    settings: FitSettings = field(default_factory=FitSettings)
    user: UserInit = field(default_factory=UserInit)
    x_mem: np.ndarray | None = None
    w_mem: np.ndarray | None = None
    checkpoint: Path | None = None
    key: dict = field(default_factory=dict)
    progress: Callable[[str], None] | None = None
    prior: PriorSpec | None = None  # a variational mixture's priors
    resumed_from: int | None = None  # passes of the checkpoint resumed, if any
    # EM of each candidate as its own task on the cluster's workers (`run_em_on_workers`):
    # for in-memory rows (``x_mem``), with no checkpoint or progress per pass
    spread: bool = False
    # per candidate (by ``id``), the `judged_rows` its spread EM computed of its final fit
    judged_rows: dict[int, dict] = field(default_factory=dict)
    store: ResultStore | None = None
    store_base: dict = field(default_factory=dict)  # what every stored fit's spec shares
    origin: str = ""  # what this sweep's kept fits say made them

    def __post_init__(self) -> None:
        if self.passes.sampling is None:
            cells = sorted({c.cell for c in self.candidates})
            self.passes.sampling = plan_sample(
                self.passes,
                cells,
                self.settings.sample_size,
                self.settings.random_state,
                per_cell=self.prior is None,
            )

    @property
    def multi_resolution(self) -> bool:
        """Whether EM starts on the sample (`starts_on_sample`)."""
        n_rows = self.passes.blocks.x.shape[0]
        return starts_on_sample(self.settings.strategy, self.passes.sampling, n_rows)

    def _on_sample(self, c: Candidate) -> bool:
        """Whether ``c``'s EM starts on the sample (its cell decides, `SamplePlan`)."""
        n_rows = self.passes.blocks.x.shape[0]
        return self.passes.sampling.starts_on_sample(self.settings.strategy, c.cell, n_rows)

    def run(self, score: bool = True) -> list[Candidate]:
        """Initialise (or resume), run EM with retries, then score every fitted restart.

        Candidates that come with a state (a warm start) are not initialised.
        """
        if not self._resume():
            fresh = [c for c in self.candidates if c.state is None]
            on_sample = [c for c in fresh if self._on_sample(c)]
            if on_sample:
                self._start_on_sample(on_sample)
            exact = [c for c in fresh if not self._on_sample(c)]
            if exact:
                self._reuse(exact, "final")
                exact = [c for c in exact if c.state is None]
                if exact:
                    self._initialise(exact)
        self._em()
        while self._retry():
            self._em()
        if self.settings.screen_degenerate:
            n = self.passes.blocks.x.shape[0]
            for c in self.candidates:  # a start that ran no EM (max_iter=0) is kept as is
                if c.error is None and c.state is not None and c.state.n_iter:
                    reg = c.state.reg_covar
                    c.degenerate = c.state.params.degenerate(n, reg, self.passes.columns)
        if score:
            self._score()
        if self.store is not None:  # the fits made here, finished (stopped ones: on the sample)
            made = [c for c in self.candidates if c.reused is None and c.stopped is None]
            keep(self.store, self.store_base, made, "final", self.origin, self.passes.sampling)
        return self.candidates

    def _reuse(self, cands: list[Candidate], stage: str) -> dict[int, str]:
        """Read the fits of ``cands`` stored at ``stage``; returns their origins by ``id``."""
        if self.store is None:
            return {}
        found = fetch(self.store, self.store_base, cands, stage, self.passes.sampling)
        if stage == "final":  # a sample-stage fit stands for all of a candidate's work only
            for c in cands:  # where it ends there (`_start_on_sample` says so)
                if id(c) in found:
                    c.reused = found[id(c)]
        return found

    # -- stages
    def _resume(self) -> bool:
        if self.checkpoint is None or not os.path.lexists(self.checkpoint):
            return False
        try:
            header, arrays = read_checkpoint(self.checkpoint)
        except DamagedFile as e:
            aside = set_aside(self.checkpoint)
            logger.warning("checkpoint damaged: %s; set aside as '%s', starting afresh", e, aside)
            return False
        why = key_difference(header.get("key"), self.key)
        if why is None and len(header["candidates"]) != len(self.candidates):
            why = "it holds other candidates"
        if why is None:
            try:
                n_passes = load_checkpoint(header, arrays, self.candidates, self.checkpoint)
            except Exception as e:  # what the digest vouched for does not fit these candidates
                for c in self.candidates:
                    c.reset()
                aside = set_aside(self.checkpoint)
                logger.warning(
                    "checkpoint damaged: '%s' does not hold these candidates (%s: %s); set "
                    "aside as '%s', starting afresh",
                    self.checkpoint,
                    type(e).__name__,
                    e,
                    aside,
                )
                return False
            if n_passes:
                done = max((c.state.n_iter for c in self.candidates if c.state), default=0)
                logger.info(
                    "resuming from checkpoint after %d passes (iteration %d)", n_passes, done
                )
                self.passes.resume(n_passes)
                self.resumed_from = n_passes
                if self.progress is not None:
                    self.progress("resume")
                return True
            why = "it holds no finished pass"
        logger.warning("not resuming from the checkpoint: %s; starting afresh", why)
        for c in self.candidates:
            c.reset()
        self.checkpoint.unlink()
        return False

    def _initialise(self, cands: list[Candidate]) -> None:
        """Starting parameters of ``cands``, in one shared pass.

        Every cell replays its random stream from the start over its restarts 0..r, so that a
        restart re-initialised alone (a retry) gets the same start as in the first round.
        """
        cells: dict[tuple[str, int], list[Candidate]] = {}
        for c in cands:
            cells.setdefault(c.cell, []).append(c)
        requests, owners = [], []
        for (cov, k), members in cells.items():
            rng = check_random_state(self.settings.random_state)
            wanted = {c.restart: c for c in members}
            for r in range(max(wanted) + 1):
                c = wanted.get(r)
                reg = c.reg_covar if c is not None else members[0].reg_covar
                strategy = get_covariance_type(cov)
                requests.append(
                    InitRequest(
                        strategy,
                        k,
                        self.settings.init_params,
                        self.user,
                        reg,
                        rng=rng,
                        prior=self.prior,
                    )
                )
                owners.append(c)
        starts = initial_parameters(self.passes, requests, None, self.x_mem, self.w_mem)
        for c, p in zip(owners, starts, strict=True):
            if c is None:
                continue
            if isinstance(p, Exception):
                c.init_error, c.start, c.state = str(p), None, None
            else:
                c.start, c.init_error = p, None
                c.state = EMState(p, c.reg_covar)
        self._checkpoint()

    def _start_on_sample(self, cands: list[Candidate]) -> None:
        """Fit ``cands`` on the sample in memory (each cell on its rows of it,
        `SamplePlan.rows_for`), stop the restarts that clearly trail their cell's best there,
        and start the others on all rows from their sample fit."""
        plan = self.passes.sampling
        started = time.perf_counter()
        subs = [Candidate(c.covariance_type, c.n_components, c.restart, c.reg_covar) for c in cands]
        stored: dict[int, str] = {}
        trailing: dict[int, str] = {}
        scores: SampleScores | None = None  # over the whole sample: the cells compared on it
        n_passes = 0
        for rows in plan.sizes:
            group = [s for s in subs if plan.rows_for(s.cell) == rows]
            if not group:
                continue
            sub = self._sample_sweep(self.passes.sample(rows), group)
            stored |= self._reuse(group, "sample")
            sub.run(score=False)
            n_passes = max(n_passes, sub.passes.n_passes)
            if self.store is not None:
                made = [s for s in group if id(s) not in stored]
                keep(self.store, self.store_base, made, "sample", self.origin, plan)
            # a cell's restarts are judged on the rows they were fitted on, as in a run of
            # that cell alone
            own = SampleScores(sub.x_mem, sub.w_mem)
            for s in group:
                own.take(s, sub.judged_rows.get(id(s), {}))
            trailing |= trailing_restarts(group, own, self.settings.tol)
            if rows == plan.size:
                scores = own
            del sub, own  # one part of the sample held at a time
        if scores is None:  # no cell fitted on the whole sample starts on it
            whole = self.passes.sample()
            data = load_input(whole.x, whole.w, "the sample")
            scores = SampleScores(data.x_mem, data.w_mem)
        estimated: dict[int, dict] = {}
        cells: dict[int, str] = {}  # restarts stopped with their cell
        by = self.settings.screened_by
        if by is not None:
            n = self.passes.blocks.x.shape[0]
            shares = {s.cell: plan.rows_for(s.cell) / plan.size for s in subs}
            cells, estimated = trailing_cells(
                subs, scores, n, by, set(trailing), self.settings.used_weight, shares
            )
            trailing |= cells
        smallest = min(plan.rows_for(s.cell) for s in subs)
        logger.info(
            "EM on a sample of %s rows: %d pass(es) in memory, %.1f s; %d restart(s) stopped",
            f"{min(smallest, scores.x.shape[0])}..{scores.x.shape[0]}"
            if smallest < plan.size
            else scores.x.shape[0],
            n_passes,
            time.perf_counter() - started,
            len(trailing),
        )
        for c, s in zip(cands, subs, strict=True):
            c.retries, c.reg_covar = s.retries, s.reg_covar
            c.sample_iter = s.state.n_iter if s.state else 0
            if s.init_error is not None:
                c.init_error = f"on the sample: {s.init_error}"
            elif s.state.failed:
                c.state = EMState(s.state.params, s.reg_covar, error=f"on the sample: {s.error}")
            elif id(s) in trailing:
                c.stopped, c.estimate = trailing[id(s)], estimated.get(id(s))
                c.cell_stopped = id(s) in cells
            else:
                c.start = s.state.params
                c.state = EMState(c.start, s.reg_covar)
            if id(s) in stored and (c.state is None or c.state.failed or c.stopped):
                c.reused = stored[id(s)]  # all its work was EM on the sample, stored
        self._reuse([c for c in cands if c.state is not None and c.stopped is None], "final")
        self._checkpoint()

    def _sample_sweep(self, sample: RowSample, cands: list[Candidate]) -> Sweep:
        """The sweep of ``cands`` over the rows of ``sample`` in memory: exact EM, screened by
        the caller."""
        data = load_input(sample.x, sample.w, "the sample")
        return Sweep(
            DataPasses.over(data),
            cands,
            replace(
                self.settings,
                strategy="exact",
                sample_size=None,
                screen_cells=False,
                screen_degenerate=False,
            ),
            user=self.user,
            x_mem=data.x_mem,
            w_mem=data.w_mem,
            prior=self.prior,
            spread=self.passes.blocks.scheduler is None,  # where the passes use the cluster
        )

    def _em(self) -> None:
        live = [c for c in self.candidates if c.state is not None]
        if self.spread:
            pending = [
                c
                for c in live
                if not (c.state.converged or c.state.failed)
                and c.state.n_iter < self.settings.max_iter
            ]
            if not pending:  # every fit is done (stored ones included)
                return
            done = run_em_on_workers(
                self.passes,
                self.x_mem,
                self.w_mem,
                [c.state for c in pending],
                tol=self.full_data_tol,
                max_iter=self.settings.max_iter,
                judged=True,
            )
            if done is not None:
                for c, (state, values) in zip(pending, done, strict=True):
                    c.state = state
                    self.judged_rows[id(c)] = values
                return

        def on_pass(states: list[EMState], active: list[int]) -> None:
            self._checkpoint()
            if self.progress is not None:
                self.progress("em")

        run_em(
            self.passes,
            [c.state for c in live],
            tol=self.full_data_tol,
            max_iter=self.settings.max_iter,
            callback=on_pass,
        )

    @property
    def full_data_tol(self) -> float:
        """``tol`` on all rows. A variational bound is a total, so after EM on the sample its
        tolerance grows with the rows (N / sample size): the same test per row."""
        if self.prior is None or not self.multi_resolution:
            return self.settings.tol
        return self.settings.tol * self.passes.blocks.x.shape[0] / self.passes.sampling.size

    def _retry(self) -> bool:
        """Restart failed candidates with reg_covar × factor while it stays within the cap."""
        r = self.settings.retry
        if r is None:
            return False
        again = []
        for c in self.candidates:
            if c.error is None or c.stopped is not None:
                continue
            reg = c.reg_covar * r.factor if c.reg_covar > 0 else RETRY_FIRST_REG
            if reg > r.max_reg_covar:
                continue
            logger.info(
                "retrying %s K=%d restart %d with reg_covar=%g after: %s",
                c.covariance_type,
                c.n_components,
                c.restart,
                reg,
                c.error,
            )
            c.retries, c.reg_covar = c.retries + 1, reg
            self.judged_rows.pop(id(c), None)  # of the fit that failed
            again.append(c)
        reinit = [c for c in again if c.start is None]
        for c in again:
            if c.start is not None:
                c.state = EMState(c.start, c.reg_covar)
        if reinit:
            self._initialise(reinit)  # the same draws, a larger reg_covar
        elif again:
            self._checkpoint()
        return bool(again)

    def _checkpoint(self) -> None:
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.key, self.candidates, self.passes.n_passes)

    def _score(self) -> None:
        """One pass: log-likelihood and entropy of the final parameters of every fitted restart."""
        scored = [  # a stored fit comes with its scores
            c
            for c in self.candidates
            if c.error is None and c.state is not None and c.log_likelihood is None
        ]
        # a variational fit is scored as its posterior-mean mixture (weights_, means_, ...)
        jobs = [
            StatsJob(
                ScoringPosterior(
                    c.state.params.gaussian.shifted(self.passes.shift, self.passes.dtype)
                ),
                c.state.params.strategy,
            )
            for c in scored
        ]
        stats = self.passes.statistics(jobs, "dgmm-score") if jobs else []
        for c, st in zip(scored, stats, strict=True):
            c.log_likelihood, c.entropy = float(st.loglik), float(st.entropy)
