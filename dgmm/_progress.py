"""Progress of the engine: one `PassReport` per counted pass over the data."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._candidates import Candidate
from .criteria import information_criteria
from .em import (
    DataPasses,
)
from .settings import FitSettings

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
    phase : {'profile', 'sample', 'init', 'em', 'score', 'labels', 'resume'}
        What the pass was for: ``sample`` draws the uniform sample of rows (and profiles the
        data), ``labels`` (a run's) writes them; ``resume`` is reported once, with no pass,
        when a checkpoint is resumed (``n_pass`` is then the passes it holds).
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


class Reporter:
    """Makes a `PassReport` of every counted pass. An EM pass is reported by the sweep after
    its M-step (``reporter("em")``), so the report has that iteration's lower bounds."""

    def __init__(
        self,
        fn: ProgressFn,
        passes: DataPasses,
        settings: FitSettings,
        n_rows: int,
    ):
        self.fn, self.passes, self.n_rows = fn, passes, n_rows
        self.max_iter = settings.max_iter
        # a degenerate fit cannot be selected: it is not reported best
        self.screen = settings.screen_degenerate
        self.t0 = time.perf_counter()
        self.criterion = "bic" if settings.criterion == "icl" else settings.criterion
        # variational fits report their bound (the largest); criteria need a scoring pass
        self.variational = settings.variational
        if self.variational:
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
