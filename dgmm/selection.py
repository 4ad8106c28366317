"""Model selection: every K × covariance type × restart fitted in lockstep, scored, and chosen.

`Sweep` is the one EM engine: `GaussianMixture.fit` is its one-cell case and `select` the
many-cell case. Every pass over the data serves every candidate still running; a candidate that
fails is recorded with its reason (NA) and optionally retried with a larger ``reg_covar``; with a
checkpoint path the state is saved after every pass so a killed sweep resumes where it stopped,
on the same data only. After EM one scoring pass gives every fitted restart its log-likelihood and
the entropy term of ICL.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from .covariance import get_covariance_type
from .em import (
    DataPasses,
    EMState,
    gaussian_view,
    judged_rows,
    run_em,
    run_em_on_workers,
)
from .estep import ScoringPosterior, StatsJob
from .files import DamagedFile, NotOwnFile, is_own, read_own, set_aside, write_own
from .init import InitRequest, UserInit, initial_parameters
from .io import check_gaussian_arrays, load_input
from .params import GaussianParams, n_parameters
from .paths import absolute_path
from .sampling import RowSample, SamplePlan, default_sample_size, sample_seed
from .validation import (
    ColumnProfile,
    check_constant_columns,
    check_n_components,
    check_profile,
)
from .variational import Prior, PriorSpec, VariationalParams, check_prior_spec

__all__ = [
    "CHECKPOINT_KIND",
    "CRITERIA",
    "METHODS",
    "STATUSES",
    "STRATEGIES",
    "PassReport",
    "Retry",
    "SelectionResult",
    "information_criteria",
    "profile",
    "select",
]


logger = logging.getLogger(__name__)

CRITERIA = ("bic", "aic", "icl")
STRATEGIES = ("exact", "sample")
METHODS = ("sweep", "variational")
PRIOR_SETTINGS = (
    "weight_concentration_prior_type",
    "weight_concentration_prior",
    "mean_precision_prior",
    "mean_prior",
    "degrees_of_freedom_prior",
    "covariance_prior",
)
# A failed candidate fitted without regularisation is retried first with scikit-learn's default.
RETRY_FIRST_REG = 1e-6


def information_criteria(
    log_likelihood: float, n_parameters: int, n_samples: float, entropy: float = 0.0
) -> dict[str, float]:
    """BIC, AIC and ICL of a fitted mixture (lower is better), the one place they are written.

    Parameters
    ----------
    log_likelihood : float
        Total (weighted) log-likelihood of the data under the model.
    n_parameters : int
        Free parameters of the model.
    n_samples : float
        Number of rows (total weight when weighted).
    entropy : float
        ``Σ_i Σ_k τ_ik log τ_ik`` (≤ 0); ICL = BIC − 2·entropy, as mclust defines it.
    """
    bic = -2.0 * log_likelihood + n_parameters * np.log(n_samples)
    return {
        "bic": float(bic),
        "aic": float(-2.0 * log_likelihood + 2 * n_parameters),
        "icl": float(bic - 2.0 * entropy),
    }


@dataclass(frozen=True)
class Retry:
    """Retry failed candidates with ``reg_covar × factor`` (1e-6 after 0) up to the cap."""

    factor: float = 10.0
    max_reg_covar: float = 1e-2


@dataclass
class Candidate:
    """One restart of one (K, covariance type) cell: its EM state, scores and bookkeeping."""

    covariance_type: str
    n_components: int
    restart: int
    reg_covar: float
    start: GaussianParams | None = None
    state: EMState | None = None
    init_error: str | None = None
    retries: int = 0
    log_likelihood: float | None = None  # total, of the final parameters (scoring pass)
    entropy: float | None = None
    degenerate: str | None = None  # why its fit is a spurious maximum (selection only)
    stopped: str | None = None  # why it was not continued after EM on the sample
    cell_stopped: bool = False  # stopped with its whole cell (trailing there), not alone
    estimate: dict | None = None  # its cell's criteria estimated on the sample, if stopped so
    sample_iter: int = 0  # EM iterations on the sample (multi-resolution EM)

    @property
    def cell(self) -> tuple[str, int]:
        return self.covariance_type, self.n_components

    @property
    def status(self) -> str:
        """Where the candidate stands (one of `STATUSES`), read from its fields."""
        if self.init_error is not None:
            return "failed"
        if self.degenerate is not None:
            return "degenerate"
        if self.stopped is not None:
            return "cell stopped" if self.cell_stopped else "stopped"
        if self.state is None:
            return "pending"
        if self.state.failed:
            return "failed"
        return "converged" if self.state.converged else "not converged"

    @property
    def error(self) -> str | None:
        if self.init_error is not None:
            return f"initialisation failed: {self.init_error}"
        if self.degenerate is not None:
            return f"degenerate: {self.degenerate}"
        if self.stopped is not None:
            return f"stopped: {self.stopped}"
        return self.state.error if self.state else None


# A candidate's status (`Candidate.status`, the ``status`` of a result row): fitted
# ("converged", "not converged"), "failed" (initialisation or EM), "degenerate" (a spurious
# maximum, screened out), "stopped" after EM on the sample (alone, trailing or repeating its
# cell's best) or "cell stopped" (with its whole cell), or "pending" (not started).
STATUSES = (
    "converged",
    "not converged",
    "failed",
    "degenerate",
    "stopped",
    "cell stopped",
    "pending",
)

# What each counted pass over the data is part of.
PHASES = {
    "dgmm-profile": "profile",
    "dgmm-sample": "sample",
    "dgmm-init": "init",
    "dgmm-estep": "em",
    "dgmm-score": "score",
}


@dataclass(frozen=True)
class PassReport:
    """What a selection's ``progress`` callback gets after every pass over the data.

    Attributes
    ----------
    n_pass : int
        Passes made so far, those of a resumed checkpoint included.
    phase : {'profile', 'init', 'em', 'score', 'resume'}
        What the pass was for; ``resume`` is reported once, with no pass, when a checkpoint
        is resumed (``n_pass`` is then the passes it holds).
    iteration : int
        The furthest EM iteration any candidate has reached.
    running, n_candidates : int
        Candidates still running EM, and all of them.
    criterion : str
        The criterion ``best`` is given in (BIC stands in for ICL until the scoring pass).
    best : float or None
        The lowest criterion among the fits that can still be selected (from their last lower
        bound): not failed, not stopped after the sample, and, with ``screen_degenerate``, not
        degenerate.
    rows : int
        Rows read by the pass.
    seconds, elapsed : float
        Time of this pass, and since the selection started.
    """

    n_pass: int
    phase: str
    iteration: int
    running: int
    n_candidates: int
    criterion: str
    best: float | None
    rows: int
    seconds: float
    elapsed: float

    def line(self) -> str:
        """One line for a log: every field, rows per second and the elapsed time."""
        if self.phase == "resume":
            return (
                f"resumed from the checkpoint after {self.n_pass} passes "
                f"(iteration {self.iteration}, {self.running}/{self.n_candidates} candidates "
                f"running)"
            )
        best = "-" if self.best is None else f"{self.best:.6g}"
        rate = self.rows / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"pass {self.n_pass} {self.phase}: iteration {self.iteration}, "
            f"{self.running}/{self.n_candidates} candidates running, best {self.criterion} "
            f"{best}, {_si(rate)} rows/s, {self.seconds:.1f} s, elapsed {_clock(self.elapsed)}"
        )


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


ProgressFn = Callable[[PassReport], None]


class _Reporter:
    """Makes a `PassReport` of every counted pass. An EM pass is reported by the sweep after
    its M-step (``reporter("em")``), so the report has that iteration's lower bounds."""

    def __init__(
        self,
        fn: ProgressFn,
        passes: DataPasses,
        criterion: str,
        n_rows: int,
        max_iter: int,
        variational: bool = False,
        screen: bool = True,
    ):
        self.fn, self.passes, self.n_rows, self.max_iter = fn, passes, n_rows, max_iter
        self.screen = screen  # a degenerate fit cannot be selected: it is not reported best
        self.t0 = time.perf_counter()
        self.criterion = "bic" if criterion == "icl" else criterion
        # variational fits report their bound (the largest); criteria need a scoring pass
        self.variational = variational
        if variational:
            self.criterion = "lower bound"
        self.candidates: list[Candidate] = []
        passes.on_pass = self.pass_done

    def pass_done(self, name: str) -> None:
        phase = PHASES.get(name, name)
        if phase != "em":
            self(phase)

    def __call__(self, phase: str) -> None:
        seconds = 0.0 if phase == "resume" else self.passes.last_seconds
        live = [c for c in self.candidates if c.state is not None]
        done = [  # the fits that can still be selected: not failed, stopped or screened out
            c
            for c in live
            if c.state.n_iter
            and not c.state.failed
            and c.stopped is None
            and c.init_error is None
            and np.isfinite(c.state.lower_bound)
        ]
        if self.variational:
            values = [-c.state.lower_bound for c in done]  # the largest bound, below
        else:
            values = [
                information_criteria(
                    self.n_rows * c.state.lower_bound, c.state.params.n_parameters(), self.n_rows
                )[self.criterion]
                for c in done
            ]
        best = None
        for value, c in sorted(zip(values, done, strict=True), key=lambda vc: vc[0]):
            # only the leaders are checked (an eigendecomposition per component)
            if not self.screen or c.state.params.degenerate(self.n_rows, c.state.reg_covar) is None:
                best = -value if self.variational else value
                break
        running = [
            c
            for c in live
            if not (c.state.failed or c.state.converged) and c.state.n_iter < self.max_iter
        ]
        self.fn(
            PassReport(
                self.passes.n_passes,
                phase,
                max((c.state.n_iter for c in live), default=0),
                len(running),
                len(self.candidates),
                self.criterion,
                best,
                self.n_rows if phase != "resume" else 0,
                seconds,
                time.perf_counter() - self.t0,
            )
        )


