"""The lockstep sweep: every K × covariance type × restart advances together, sharing each pass.

A candidate that fails is recorded with its reason (and optionally retried with a larger
``reg_covar``) without stopping the others. State is checkpointed after every pass so that a
killed run resumes where it stopped and ends with bitwise the same result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from dgmm._reduce import RowBlocks
from dgmm.covariance import get_covariance_type
from dgmm.em import DataPasses, EMState, run_em
from dgmm.estep import Posterior, StatsJob
from dgmm.init import InitRequest, initial_parameters
from dgmm.io import InputData
from dgmm.params import GaussianParams, n_parameters

from .schema import ModelConfig

logger = logging.getLogger(__name__)

# A failed candidate fitted without regularisation is retried first with scikit-learn's default.
RETRY_FIRST_REG = 1e-6


@dataclass
class Candidate:
    """One restart of one (K, covariance type) cell, with its EM state and bookkeeping."""

    covariance_type: str
    n_components: int
    restart: int
    reg_covar: float = 0.0
    start: GaussianParams | None = None
    state: EMState | None = None
    init_error: str | None = None
    retries: int = 0
    seconds: float = 0.0

    @property
    def error(self) -> str | None:
        return self.init_error or (self.state.error if self.state else None)


@dataclass
class CellResult:
    """The best restart of one (K, covariance type) cell, scored on the data."""

    n_components: int
    covariance_type: str
    restart: int | None
    log_likelihood: float | None
    bic: float | None
    aic: float | None
    n_parameters: int
    n_iter: int | None
    converged: bool | None
    reg_covar: float | None
    seconds: float
    error: str | None = None
    state: EMState | None = field(default=None, repr=False)

    def row(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "state"}


def build_candidates(model: ModelConfig) -> list[Candidate]:
    return [
        Candidate(cov, k, r, model.reg_covar)
        for cov in model.covariance_types
        for k in model.n_components
        for r in range(model.n_init)
    ]


def candidate_seed(random_state: int, c: Candidate) -> int:
    """A candidate's own init seed: independent of which other candidates are in the sweep."""
    key = f"{random_state}/{c.covariance_type}/{c.n_components}/{c.restart}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


# ----------------------------------------------------------------------------- checkpoints
_ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")


