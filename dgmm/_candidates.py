"""Candidates of the selection engine: one restart of one (K, covariance type) cell each,
with its state, its typed status and scikit-learn's choice among restarts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .em import (
    EMState,
)
from .params import GaussianParams

# A failed candidate fitted without regularisation is retried first with scikit-learn's default.
RETRY_FIRST_REG = 1e-6


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
    reused: str | None = None  # the run whose stored fit stands for this one's (a store)

    def reset(self) -> None:
        """Back to not started: what a checkpoint or a stored fit restored is dropped (one
        that turned out not to fit, or not to be resumed)."""
        self.start = self.state = self.init_error = self.stopped = self.estimate = None
        self.retries, self.sample_iter, self.cell_stopped = 0, 0, False
        self.log_likelihood = self.entropy = self.reused = None

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


def best_restart(restarts: Iterable[Candidate]) -> Candidate | None:
    """scikit-learn's choice among the restarts that fitted: the first strictly largest final
    lower bound, or the last one while every bound is still −inf (``max_iter=0``)."""
    best, best_lb = None, -np.inf
    for c in restarts:
        if c.error is None and (c.state.lower_bound > best_lb or best_lb == -np.inf):
            best, best_lb = c, c.state.lower_bound
    return best