# ----------------------------------------------------------------------------- checkpoints
CHECKPOINT_KIND = "checkpoint"
_ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")
_VB_ARRAYS = ("weight_concentration", "mean_precision", "degrees_of_freedom")


def save_checkpoint(path: Path, key: dict, cands: list[Candidate], n_passes: int) -> None:
    """All candidates' state in one ``.npz`` written atomically (temp file + replace).

    ``key`` identifies what the state belongs to (the sweep's settings and the data); a
    checkpoint is resumed only under an equal key.
    """
    meta, arrays = [], {}
    for i, c in enumerate(cands):
        s = c.state
        meta.append(
            {
                "retries": c.retries,
                "reg_covar": c.reg_covar,
                "init_error": c.init_error,
                "stopped": c.stopped,
                "cell_stopped": c.cell_stopped,
                "estimate": c.estimate,
                "sample_iter": c.sample_iter,
                "state": None
                if s is None
                else {
                    "reg_covar": s.reg_covar,
                    "lower_bound": s.lower_bound,
                    "lower_bounds": s.lower_bounds,
                    "n_iter": s.n_iter,
                    "converged": s.converged,
                    "error": s.error,
                },
            }
        )
        for tag, p in (("start", c.start), ("cur", s.params if s else None)):
            if p is not None:
                for a in _ARRAYS:
                    arrays[f"{tag}{i}_{a}"] = getattr(p, a)
                if isinstance(p, VariationalParams):
                    for a in _VB_ARRAYS:
                        arrays[f"{tag}{i}_{a}"] = np.asarray(getattr(p, a))
                    q = p.prior
                    for a in ("mean", "covariance"):
                        arrays[f"{tag}{i}_prior_{a}"] = np.asarray(getattr(q, a))
                    meta[-1][f"{tag}_prior"] = [
                        q.process,
                        q.weight_concentration,
                        q.mean_precision,
                        q.degrees_of_freedom,
                    ]
    header = {"key": key, "n_passes": n_passes, "candidates": meta}
    buf = io.BytesIO()
    np.savez(buf, header=np.array(json.dumps(header)), **arrays)
    write_own(path, CHECKPOINT_KIND, buf.getvalue())