def save_checkpoint(
    path: Path,
    config_hash: str,
    cands: list[Candidate],
    n_passes: int,
    data_key: dict | None = None,
) -> None:
    """All candidates' state in one ``.npz`` written atomically (temp file + replace).

    ``data_key`` identifies the data (see `pipelines.data.fingerprint`): a checkpoint resumes
    only on the same config and the same data.
    """
    meta, arrays = [], {}
    for i, c in enumerate(cands):
        s = c.state
        meta.append(
            {
                "retries": c.retries,
                "reg_covar": c.reg_covar,
                "seconds": c.seconds,
                "init_error": c.init_error,
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
    header = {
        "config_hash": config_hash,
        "data": data_key,
        "n_passes": n_passes,
        "candidates": meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, header=np.array(json.dumps(header)), **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint_header(path: Path) -> dict:
    """The header of a checkpoint: config hash, data key, passes and candidate metadata."""
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(str(npz["header"]))


def load_checkpoint(path: Path, cands: list[Candidate]) -> tuple[str, int]:
    """Restore candidates in place from a checkpoint; returns (its config hash, passes so far)."""
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(str(npz["header"]))
        arrays = {k: npz[k] for k in npz.files}
    if len(header["candidates"]) != len(cands):
        return header["config_hash"], 0
    for i, (c, m) in enumerate(zip(cands, header["candidates"], strict=True)):
        c.retries, c.seconds, c.init_error = m["retries"], m["seconds"], m["init_error"]
        c.reg_covar = m["reg_covar"]

        def params(tag: str, c: Candidate = c, i: int = i) -> GaussianParams | None:
            if f"{tag}{i}_weights" not in arrays:
                return None
            return GaussianParams(c.covariance_type, *(arrays[f"{tag}{i}_{a}"] for a in _ARRAYS))

        c.start = params("start")
        s = m["state"]
        c.state = None if s is None else EMState(params("cur"), **s)
    return header["config_hash"], header["n_passes"]


# ---------------------------------------------------------------------------------- the run
ProgressFn = Callable[[list[Candidate], list[int]], None]


@dataclass
class SweepRun:
    """A sweep over one dataset; ``run`` returns one `CellResult` per (K, covariance type)."""

    model: ModelConfig
    data: InputData
    checkpoint: Path
    config_hash: str
    criterion: str = "bic"
    progress: ProgressFn | None = None
    candidates: list[Candidate] = field(default_factory=list)
    passes: DataPasses | None = None
    checked: bool = False  # the data was already checked for NaN/inf (no check in pass one)
    data_key: dict | None = None  # identifies the data; a checkpoint of other data is not used

    def run(self) -> list[CellResult]:
        self.candidates = build_candidates(self.model)
        self.passes = DataPasses(
            RowBlocks(self.data.x, self.data.w, self.data.scheduler),
            self.data.shift(),
            checked=self.checked,
        )
        self._t0 = time.perf_counter()
        resumed = self._resume()
        if not resumed:
            self._initialise()
        self._em()
        while self._retry():
            self._em()
        return self._score()

    # -- stages
    def _resume(self) -> bool:
        if not self.checkpoint.exists():
            return False
        why = self._stale_reason()
        n_passes = 0
        if why is None:
            _, n_passes = load_checkpoint(self.checkpoint, self.candidates)
            why = None if n_passes else "it holds no finished pass"
        if why is not None:
            logger.warning("not resuming from the checkpoint: %s; starting afresh", why)
            self.candidates = build_candidates(self.model)
            self.checkpoint.unlink()
            return False
        done = max((c.state.n_iter for c in self.candidates if c.state), default=0)
        logger.info("resuming from checkpoint after %d passes (iteration %d)", n_passes, done)
        self._t0 -= max((c.seconds for c in self.candidates), default=0.0)
        self.passes.checked = True
        self.passes.n_passes = n_passes
        return True

    def _stale_reason(self) -> str | None:
        """Why the checkpoint may not be resumed (other config or other data), or None."""
        try:
            header = read_checkpoint_header(self.checkpoint)
        except (OSError, ValueError, KeyError) as e:
            return f"it cannot be read ({type(e).__name__})"
        if header.get("config_hash") != self.config_hash:
            return f"the config changed (hash {header.get('config_hash')}, now {self.config_hash})"
        old = header.get("data")
        if self.data_key is not None and old != self.data_key:
            if old is None:
                return "it does not record which data it was made on"
            diff = [k for k in self.data_key if old.get(k) != self.data_key[k]]
            shown = ", ".join(f"{k} {old.get(k)} -> {self.data_key[k]}" for k in diff)
            return f"the data changed since it was written ({shown})"
        return None

    def _initialise(self, cands: list[Candidate] | None = None) -> None:
        """Starting parameters of the candidates (all by default), in one shared pass."""
        m = self.model
        cands = self.candidates if cands is None else cands
        requests = [
            InitRequest(
                get_covariance_type(c.covariance_type),
                c.n_components,
                m.init,
                reg_covar=c.reg_covar,
                seed=candidate_seed(m.random_state, c),
            )
            for c in cands
        ]
        rng = np.random.RandomState(m.random_state)
        starts = initial_parameters(self.passes, requests, rng, self.data.x_mem, self.data.w_mem)
        for c, p in zip(cands, starts, strict=True):
            if isinstance(p, Exception):
                c.init_error = f"initialisation failed: {p}"
            else:
                c.start, c.init_error = p, None
                c.state = EMState(p, c.reg_covar)
        self._checkpoint()

    def _em(self) -> None:
        live = [c for c in self.candidates if c.state is not None]

        seen = {id(c): (c.state.n_iter, c.state.error) for c in live}

        def on_pass(states: list[EMState], active: list[int]) -> None:
            # a candidate's seconds: wall time until its last pass (passes are shared)
            now = time.perf_counter() - self._t0
            for c in live:
                if (c.state.n_iter, c.state.error) != seen[id(c)]:
                    c.seconds, seen[id(c)] = now, (c.state.n_iter, c.state.error)
            self._checkpoint()
            if self.progress is not None:
                self.progress(live, active)

        run_em(
            self.passes,
            [c.state for c in live],
            tol=self.model.tol,
            max_iter=self.model.max_iter,
            callback=on_pass,
        )

    def _retry(self) -> bool:
        """Restart failed candidates with reg_covar × factor while it stays within the cap."""
        r = self.model.retry
        if r is None:
            return False
        again = []
        for c in self.candidates:
            if c.error is None:
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
            again.append(c)
        reinit = [c for c in again if c.start is None]
        for c in again:
            if c.start is not None:
                c.state = EMState(c.start, c.reg_covar)
        if reinit:
            self._initialise(reinit)  # same seeds, larger reg_covar
        elif again:
            self._checkpoint()
        return bool(again)

    def _checkpoint(self) -> None:
        save_checkpoint(
            self.checkpoint,
            self.config_hash,
            self.candidates,
            self.passes.n_passes,
            self.data_key,
        )

    # -- scoring and selection
    def _cells(self) -> dict[tuple[str, int], list[Candidate]]:
        cells: dict[tuple[str, int], list[Candidate]] = {}
        for c in self.candidates:
            cells.setdefault((c.covariance_type, c.n_components), []).append(c)
        return cells

    def _score(self) -> list[CellResult]:
        """Pick each cell's best restart (scikit-learn's rule) and score it in one shared pass."""
        best: dict[tuple[str, int], Candidate | None] = {}
        cells = self._cells()
        for key, group in cells.items():
            ok = [c for c in group if c.error is None]
            best[key] = max(ok, key=lambda c: c.state.lower_bound) if ok else None
        scored = [c for c in best.values() if c is not None]
        jobs = [
            StatsJob(
                Posterior(c.state.params.shifted(self.passes.shift, self.passes.dtype)),
                c.state.params.strategy,
            )
            for c in scored
        ]
        stats = self.passes.statistics(jobs, "dgmm-score") if jobs else []
        loglik = {id(c): st.loglik for c, st in zip(scored, stats, strict=True)}
        n = self.data.x.shape[0]
        out = []
        for (cov, k), c in best.items():
            p_count = n_parameters(cov, k, self.data.x.shape[1])
            if c is None:
                group = cells[(cov, k)]
                out.append(
                    CellResult(
                        k,
                        cov,
                        None,
                        None,
                        None,
                        None,
                        p_count,
                        None,
                        None,
                        None,
                        max(g.seconds for g in group),
                        group[0].error,
                    )
                )
                continue
            ll = loglik[id(c)]
            out.append(
                CellResult(
                    k,
                    cov,
                    c.restart,
                    ll,
                    -2 * ll + p_count * np.log(n),
                    -2 * ll + 2 * p_count,
                    p_count,
                    c.state.n_iter,
                    c.state.converged,
                    c.state.reg_covar,
                    c.seconds,
                    None,
                    c.state,
                )
            )
        return out


def select(cells: list[CellResult], criterion: str) -> CellResult:
    """The cell with the lowest criterion (BIC or AIC) among those that fitted."""
    ok = [c for c in cells if c.error is None]
    if not ok:
        raise RuntimeError("every candidate failed; see the report for the reasons")
    return min(ok, key=lambda c: getattr(c, criterion))
