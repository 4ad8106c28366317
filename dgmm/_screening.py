"""Screening after EM on the sample: restarts and whole cells that trail, judged on the
sample's rows."""

from __future__ import annotations

import logging

import numpy as np

from ._candidates import Candidate, best_restart
from ._reduce import one_blas_thread
from .criteria import information_criteria
from .em import (
    judged_rows,
)

logger = logging.getLogger(__name__)


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
            # BLAS in one thread, as on the workers that compute the others' (`take`): the
            # same bits wherever a fit's rows are scored (a stored fit's are scored here)
            with one_blas_thread():
                self._cache[key] = judged_rows(c.state.params, self.x, key[1])
        return self._cache[key]

    def take(self, c: Candidate, values: dict[str, np.ndarray]) -> None:
        """Rows of ``c``'s final fit computed elsewhere (`judged_rows` of the same rows)."""
        for output, v in values.items():
            self._cache[self._key(c, output)] = v

    @staticmethod
    def _key(c: Candidate, output: str) -> tuple[int, str]:
        if output == "evidence":
            output = c.state.params.evidence_output  # a Gaussian fit's evidence is its score
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
        if best.state.params.bound_is_total:
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
    shares: dict[tuple[str, int], float] | None = None,
) -> tuple[dict[int, str], dict[int, dict]]:
    """Candidates (by ``id``) of cells whose criterion on all ``n_rows`` rows, estimated from
    EM on the sample, clearly trails the best cell's, with why.

    Each cell's best restart gives per-row scores on the sample (log-likelihood, plus the
    classification entropy for ICL); the full-data criterion is estimated as
    ``−2·N·mean + penalty``. A cell is stopped when its excess over the best cell's exceeds
    `TRAILING_STANDARD_ERRORS` standard errors of the paired per-row differences, both as
    estimated and after the first-order correction for fitting on the sample (a model of p
    parameters fitted on m rows looks better there by about p/(2m) per row than it will be
    on all rows, and all rows' own fit gains p/(2N) back; a cell fitted on a share ``s`` of the
    sample's rows, ``shares``, looks better there by p(2s − 1)/(2sm): its own rows' optimism
    less what the others cost it). Restarts already in ``stopped``
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
        # a variational fit counts its effective components; the report shows of a type
        # stopped here its fit on the sample
        p, fit = c.state.params.selection_size(weight_threshold or 0.0)
        ll, ent = scores.rows(c), scores.rows(c, "entropy")
        per_row[cell] = ll + ent if criterion == "icl" else ll
        share = 1.0 if shares is None else shares.get(cell, 1.0)
        optimism = p * (2.0 * share - 1.0) / (2.0 * share * m)  # per row, on the sample
        raw[cell] = -2.0 * n_rows * scores.mean(per_row[cell]) + scale * p
        fix[cell] = raw[cell] + n_rows * (2.0 * optimism - p / n_rows)
        total = n_rows * (scores.mean(ll) - optimism + p / (2 * n_rows))
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
    return UNCONVERGED_ROOM * (gain / m if s.params.bound_is_total else gain)