def read_checkpoint(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A checkpoint's header (key, passes, candidate metadata) and arrays.

    Raises
    ------
    NotOwnFile
        ``path`` is not a dgmm checkpoint.
    DamagedFile
        It is one, but damaged: changed since written, or not readable as one.
    """
    payload = read_own(path, CHECKPOINT_KIND)
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            arrays = {k: npz[k] for k in npz.files if k != "header"}
        if not isinstance(header, dict) or not isinstance(header.get("candidates"), list):
            raise ValueError("no candidate list")
    except Exception as e:  # any failure to parse what the digest vouched for
        raise DamagedFile(f"'{path}' cannot be read ({type(e).__name__}: {e})") from None
    return header, arrays


def load_checkpoint(
    header: dict, arrays: dict[str, np.ndarray], cands: list[Candidate], path: Path
) -> int:
    """Restore candidates in place from a checkpoint read by `read_checkpoint`; returns the
    passes made so far.

    Every parameter set a live candidate resumes from is checked as a saved model's is
    (`dgmm.io.check_gaussian_arrays`: shapes, finite values, weights on the simplex, factors
    and covariances that invert each other); a `ModelFileError` names the first that is not.
    """
    n_features = int(header["key"]["shape"][1])
    pairs = list(zip(cands, header["candidates"], strict=True))
    for i, (c, m) in enumerate(pairs):  # all checked before any candidate changes
        live = m["state"] is None or m["state"]["error"] is None
        # a start is an initialisation's raw statistics (weights need not sum to 1 yet):
        # finite values only; the state EM resumes from is checked as a saved model is
        for key in (k for k in arrays if k.startswith(f"start{i}_")):
            if arrays[key].dtype.kind not in "iuf" or not np.isfinite(arrays[key]).all():
                raise ValueError(f"{path}: {key}: expected finite numbers")
        for tag in ("cur",) if live else ():
            if f"{tag}{i}_weights" in arrays:
                found = {f"{a}_": arrays[f"{tag}{i}_{a}"] for a in _ARRAYS}
                process = None
                if f"{tag}_prior" in m:  # a variational candidate: its posterior and priors
                    process = bool(m[f"{tag}_prior"][0])
                    found |= {f"{a}_": arrays[f"{tag}{i}_{a}"] for a in _VB_ARRAYS}
                    found["mean_prior_"] = arrays[f"{tag}{i}_prior_mean"]
                    found["covariance_prior_"] = arrays[f"{tag}{i}_prior_covariance"]
                check_gaussian_arrays(
                    found, c.covariance_type, c.n_components, n_features, path / f"{tag}{i}",
                    process,
                )  # fmt: skip
    for i, (c, m) in enumerate(pairs):
        c.retries, c.init_error, c.reg_covar = m["retries"], m["init_error"], m["reg_covar"]
        c.stopped, c.sample_iter = m.get("stopped"), m.get("sample_iter", 0)
        c.cell_stopped = bool(m.get("cell_stopped", False))
        c.estimate = m.get("estimate")

        def params(
            tag: str, c: Candidate = c, i: int = i, m: dict = m
        ) -> GaussianParams | VariationalParams | None:
            if f"{tag}{i}_weights" not in arrays:
                return None
            g = GaussianParams(c.covariance_type, *(arrays[f"{tag}{i}_{a}"] for a in _ARRAYS))
            if f"{tag}_prior" not in m:
                return g
            process, wc, mp, dof = m[f"{tag}_prior"]
            prior = Prior(
                process, wc, mp, arrays[f"{tag}{i}_prior_mean"], dof,
                arrays[f"{tag}{i}_prior_covariance"],
            )  # fmt: skip
            extra = (arrays[f"{tag}{i}_{a}"] for a in _VB_ARRAYS)
            return VariationalParams(g, *extra, prior)

        c.start = params("start")
        s = m["state"]
        c.state = None if s is None else EMState(params("cur"), **s)
    return int(header["n_passes"])


_DATA_KEYS = ("shape", "dtype", "row_chunks", "digest")


def _jsonable_prior(prior: dict | None) -> dict | None:
    if prior is None:
        return None
    return {k: np.asarray(v).tolist() if v is not None else None for k, v in prior.items()}


def _brief(value: Any) -> str:
    """A key value for a message: long lists (row chunks) by their length and ends."""
    if isinstance(value, list) and len(value) > 6:
        return f"[{value[0]}, {value[1]}, ... {value[-1]}] ({len(value)} values)"
    return str(value)


def _key_difference(old: Any, new: dict) -> str | None:
    """Why a checkpoint made under key ``old`` may not resume under ``new`` (None: it may)."""
    if not isinstance(old, dict):
        return "it records no key"
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if not diff:
        return None
    data = [k for k in diff if k in _DATA_KEYS]
    settings = [k for k in diff if k not in _DATA_KEYS]
    parts = [
        f"the {what} changed "
        f"({'; '.join(f'{k} {_brief(old.get(k))} -> {_brief(new.get(k))}' for k in keys)})"
        for what, keys in (("settings", settings), ("data", data))
        if keys
    ]
    return " and ".join(parts) + " since it was written"


# ---------------------------------------------------------------------------- the engine
def starts_on_sample(strategy: str, sampling: SamplePlan, n_rows: int) -> bool:
    """Whether EM starts on the sample: asked for, and the data is over twice the sample."""
    return strategy == "sample" and 2 * sampling.size < n_rows


def plan_sample(
    passes: DataPasses, cells: list[tuple[str, int]], sample_size: int | None, random_state: Any
) -> SamplePlan:
    """The sample a run draws: ``sample_size`` rows, or `default_sample_size` of the cells,
    at most what the sampling pass can gather on one worker (`DataPasses.max_sample_rows`).

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
    size = sample_size or default_sample_size(cells, n_features)
    if sample_size is None and cap is not None and min(size, n_rows) > cap:
        logger.info(
            "sample of %d rows instead of %d: the workers' memory limit (%.0f MiB) holds no more",
            cap,
            size,
            passes.memory_limit / 2**20,
        )
        size = cap
    return SamplePlan(size, sample_seed(random_state))


@dataclass
class Sweep:
    """The lockstep EM engine over a set of candidates sharing one dataset.

    Parameters
    ----------
    passes : DataPasses
        The passes over the data; it counts them.
    candidates : list of Candidate
        In the order results are reported; restarts of one cell in restart order.
    init_params, tol, max_iter, random_state
        As in `GaussianMixture`. Each cell draws its restarts' initialisations in turn from
        its own ``check_random_state(random_state)``, as one `GaussianMixture` fit does.
    user : UserInit
        User-given starting parameters (one-cell sweeps).
    x_mem, w_mem : ndarray or None
        In-memory data and weights (numpy input), for scikit-learn's own initialisations.
    retry : Retry or None
    checkpoint : path or None
        Where to save the state after every pass, and to resume from.
    key : dict
        What the checkpoint must match to be resumed (settings and data).
    progress : callable or None
        ``progress(phase)`` after every EM pass (``'em'``, after the M-step) and when a
        checkpoint is resumed (``'resume'``).
    screen : bool
        After EM, record restarts whose fit is degenerate (`GaussianParams.degenerate`) as
        NA with the reason, so that no cell and no selection is made of them.
    strategy : {'exact', 'sample'}
        'sample': multi-resolution EM. Every candidate is initialised and fitted to
        convergence on a uniform sample of rows in memory (one pass draws it), restarts that
        clearly trail their cell's best there are stopped (with ``screen_cells``, whole cells
        too), and the others continue on all rows under the same convergence test. Data less
        than twice the sample runs 'exact'.
    sample_size : int or None
        Rows of that sample (and of the sample Dask input's 'kmeans' and 'k-means++' run on);
        None: `default_sample_size` of the candidates.
    """

    passes: DataPasses
    candidates: list[Candidate]
    init_params: str = "kmeans"
    tol: float = 1e-3
    max_iter: int = 100
    random_state: Any = None
    user: UserInit = field(default_factory=UserInit)
    x_mem: np.ndarray | None = None
    w_mem: np.ndarray | None = None
    retry: Retry | None = None
    checkpoint: Path | None = None
    key: dict = field(default_factory=dict)
    progress: Callable[[str], None] | None = None
    screen: bool = False  # mark spurious maxima (`GaussianParams.degenerate`) as NA
    strategy: str = "exact"
    sample_size: int | None = None
    prior: PriorSpec | None = None  # a variational mixture's priors
    screen_cells: str | None = None  # stop cells trailing by this criterion on the sample
    weight_threshold: float | None = None  # a variational fit's used components (screening)
    resumed_from: int | None = None  # passes of the checkpoint resumed, if any
    # EM of each candidate as its own task on the cluster's workers (`run_em_on_workers`):
    # for in-memory rows (``x_mem``), with no checkpoint or progress per pass
    spread: bool = False
    # per candidate (by ``id``), the `judged_rows` its spread EM computed of its final fit
    judged_rows: dict[int, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.passes.sampling is None:
            cells = sorted({c.cell for c in self.candidates})
            self.passes.sampling = plan_sample(
                self.passes, cells, self.sample_size, self.random_state
            )

    @property
    def multi_resolution(self) -> bool:
        """Whether EM starts on the sample (`starts_on_sample`)."""
        return starts_on_sample(self.strategy, self.passes.sampling, self.passes.blocks.x.shape[0])

    def run(self, score: bool = True) -> list[Candidate]:
        """Initialise (or resume), run EM with retries, then score every fitted restart.

        Candidates that come with a state (a warm start) are not initialised.
        """
        if not self._resume():
            fresh = [c for c in self.candidates if c.state is None]
            if fresh and self.multi_resolution:
                self._start_on_sample(fresh)
            elif fresh:
                self._initialise(fresh)
        self._em()
        while self._retry():
            self._em()
        if self.screen:
            n = self.passes.blocks.x.shape[0]
            for c in self.candidates:  # a start that ran no EM (max_iter=0) is kept as is
                if c.error is None and c.state is not None and c.state.n_iter:
                    reg = c.state.reg_covar
                    c.degenerate = c.state.params.degenerate(n, reg, self.passes.columns)
        if score:
            self._score()
        return self.candidates

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
        why = _key_difference(header.get("key"), self.key)
        if why is None and len(header["candidates"]) != len(self.candidates):
            why = "it holds other candidates"
        if why is None:
            try:
                n_passes = load_checkpoint(header, arrays, self.candidates, self.checkpoint)
            except Exception as e:  # what the digest vouched for does not fit these candidates
                for c in self.candidates:
                    c.start = c.state = c.init_error = None
                    c.retries = 0
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
            c.start = c.state = c.init_error = None
            c.retries = 0
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
            rng = check_random_state(self.random_state)
            wanted = {c.restart: c for c in members}
            for r in range(max(wanted) + 1):
                c = wanted.get(r)
                reg = c.reg_covar if c is not None else members[0].reg_covar
                strategy = get_covariance_type(cov)
                requests.append(
                    InitRequest(
                        strategy, k, self.init_params, self.user, reg, rng=rng, prior=self.prior
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
        """Fit ``cands`` on the sample in memory, stop the restarts that clearly trail their
        cell's best there, and start the others on all rows from their sample fit."""
        sample = self.passes.sample()
        data = load_input(sample.x, sample.w, "the sample")
        sub = Sweep(
            DataPasses.over(data),
            [Candidate(c.covariance_type, c.n_components, c.restart, c.reg_covar) for c in cands],
            init_params=self.init_params,
            tol=self.tol,
            max_iter=self.max_iter,
            random_state=self.random_state,
            user=self.user,
            x_mem=data.x_mem,
            w_mem=data.w_mem,
            retry=self.retry,
            prior=self.prior,
            spread=self.passes.blocks.scheduler is None,  # where the passes use the cluster
        )
        started = time.perf_counter()
        sub.run(score=False)
        scores = SampleScores(data.x_mem, data.w_mem)
        for s in sub.candidates:
            scores.take(s, sub.judged_rows.get(id(s), {}))
        trailing = trailing_restarts(sub.candidates, scores, self.tol)
        estimated: dict[int, dict] = {}
        cells: dict[int, str] = {}  # restarts stopped with their cell
        if self.screen_cells is not None:
            n = self.passes.blocks.x.shape[0]
            cells, estimated = trailing_cells(
                sub.candidates, scores, n, self.screen_cells, set(trailing), self.weight_threshold
            )
            trailing |= cells
        logger.info(
            "EM on a sample of %d rows: %d pass(es) in memory, %.1f s; %d restart(s) stopped",
            data.x.shape[0],
            sub.passes.n_passes,
            time.perf_counter() - started,
            len(trailing),
        )
        for c, s in zip(cands, sub.candidates, strict=True):
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
        self._checkpoint()

    def _em(self) -> None:
        live = [c for c in self.candidates if c.state is not None]
        if self.spread:
            pending = [
                c
                for c in live
                if not (c.state.converged or c.state.failed) and c.state.n_iter < self.max_iter
            ]
            done = run_em_on_workers(
                self.passes,
                self.x_mem,
                self.w_mem,
                [c.state for c in pending],
                tol=self.full_data_tol,
                max_iter=self.max_iter,
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
            max_iter=self.max_iter,
            callback=on_pass,
        )

    @property
    def full_data_tol(self) -> float:
        """``tol`` on all rows. A variational bound is a total, so after EM on the sample its
        tolerance grows with the rows (N / sample size): the same test per row."""
        if self.prior is None or not self.multi_resolution:
            return self.tol
        return self.tol * self.passes.blocks.x.shape[0] / self.passes.sampling.size

    def _retry(self) -> bool:
        """Restart failed candidates with reg_covar × factor while it stays within the cap."""
        r = self.retry
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
        scored = [c for c in self.candidates if c.error is None and c.state is not None]
        # a variational fit is scored as its posterior-mean mixture (weights_, means_, ...)
        jobs = [
            StatsJob(
                ScoringPosterior(
                    gaussian_view(c.state.params).shifted(self.passes.shift, self.passes.dtype)
                ),
                c.state.params.strategy,
            )
            for c in scored
        ]
        stats = self.passes.statistics(jobs, "dgmm-score") if jobs else []
        for c, st in zip(scored, stats, strict=True):
            c.log_likelihood, c.entropy = float(st.loglik), float(st.entropy)


# A cell whose fit on the sample stopped unconverged (at ``max_iter``) is given, per row, this
# many times its last iteration's gain as room to improve. Cells are judged only once EM on the
# sample has ended: a fit's criterion part-way is no bound on its end (a fit from a random start
# can gain little per iteration for tens of iterations, then overtake).
UNCONVERGED_ROOM = 10.0
# A restart is stopped after EM on the sample when its rows' share of the bound there (the
# log-likelihood, or a variational fit's evidence) trails its cell's best by more than this
# many standard errors of the per-row difference.
TRAILING_STANDARD_ERRORS = 3.0
# ... or when its per-row log-likelihoods are within this many ``tol`` of the best's (RMS)
DUPLICATE_TOL = 10.0


class SampleScores:
    """Per-row scores on the sample rows ``x`` (weights ``w``) of candidates' fits, each
    computed once, and paired comparisons of them."""

    def __init__(self, x: np.ndarray, w: np.ndarray | None):
        self.x = x
        weights = np.ones(x.shape[0]) if w is None else np.asarray(w, dtype=np.float64)
        self.total = float(weights.sum())  # what a variational bound's total is over
        self.weights = weights / self.total
        self.n_eff = 1.0 / float(np.sum(self.weights**2))  # the sample's effective rows
        self._cache: dict[tuple[int, str], np.ndarray] = {}

    def rows(self, c: Candidate, output: str = "score") -> np.ndarray:
        """``score`` (log-likelihood) or ``entropy`` of every sample row under ``c``'s fit
        (a variational fit's posterior-mean mixture), or ``evidence``: its share of the fit's
        own bound (`dgmm.em.evidence_rows`)."""
        key = self._key(c, output)
        if key not in self._cache:
            self._cache[key] = judged_rows(c.state.params, self.x, key[1])
        return self._cache[key]

    def take(self, c: Candidate, values: dict[str, np.ndarray]) -> None:
        """Rows of ``c``'s final fit computed elsewhere (`judged_rows` of the same rows)."""
        for output, v in values.items():
            self._cache[self._key(c, output)] = v

    @staticmethod
    def _key(c: Candidate, output: str) -> tuple[int, str]:
        if output == "evidence" and isinstance(c.state.params, GaussianParams):
            output = "score"  # the same rows
        return id(c), output

    def mean(self, values: np.ndarray) -> float:
        return float(self.weights @ values)

    def paired(self, diff: np.ndarray) -> tuple[float, float]:
        """Weighted mean of per-row differences and its standard error."""
        mean = self.mean(diff)
        return mean, float(np.sqrt(self.weights @ (diff - mean) ** 2 / self.n_eff))


def trailing_restarts(cands: list[Candidate], scores: SampleScores, tol: float) -> dict[int, str]:
    """Restarts (by ``id``) not worth continuing after EM on the sample, with why.

    A restart trails when its rows' mean share of the bound (`dgmm.em.evidence_rows`) is below its
    cell's best restart's by more than `TRAILING_STANDARD_ERRORS` standard errors of the
    (weighted) mean of the per-row differences, so it would very likely trail on all rows
    too. It repeats the best when those per-row shares differ by less than ``DUPLICATE_TOL ×
    tol`` (RMS): the same fit, which on all rows would reach the same fixed point.

    For a Gaussian mixture the share is the row's log-likelihood and the bound their mean. A
    variational bound also holds terms that are no sum over rows (the posterior's divergence
    from the prior) and is a total, so ``tol`` is divided by the sample's weight total; the best
    restart (the largest bound, as scikit-learn picks) has the larger bound there already, and
    on all rows its lead in the rows' terms grows with the rows while the other terms grow
    with their logarithm.
    """
    cells: dict[tuple[str, int], list[Candidate]] = {}
    for c in cands:
        fitted = c.error is None and c.state is not None and c.state.n_iter
        if fitted:
            cells.setdefault(c.cell, []).append(c)
    out = {}
    for group in cells.values():
        if len(group) < 2:
            continue
        best = best_restart(group)
        per_row, rows, trails = tol, "log-likelihoods", "log-likelihood trails"
        if isinstance(best.state.params, VariationalParams):
            per_row = tol / scores.total
            rows, trails = "bound terms", "bound's terms over rows trail"
        for c in group:
            if c is best:
                continue
            diff = scores.rows(best, "evidence") - scores.rows(c, "evidence")
            mean, se = scores.paired(diff)
            rms = float(np.sqrt(scores.mean(diff**2)))
            logger.debug(
                "%s K=%d restart %d against restart %d on the sample: bound %.6g against %.6g, "
                "rows' terms %.3g per row lower (standard error %.3g, RMS %.3g)",
                c.covariance_type,
                c.n_components,
                c.restart,
                best.restart,
                c.state.lower_bound,
                best.state.lower_bound,
                mean,
                se,
                rms,
            )
            if rms < DUPLICATE_TOL * per_row:
                out[id(c)] = (
                    f"on the sample it is the same fit as restart {best.restart} (per-row "
                    f"{rows} within {rms:.2g})"
                )
            elif mean > TRAILING_STANDARD_ERRORS * se:
                out[id(c)] = (
                    f"on the sample its {trails} restart {best.restart}'s by "
                    f"{mean:.3g} per row ({mean / se if se else np.inf:.0f} standard errors)"
                )
    return out


def trailing_cells(
    cands: list[Candidate],
    scores: SampleScores,
    n_rows: int,
    criterion: str,
    stopped: set[int],
    weight_threshold: float | None = None,
) -> tuple[dict[int, str], dict[int, dict]]:
    """Candidates (by ``id``) of cells whose criterion on all ``n_rows`` rows, estimated from
    EM on the sample, clearly trails the best cell's, with why.

    Each cell's best restart gives per-row scores on the sample (log-likelihood, plus the
    classification entropy for ICL); the full-data criterion is estimated as
    ``−2·N·mean + penalty``. A cell is stopped when its excess over the best cell's exceeds
    `TRAILING_STANDARD_ERRORS` standard errors of the paired per-row differences, both as
    estimated and after the first-order correction for fitting on the sample (a model of p
    parameters fitted on m rows looks better there by about p/(2m) per row than it will be
    on all rows, and all rows' own fit gains p/(2N) back). Restarts already in ``stopped``
    are left out. A fit that ended unconverged is first given `unconverged_room`. A
    variational fit is judged as `select` will judge it: its posterior-mean mixture with the
    parameters of its components of weight above ``weight_threshold``. Also
    returns, for the best restart of each stopped cell, its BIC, AIC and ICL as estimated
    (with the correction), and for a variational fit its effective components and weights on
    the sample.
    """
    cells: dict[tuple[str, int], list[Candidate]] = {}
    for c in cands:
        fitted = c.error is None and c.state is not None and c.state.n_iter
        if fitted and id(c) not in stopped:
            cells.setdefault(c.cell, []).append(c)
    if len(cells) < 2:
        return {}, {}
    m = scores.n_eff
    scale = {"bic": np.log(n_rows), "aic": 2.0, "icl": np.log(n_rows)}[criterion]
    best_of = {cell: best_restart(group) for cell, group in cells.items()}
    per_row, raw, fix, estimates = {}, {}, {}, {}
    for cell, c in best_of.items():
        p = c.state.params.n_parameters()
        fit = {}
        if isinstance(c.state.params, VariationalParams):
            used = effective_components(c.state.params, weight_threshold or 0.0)
            p = n_parameters(c.covariance_type, used, c.state.params.n_features)
            # what the report shows of a variational type stopped here: its fit on the sample
            fit = {"effective_components": used, "weights": c.state.params.weights.tolist()}
        ll, ent = scores.rows(c), scores.rows(c, "entropy")
        per_row[cell] = ll + ent if criterion == "icl" else ll
        raw[cell] = -2.0 * n_rows * scores.mean(per_row[cell]) + scale * p
        fix[cell] = raw[cell] + n_rows * p * (1.0 / m - 1.0 / n_rows)
        total = n_rows * (scores.mean(ll) - p / (2 * m) + p / (2 * n_rows))
        estimates[cell] = {
            **information_criteria(total, p, n_rows, n_rows * scores.mean(ent)),
            **fit,
        }
    top = min(fix, key=fix.get)
    out, estimated = {}, {}
    for cell in best_of:
        if cell == top:
            continue
        _, se_row = scores.paired(per_row[top] - per_row[cell])
        se = 2.0 * n_rows * se_row
        excess = min(raw[cell] - raw[top], fix[cell] - fix[top])
        excess -= 2.0 * n_rows * max(unconverged_room(r, scores.total) for r in cells[cell])
        if excess > TRAILING_STANDARD_ERRORS * se:
            why = (
                f"on the sample its estimated {criterion.upper()} trails "
                f"{top[0]},{top[1]}'s by {excess:.4g} "
                f"({excess / se if se else np.inf:.0f} standard errors)"
            )
            out.update({id(r): why for r in cells[cell]})
            estimated[id(best_of[cell])] = estimates[cell]
    return out, estimated


def unconverged_room(c: Candidate, m: float) -> float:
    """What a fit that ended unconverged on the sample (of ``m`` rows, or total weight) might
    yet gain per row on all rows: its last iteration's gain `UNCONVERGED_ROOM` times over
    (EM's gains usually shrink); unbounded before it has made a gain to measure."""
    s = c.state
    if s.converged:
        return 0.0
    if len(s.lower_bounds) < 2:
        return np.inf
    gain = max(0.0, s.lower_bounds[-1] - s.lower_bounds[-2])
    return UNCONVERGED_ROOM * (gain / m if isinstance(s.params, VariationalParams) else gain)


def effective_components(params: GaussianParams | VariationalParams, threshold: float) -> int:
    """Components whose weight exceeds ``threshold``."""
    return int(np.sum(params.weights > threshold))


def best_restart(restarts: Iterable[Candidate]) -> Candidate | None:
    """scikit-learn's choice among the restarts that fitted: the first strictly largest final
    lower bound, or the last one while every bound is still −inf (``max_iter=0``)."""
    best, best_lb = None, -np.inf
    for c in restarts:
        if c.error is None and (c.state.lower_bound > best_lb or best_lb == -np.inf):
            best, best_lb = c, c.state.lower_bound
    return best


# ------------------------------------------------------------------------ the public API
@dataclass
class SelectionResult:
    """What `select` found: every restart of every cell, scored, and the chosen model.

    Attributes
    ----------
    results : list of dict
        One row per restart (cell by cell, in the order asked): ``n_components``,
        ``covariance_type``, ``restart``, ``log_likelihood`` (total, of the final parameters),
        ``n_parameters``, ``bic``, ``aic``, ``icl``, ``n_iter``, ``converged``, ``reg_covar``,
        ``retries``, ``best_in_cell`` (the restart `GaussianMixture` would keep), ``status``
        (one of `STATUSES`: converged, not converged, failed, degenerate, stopped, cell
        stopped), ``error`` (None, or why the restart failed or was stopped, for people; its
        scores are then None),
        ``sample_iter`` (EM iterations on the sample, ``strategy='sample'``) and
        ``estimate`` (a cell stopped after the sample: its BIC, AIC and ICL estimated there;
        a variational one's also its ``effective_components`` and ``weights`` there).
        Variational rows add ``lower_bound``, ``effective_components`` and ``weights``.
    criterion : str
    best_params_ : dict
        ``n_components`` and ``covariance_type`` of the selected cell; a variational
        selection adds ``effective_components``, the components whose weight exceeds
        ``weight_threshold`` (the K it chose).
    best_estimator_ : GaussianMixture
        The selected cell's best restart, fitted.
    n_passes_ : int
        Passes over the data the selection made (profile, initialisation, EM, scoring).
    resumed_from : int or None
        Passes of the checkpoint it resumed from, if it did.
    sample : RowSample or None
        The uniform sample of rows the selection drew (every row kept with the same
        probability; `RowSample.x` holds them in row order): for 'kmeans' or 'k-means++' init
        on Dask or Zarr input, or ``strategy='sample'``. None when it drew none.
    """

    results: list[dict]
    criterion: str
    best_params_: dict
    best_estimator_: Any
    n_passes_: int
    resumed_from: int | None = None
    profile: ColumnProfile | None = None
    candidates: list[Candidate] = field(default_factory=list, repr=False)
    settings: dict = field(default_factory=dict, repr=False)
    feature_names: tuple[str, ...] | None = field(default=None, repr=False)
    sample: RowSample | None = field(default=None, repr=False)

    def estimator(self, n_components: int, covariance_type: str):
        """The fitted `GaussianMixture` of a cell's best restart (what that estimator fits).

        Raises
        ------
        ValueError
            If the cell was not in the sweep or every restart of it failed.
        """
        from .bayesian import BayesianGaussianMixture
        from .estimator import GaussianMixture, from_candidate

        group = [c for c in self.candidates if c.cell == (covariance_type, n_components)]
        if not group:
            raise ValueError(f"no cell ({covariance_type!r}, K={n_components}) in this selection")
        best = best_restart(group)
        if best is None:
            raise ValueError(
                f"every restart of ({covariance_type!r}, K={n_components}) failed: {group[0].error}"
            )
        settings = {**self.settings, "reg_covar": best.state.reg_covar}
        prior = settings.pop("prior", None)
        cls = GaussianMixture if prior is None else BayesianGaussianMixture
        gm = cls(n_components, covariance_type=covariance_type, **settings, **(prior or {}))
        n_features = best.state.params.n_features
        return from_candidate(best, gm, n_features, self.n_passes_, self.feature_names)

    def cells(self) -> list[dict]:
        """The best restart of every cell (the mclust table's entries), NA rows included (a cell
        stopped after EM on the sample by the restart that holds its estimated criteria)."""
        out: dict[tuple[str, int], dict] = {}
        for row in self.results:
            key = (row["covariance_type"], row["n_components"])
            held = out.get(key)
            if (
                held is None
                or row["best_in_cell"]
                or (not held["best_in_cell"] and row["estimate"] and not held["estimate"])
            ):
                out[key] = row
        return list(out.values())

    def __repr__(self) -> str:
        """One line: the choice, its criterion and the size of the table (`to_pandas`)."""
        cells = self.cells()
        failed = sum(r["error"] is not None for r in cells)
        chosen = ", ".join(f"{k}={v!r}" for k, v in self.best_params_.items())
        value = next(
            (
                r[self.criterion]
                for r in cells
                if r["error"] is None
                and r["n_components"] == self.best_params_["n_components"]
                and r["covariance_type"] == self.best_params_["covariance_type"]
            ),
            None,
        )
        shown = "" if value is None else f" {self.criterion}={value:.6g};"
        return (
            f"SelectionResult(best: {chosen};{shown} {len(cells)} cell(s), {failed} NA, "
            f"{len(self.results)} restart(s); the table: .to_pandas())"
        )

    def to_pandas(self):
        """The results as a pandas DataFrame (pandas is optional)."""
        import pandas as pd

        return pd.DataFrame(self.results)


def _rows(
    cands: list[Candidate], n_features: int, n: int, weight_threshold: float | None = None
) -> list[dict]:
    """One row per restart; criteria use the number of rows ``n`` (as scikit-learn's do).

    A variational fit (``weight_threshold`` given) is scored as its posterior-mean mixture
    with its effective components (weight above the threshold) counted as parameters; its rows
    add ``lower_bound``, ``effective_components`` and the ``weights``.
    """
    cells: dict[tuple[str, int], list[Candidate]] = {}
    for c in cands:
        cells.setdefault(c.cell, []).append(c)
    best = {cell: best_restart(group) for cell, group in cells.items()}
    rows = []
    for c in cands:
        ok = c.error is None and c.log_likelihood is not None
        k = c.n_components
        extra = {}
        if weight_threshold is not None:
            fitted = c.state is not None and c.error is None
            k = effective_components(c.state.params, weight_threshold) if fitted else k
            extra = {
                "lower_bound": c.state.lower_bound if fitted else None,
                "effective_components": k if fitted else None,
                "weights": [float(v) for v in c.state.params.weights] if fitted else None,
            }
        p = n_parameters(c.covariance_type, k, n_features)
        crit = (
            information_criteria(c.log_likelihood, p, n, c.entropy)
            if ok
            else dict.fromkeys(CRITERIA)
        )
        rows.append(
            {
                "n_components": c.n_components,
                "covariance_type": c.covariance_type,
                "restart": c.restart,
                "log_likelihood": c.log_likelihood if ok else None,
                "n_parameters": p,
                **crit,
                "n_iter": c.state.n_iter if c.state else None,
                "sample_iter": c.sample_iter,
                "converged": c.state.converged if c.state and ok else None,
                "reg_covar": c.state.reg_covar if c.state else c.reg_covar,
                "retries": c.retries,
                "best_in_cell": best[c.cell] is c,
                "status": c.status,
                "error": c.error,
                "estimate": c.estimate,
                **extra,
            }
        )
    return rows


def _failures(rows: list[dict]) -> str:
    """Why every candidate failed, in one line: each kind of failure counted, with the first
    restart's reason as its example."""
    kinds: dict[str, list[dict]] = {}
    for r in rows:
        if r["error"]:
            kinds.setdefault(r["status"], []).append(r)
    parts = []
    for kind, group in sorted(kinds.items(), key=lambda item: -len(item[1])):
        r = group[0]
        parts.append(
            f"{len(group)} {kind} (e.g. {r['covariance_type']} K={r['n_components']}, restart "
            f"{r['restart']}: {r['error']})"
        )
    failed = sum(len(g) for g in kinds.values())
    return f"every candidate failed ({failed} of {len(rows)} restarts): {'; '.join(parts)}"


def _check_grid(
    n_components: int | Sequence[int], covariance_types: str | Sequence[str], criterion: str
) -> tuple[list[int], list[str]]:
    ks = [n_components] if isinstance(n_components, (int, np.integer)) else list(n_components)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in ks):
        raise ValueError(f"n_components must be a whole number or a sequence of them; got {ks!r}")
    if min(ks) < 1:
        raise ValueError(f"every n_components must be >= 1; got {min(ks)}")
    types = [covariance_types] if isinstance(covariance_types, str) else list(covariance_types)
    if not types:
        raise ValueError("covariance_types is empty; give at least one")
    for t in types:
        get_covariance_type(t)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}; got {criterion!r}")
    return [int(k) for k in dict.fromkeys(ks)], list(dict.fromkeys(types))


def profile(X: Any, name: str = "X") -> ColumnProfile:
    """One pass over the data: rows with NaN/inf, column ranges, means and standard deviations,
    and a digest of the bytes (`ColumnProfile`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features), Dask array, Zarr array, DataFrame or path
    name : str, default='X'
        What error messages call the data.

    Returns
    -------
    ColumnProfile
        ``mean`` and ``std`` standardise the data; `select` takes it as ``profile=`` and then
        makes no profile pass of its own.
    """
    return DataPasses.over(load_input(X, None, name)).profile()


def select(
    X: Any,
    n_components: int | Sequence[int] = range(1, 11),
    covariance_types: str | Sequence[str] = ("full",),
    *,
    criterion: str = "bic",
    n_init: int = 1,
    init_params: str = "kmeans",
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    random_state: int | None = None,
    sample_weight: Any = None,
    retry: Retry | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_key: dict | None = None,
    progress: ProgressFn | None = None,
    profile: ColumnProfile | None = None,
    screen_degenerate: bool = True,
    strategy: str = "exact",
    sample_size: int | None = None,
    method: str = "sweep",
    prior: dict | None = None,
    weight_threshold: float = 0.01,
    screen_cells: bool = True,
    name: str = "X",
) -> SelectionResult:
    """Fit every K × covariance type × restart in lockstep and choose by an information criterion.

    Every pass over the data serves every candidate still running, so a sweep reads the data
    about as often as its slowest candidate's fit. Each cell's restarts are drawn from
    ``random_state`` exactly as ``GaussianMixture(K, covariance_type=..., n_init=...,
    random_state=...)`` draws them, so the selected model is bitwise the one that estimator fits.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features), Dask array, Zarr array, DataFrame or path
        As for `GaussianMixture.fit`: the fitted estimators of a DataFrame, Parquet or CSV
        table have its column names in ``feature_names_in_``.
    n_components : int or sequence of int, default=range(1, 11)
    covariance_types : str or sequence of {'full', 'tied', 'diag', 'spherical'}
    criterion : {'bic', 'aic', 'icl'}, default='bic'
        Lower is better. ICL is BIC minus twice the classification entropy (mclust).
    n_init, init_params, tol, reg_covar, max_iter, random_state
        As in `GaussianMixture`, for every cell.
    sample_weight : array-like of shape (n_samples,), default=None
    retry : Retry or None
        Refit failed restarts with a larger ``reg_covar``; None records them as NA.
    checkpoint : path, default=None
        Save the state after every pass; a rerun with the same settings on the same data
        resumes from it. The data is profiled first (one pass: NaN/inf, constant columns and a
        digest of its bytes) so that a checkpoint of other data is never resumed.
    checkpoint_key : dict, default=None
        More that a resumed checkpoint must match (e.g. a configuration's hash).
    progress : callable, default=None
        ``progress(report)`` with a `PassReport` after every pass over the data (an EM pass
        after its M-step), and once when a checkpoint is resumed.
    profile : ColumnProfile, default=None
        The data's `profile`, if already taken: it stands for the profile pass (counted as
        pass 1) and binds a checkpoint by its digest. For data transformed after profiling,
        pass ``profile.affine(center, scale)``, which keeps the raw rows' digest.
    screen_degenerate : bool, default=True
        Record restarts whose fit is a spurious maximum as NA (``error`` starts with
        ``degenerate:``, see `GaussianParams.degenerate`), so no cell or selection is made of
        them. False keeps every fit as scikit-learn's loop would.
    strategy : {'exact', 'sample'}, default='exact'
        'exact' runs every restart's EM on all rows, as `GaussianMixture` does. 'sample'
        (multi-resolution EM) draws a uniform sample of rows in one pass, initialises and fits
        every candidate to convergence on it in memory, stops restarts whose log-likelihood
        there clearly trails their cell's best (3 standard errors of the per-row difference;
        ``error`` says so), and continues the others on all rows from their sample fit under
        the same convergence test, so the fixed point is the full-data EM's. Full-data passes
        then number a few instead of tens. Data less than twice the sample runs 'exact'.
    sample_size : int, default=None
        Rows of that sample, which Dask input's 'kmeans' and 'k-means++' initialisations also
        run scikit-learn on; None: 20 per free parameter of the largest candidate, within
        10 000 and 100 000 rows (and 256 MiB).
    screen_cells : bool, default=True
        With ``strategy='sample'``, also stop whole cells whose criterion on all rows,
        estimated from their fit on the sample, trails the best cell's by more than 3 standard
        errors (with and without the correction for fitting on the sample): their rows say why
        and carry no scores. With ``method='variational'`` the cells are the covariance types,
        each judged by its effective mixture. False keeps every cell to the end (the whole
        table).
    method : {'sweep', 'variational'}, default='sweep'
        'sweep' fits every K × covariance type by EM. 'variational' fits one
        `BayesianGaussianMixture` per covariance type at the largest K (``n_init`` restarts,
        the best by lower bound); components the data do not need keep weights near 0. Types
        are then compared by ``criterion`` on each fit's posterior-mean mixture, counting the
        parameters of its effective components (weight above ``weight_threshold``): a
        variational bound drops constants that differ between covariance types, so bounds
        are compared within a type only. ``tol`` is then on the bound, a total (scikit-learn's
        convention: a variational fit prunes unneeded components while its bound barely
        changes, so a tolerance per row would stop it before they drain). With
        ``strategy='sample'`` and ``screen_cells``, types whose criterion trails clearly on
        the sample stop there, as cells of the sweep do.
    prior : dict, default=None
        `BayesianGaussianMixture` prior settings for 'variational' (``weight_concentration_
        prior_type``, ``weight_concentration_prior``, ``mean_precision_prior``,
        ``mean_prior``, ``degrees_of_freedom_prior``, ``covariance_prior``).
    weight_threshold : float, default=0.01
        The weight above which a variational fit's component counts as used.
    name : str, default='X'
        What error messages call the data.

    Returns
    -------
    SelectionResult

    Raises
    ------
    DataError
        Rows with NaN/inf, identical rows or constant columns, named (by column name where
        the data has them). Constant columns are found before any fit for in-memory input,
        and for Dask or Zarr input by the pass that draws the sample or profiles the data
        (a checkpoint, ``strategy='sample'``, 'kmeans' or 'k-means++' init); otherwise, when
        every candidate fails as degenerate, one more pass names them.
    ValueError
        Bad parameters or data, or when every candidate failed: each kind of failure
        counted, with an example (a degenerate fit names the columns along which a
        component's covariance is singular, and what to do).

    Examples
    --------
    >>> import numpy as np
    >>> from dgmm import select
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (200, 2)), rng.normal(8, 1, (200, 2))])
    >>> found = select(X, n_components=range(1, 4), covariance_types=["full", "diag"],
    ...                random_state=0)
    >>> found.best_params_
    {'n_components': 2, 'covariance_type': 'diag'}
    """
    from .estimator import check_estimator_params

    ks, types = _check_grid(n_components, covariance_types, criterion)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}")
    variational = method == "variational"
    if variational:
        ks = [max(ks)]  # one fit per type at the largest K chooses its own components
    if not (0.0 <= weight_threshold < 1.0):
        raise ValueError(f"weight_threshold must be in [0, 1); got {weight_threshold!r}")
    check_estimator_params(
        n_init=n_init,
        init_params=init_params,
        tol=tol,
        reg_covar=reg_covar,
        max_iter=max_iter,
        strategy=strategy,
        sample_size=sample_size,
    )
    if checkpoint is not None:
        checkpoint = absolute_path(checkpoint, "checkpoint")
        if os.path.lexists(checkpoint) and not is_own(checkpoint, CHECKPOINT_KIND):
            raise NotOwnFile(
                f"checkpoint '{checkpoint}' exists and is not a dgmm checkpoint; it is never "
                "overwritten: give another checkpoint path, or remove it yourself"
            )
    data = load_input(X, sample_weight, name)
    n_samples, n_features = data.x.shape
    check_n_components(max(ks), n_samples)
    spec = None
    if variational:
        unknown = sorted(set(prior or {}) - set(PRIOR_SETTINGS))
        if unknown:
            raise ValueError(f"unknown prior setting(s) {unknown}; known: {list(PRIOR_SETTINGS)}")
        for t in types:
            spec = check_prior_spec(PriorSpec(**(prior or {})), t, n_features)
    elif prior is not None:
        raise ValueError("prior is a setting of method='variational'")
    passes = DataPasses.over(data)
    passes.name, passes.columns = name, data.feature_names
    cands = [Candidate(cov, k, r, reg_covar) for cov in types for k in ks for r in range(n_init)]
    cells = [(cov, k) for cov in types for k in ks]
    passes.sampling = plan_sample(passes, cells, sample_size, random_state)
    size = passes.sampling.size
    reporter = None
    if progress is not None:
        reporter = _Reporter(
            progress, passes, criterion, n_samples, max_iter, variational, screen_degenerate
        )
        reporter.candidates = cands
    key = {}
    if profile is not None:
        if profile.n != n_samples or profile.lo.shape != (n_features,):
            raise ValueError(
                f"profile: it describes {profile.n} rows × {profile.lo.size} features, not the "
                f"{n_samples} × {n_features} of {name}"
            )
        passes.use_profile(profile)
        passes.resume(1)  # the given profile stands for the profile pass
    else:
        # the sample pass profiles too: where the run draws a sample, it is the profile pass
        # (and it is drawn first, so constant columns are named before any fit)
        wants_sample = starts_on_sample(strategy, passes.sampling, n_samples) or (
            data.x_mem is None and init_params in ("kmeans", "k-means++")
        )
        if wants_sample:
            passes.sample()
            profile = passes.sample_profile
        elif checkpoint is not None:
            profile = passes.profile()
    if profile is not None:
        check_profile(profile, data.x.dtype, name, data.feature_names)
    elif data.x_mem is not None:  # in memory: the columns' ranges cost no pass
        lo, hi = data.x_mem.min(axis=0), data.x_mem.max(axis=0)
        check_constant_columns(lo, hi, n_samples, name, data.feature_names)
    if checkpoint is not None:
        key = {
            "settings": [ks, types, n_init, init_params, tol, reg_covar, max_iter, random_state],
            "strategy": [strategy, size, screen_cells],
            "method": [method, weight_threshold, _jsonable_prior(prior)],
            "retry": None if retry is None else [retry.factor, retry.max_reg_covar],
            "shape": list(data.x.shape),
            "dtype": str(data.x.dtype),
            "row_chunks": [int(c) for c in data.x.chunks[0]],
            "digest": f"{profile.digest:032x}",
            # named columns: the same bytes under other names are other data
            **({"columns": list(data.feature_names)} if data.feature_names else {}),
            **(checkpoint_key or {}),
        }
    sweep = Sweep(
        passes,
        cands,
        init_params=init_params,
        tol=tol,
        max_iter=max_iter,
        random_state=random_state,
        x_mem=data.x_mem,
        w_mem=data.w_mem,
        retry=retry,
        checkpoint=checkpoint,
        key=key,
        progress=reporter,
        screen=screen_degenerate,
        strategy=strategy,
        sample_size=size,
        prior=spec,
        screen_cells=criterion if screen_cells else None,
        weight_threshold=weight_threshold if variational else None,
    )
    sweep.run()
    rows = _rows(cands, n_features, n_samples, weight_threshold if variational else None)
    ok = [r for r in rows if r["best_in_cell"] and r["error"] is None]
    if not ok:
        if profile is None and data.x_mem is None and any(c.degenerate for c in cands):
            # constant columns make every cell degenerate: one more pass names them
            check_profile(passes.profile(), data.x.dtype, name, data.feature_names)
        raise ValueError(_failures(rows))
    chosen = min(ok, key=lambda r: r[criterion])
    result = SelectionResult(
        rows,
        criterion,
        {"n_components": chosen["n_components"], "covariance_type": chosen["covariance_type"]},
        None,
        passes.n_passes,
        sweep.resumed_from,
        profile,
        cands,
        {
            "tol": tol,
            "max_iter": max_iter,
            "n_init": n_init,
            "init_params": init_params,
            "random_state": random_state,
            "strategy": strategy,
            "sample_size": sample_size,
            "prior": dict(prior or {}) if variational else None,
        },
        data.feature_names,
        passes.drawn_sample,
    )
    result.best_estimator_ = best = result.estimator(
        chosen["n_components"], chosen["covariance_type"]
    )
    if variational:  # the components the choice really uses (weight above the threshold)
        result.best_params_["effective_components"] = chosen["effective_components"]
    if not best.converged_ and max_iter > 0:
        warnings.warn(
            f"The selected fit ({chosen['covariance_type']}, K={chosen['n_components']}) did "
            f"not converge in max_iter={max_iter} iterations; its {criterion.upper()} may "
            "still change. Increase max_iter or tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return result
