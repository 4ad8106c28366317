"""Per-block kernels: responsibilities from any source, and the block's sufficient statistics.

Everything here is plain numpy on one row block. A block is processed in row sub-blocks sized to
keep the (rows × K·D) temporaries in cache; statistics are accumulated in float64.

Rows are taken relative to the global shift, in float64, and then cast to the compute dtype. A
quadratic form computed from expanded terms (``Pᵀx − Pᵀμ``, ``x² − 2xμ + μ²``) loses ``eps``
times the size of those terms, which grows with the distance of rows and means from the origin
in the component's own units; moments taken about the origin and moved to a component's centre
lose the same. Row by row, where that loss could matter under a component that could hold the
row (`far_rows`), the row is re-centred on its nearest component's mean (its *frame*) before the
E-step and the moments, so only the distances between nearby points enter;
`CovarianceType.move_moments` then carries the moments to each component's centre. Statistics
are always taken about each component's centre (the means the E-step used), which is what keeps
the M-step from cancelling at any separation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .covariance import CovarianceType
from .params import GaussianParams, ShiftedParams
from .sources import Posterior, Responsibilities, posterior_rows
from .stats import SuffStats
from .validation import check_block_finite

if TYPE_CHECKING:
    from .variational import VariationalParams

# Budget for the temporaries of one sub-block: measured best at about 2k rows for K=8, D=16.
SUB_BLOCK_BYTES = 3 * 2**20

# A row is re-centred when, under a component that could hold it, rounding in the global frame
# could lose more than these: ``FRAME_LOSS`` of its quadratic form in the compute dtype (relative
# to the form plus one: the compute dtype's own rounding of the form grows with it too), or
# (float64 data) ``FRAME_MOMENT_LOSS`` of the moments relative to the component's covariance in
# its own units (its whitened covariance, the identity). Below them the global frame is as good
# and costs one E-step. float32 data carries ~1e-7 of rounding in every value, far above what
# float64 moments lose at any distance the E-step admits.
FRAME_LOSS = 1e-4
FRAME_MOMENT_LOSS = 1e-10
# A component whose log-probability at a row is this far below the row's best cannot hold it:
# its responsibility is below e⁻⁵⁰ (2e-22), so its rounding there reaches neither the row's
# likelihood nor its moments.
RELEVANT_MARGIN = 50.0
FRAMED_ROWS = 2  # a framed job's sub-blocks are this many times larger (see chunk_statistics)
# The most one sub-block's temporaries take: framed rows also hold their re-centred copies.
TEMPORARY_BYTES = 2 * FRAMED_ROWS * SUB_BLOCK_BYTES


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float32 data computes in float32; everything else in float64."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)


def sub_block_rows(row_values: int, itemsize: int) -> int:
    """Rows per sub-block so that ``row_values`` temporaries per row fit the budget.

    Per row a job holds its shifted row (D), responsibilities and log-probabilities (~4·K) and
    its covariance type's own temporaries (`CovarianceType.row_temporaries`).
    """
    return int(np.clip(SUB_BLOCK_BYTES // (itemsize * row_values), 256, 16384))


def _row_values(strategy: CovarianceType, n_components: int, n_features: int) -> int:
    return n_features + 4 * n_components + strategy.row_temporaries(n_components, n_features)


def _moment_limit(strategy: CovarianceType, n_features: int, dtype: np.dtype) -> float:
    """The largest squared term size whose float64 moments lose at most `FRAME_MOMENT_LOSS`
    (whitened) when moved to a component's centre; no limit for a type that takes them about
    the centres directly, or for float32 data (see `FRAME_MOMENT_LOSS`)."""
    if not strategy.moves_moments(n_features) or dtype != np.float64:
        return np.inf
    return FRAME_MOMENT_LOSS / float(np.finfo(np.float64).eps)


def _too_far(
    params: ShiftedParams,
    squares: np.ndarray,
    forms: np.ndarray,
    eps: float,
    limit: float,
    comps: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row (squared shifted values ``squares``, quadratic forms ``forms``) and component
    (of ``comps`` if given), whether the global frame loses too much, and the rounding loss of
    the quadratic forms (0 where the type does not expand them)."""
    strategy, d = params.strategy, params.means_s.shape[1]
    if limit < np.inf:
        far = params.moment_sizes(squares, comps) > limit
    else:
        far = np.zeros(forms.shape, dtype=bool)
    if not strategy.expanded_form(d):
        return far, np.zeros(forms.shape)
    loss = strategy.form_loss(params.term_sizes(squares, comps), forms, eps)
    return far | (loss > FRAME_LOSS * (1.0 + forms)), loss


def _safe_forms(
    params: ShiftedParams, bound: np.ndarray, comps: np.ndarray, eps: float, limit: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per component of ``comps``, a quadratic form (at least 1) from which on `_too_far`
    clears every row within ``bound`` (squares (1, D)): ``inf`` where its moments fail the
    bound whatever the form; and the components' term sizes at the bound (None where the type
    does not expand its forms)."""
    strategy, d = params.strategy, params.means_s.shape[1]
    never = np.zeros(comps.size, dtype=bool)
    if limit < np.inf:
        never = params.moment_sizes(bound, comps)[0] > limit
    sizes = None
    safe = np.ones(comps.size)
    if strategy.expanded_form(d):
        sizes = params.term_sizes(bound, comps)[0]
        safe = strategy.safe_form(sizes, eps, FRAME_LOSS)
    return np.where(never, np.inf, safe), sizes


def _exact_everywhere(params: ShiftedParams, dtype: np.dtype) -> bool:
    """Whether the type loses nothing in the global frame at any distance: it projects each
    row's difference to each mean and takes moments about the centres."""
    strategy = params.strategy
    d = params.means_s.shape[1]
    return not strategy.expanded_form(d) and _moment_limit(strategy, d, dtype) == np.inf


def frames_every_row(params: ShiftedParams, dtype: np.dtype) -> bool:
    """Whether every row must be re-centred: each component's own ``Pᵀμ`` term is too large
    to round in ``dtype`` even for a row at its centre (or for float64 moments), so whichever
    component holds a row, the row is far (it skips the plain E-step)."""
    if _exact_everywhere(params, dtype):
        return False
    k, d = params.means_s.shape
    at_centres = np.zeros((1, d))  # rows at the origin: only the centres' own terms count
    forms = np.full((1, k), float(d))  # a row's expected form under its component
    limit = _moment_limit(params.strategy, d, dtype)
    eps = float(np.finfo(dtype).eps)
    return bool(_too_far(params, at_centres, forms, eps, limit)[0].all())


@dataclass(frozen=True)
class FarCheck:
    """What a block's bound (its per-feature largest magnitudes about the shift) leaves to
    check row by row: the components it does not clear (`suspects`), and per suspect the
    quadratic form from which on its rows are cleared all the same (`safe`, `_safe_forms`)."""

    suspects: np.ndarray
    safe: np.ndarray
    log_norms: np.ndarray  # of the suspects (`ShiftedParams.log_norms`)
    sizes: np.ndarray | None  # the suspects' term sizes at the bound, if their forms expand
    eps: float
    limit: float


def far_check(params: ShiftedParams, reach: np.ndarray, dtype: np.dtype) -> FarCheck | None:
    """The `FarCheck` of rows with ``|x − shift| ≤ reach`` per feature, or None when the bound
    clears every row (once per block and model: it costs a few dozen small array steps)."""
    if _exact_everywhere(params, dtype):
        return None
    eps = float(np.finfo(dtype).eps)
    limit = _moment_limit(params.strategy, reach.shape[0], dtype)
    bound = (reach * reach)[None, :]
    # over all forms f ≥ 0, loss(f) / (1 + f) is at most loss(1), as √f/(1 + f) ≤ ½
    ones = np.ones((1, params.means_s.shape[0]))
    suspects = np.flatnonzero(_too_far(params, bound, ones, eps, limit)[0][0])
    if suspects.size == 0:
        return None
    safe, sizes = _safe_forms(params, bound, suspects, eps, limit)
    return FarCheck(suspects, safe, params.log_norms()[suspects], sizes, eps, limit)


def far_rows(
    params: ShiftedParams, x64: np.ndarray, lp: np.ndarray, check: FarCheck | None
) -> np.ndarray | None:
    """The rows (a boolean mask) that must be re-centred, or None when no row must.

    A row must when, under a component that could hold it (log-probability ``lp`` (K, n)
    within `RELEVANT_MARGIN` of the row's best, allowing for ``lp``'s own rounding), the
    global frame loses more than `FRAME_LOSS` of its quadratic form or `FRAME_MOMENT_LOSS` of
    the moments. Only the block's ``check`` suspects are measured, and only on rows near
    enough their centres (their forms below `FarCheck.safe`): term sizes row by row from the
    shifted float64 rows ``x64`` (`ShiftedParams.term_sizes`), quadratic forms from ``lp``.
    """
    if check is None:
        return None
    suspects = check.suspects
    lp_s = lp[suspects]
    floor = lp.max(axis=0) - RELEVANT_MARGIN
    forms = np.maximum(2.0 * (check.log_norms[:, None] - lp_s), 0.0)
    # rows near enough a suspect's centre for the bound to fail there (forms below
    # `FarCheck.safe`; every row for a suspect whose moments fail the bound) that the suspect
    # could hold, allowing for the rounding of lp (at most the loss the bound gives)
    highest = lp_s
    if check.sizes is not None:
        highest = lp_s + params.strategy.form_loss(check.sizes[:, None], forms, check.eps)
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero(((forms < check.safe[:, None]) & (highest >= floor)).any(axis=0))
    if rows.size == 0:
        return None
    forms, floor, lp_s = forms[:, rows].T, floor[rows], lp_s[:, rows]
    x_r = x64[rows]
    far, loss = _too_far(params, x_r * x_r, forms, check.eps, check.limit, suspects)
    with np.errstate(invalid="ignore"):
        # a component that looks out of reach only through its own rounding may hold the row
        held = lp_s.T + loss >= floor[:, None]
    mask = np.zeros(x64.shape[0], dtype=bool)
    mask[rows] = (far & held).any(axis=1)
    return mask if mask.any() else None


def nearest_centre(xs: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each row's nearest centre (Euclidean), the origin it is re-centred on.

    Rounding of ``|c|² − 2·x·c`` can only confuse centres within ``√(eps·|x|·|c|)`` of each
    other; the row is then near both, which is all a frame needs.
    """
    return (np.einsum("kd,kd->k", centres, centres)[:, None] - 2.0 * (centres @ xs.T)).argmin(
        axis=0
    )


def recentred(x64: np.ndarray, centres: np.ndarray, home: np.ndarray, dtype: np.dtype):
    """Rows grouped by their home component and re-centred on its centre, in float64 and in
    ``dtype``: ``(component, row indices, z64, z)`` for each component that has rows."""
    order = np.argsort(home, kind="stable")
    ends = np.cumsum(np.bincount(home, minlength=centres.shape[0]))
    starts = np.concatenate(([0], ends[:-1]))
    for j, (a, b) in enumerate(zip(starts, ends, strict=True)):
        if b > a:
            rows = order[a:b]
            z64 = x64[rows] - centres[j]
            yield j, rows, z64, z64.astype(dtype, copy=False)


@dataclass(frozen=True)
class StatsJob:
    """One candidate's work in a pass: a responsibility source and a covariance type."""

    source: Responsibilities
    strategy: CovarianceType


@dataclass
class _Accumulator:
    n: float
    loglik: float
    nk: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray
    entropy: float = 0.0
    recentred: int = 0

    def add(self, z, z64, resp, w, lse, strategy: CovarianceType, ent, delta) -> None:
        """Add rows ``z`` (compute dtype) and ``z64`` (float64) relative to an origin that lies
        ``delta`` (K, D) from each component's centre (None: at every centre); ``resp`` (K, n)
        of any float dtype; ``ent``, each row's ``Σ_k τ log τ`` (or None), adds
        ``Σ w Σ_k τ log τ``."""
        rw = resp.astype(np.float64, copy=False)
        if ent is not None:
            self.entropy += float(ent.sum() if w is None else ent @ w)
        if w is not None:
            rw = rw * w
        self.n += float(z64.shape[0] if w is None else w.sum())
        if lse is not None:
            self.loglik += float(lse.sum(dtype=np.float64) if w is None else lse @ w)
        nk = rw.sum(axis=1)
        sx = rw @ z64
        strategy.centred_moments(z, z64, rw, nk, sx, delta, self.sxx)
        if delta is not None:
            sx = sx + nk[:, None] * delta
        self.nk += nk
        self.sx += sx


def _add_rows(
    acc: _Accumulator,
    job: StatsJob,
    x64: np.ndarray,
    dtype: np.dtype,
    w: np.ndarray | None,
    row0: int,
    framed: bool,
    check: FarCheck | None = None,
) -> None:
    """One job's statistics of one sub-block of shifted float64 rows ``x64``: a model's rows in
    the global frame where it is exact (`far_rows`, with the block's ``check``), the others
    re-centred on their nearest component (every row if ``framed``); a hard source with
    centres re-centres every row."""
    source, strategy = job.source, job.strategy
    centres = source.centres
    xs = x64.astype(dtype, copy=False)
    if not isinstance(source, Posterior):
        resp, _ = source(xs, row0)
        if centres is None:
            acc.add(xs, x64, resp, w, None, strategy, None, None)
            return
        home = resp.argmax(axis=0)
        acc.recentred += x64.shape[0]
        for j, rows, z64, z in recentred(x64, centres, home, dtype):
            wj = None if w is None else w[rows]
            acc.add(z, z64, resp[:, rows], wj, None, strategy, None, centres[j] - centres)
        return
    params = source.params
    if not framed:
        lp = params.weighted_log_prob(xs, x64)
        far = far_rows(params, x64, lp, check)
        if far is None:
            resp, lse, ent = source.from_log_prob(lp)
            acc.add(xs, x64, resp, w, lse, strategy, ent, -centres)
            return
        near = ~far
        resp, lse, ent = source.from_log_prob(lp[:, near])
        w_near = None if w is None else w[near]
        acc.add(xs[near], x64[near], resp, w_near, lse, strategy, ent, -centres)
        x64, xs = x64[far], xs[far]
        w = None if w is None else w[far]
    acc.recentred += x64.shape[0]
    home = nearest_centre(xs, params.means_s)
    for j, rows, z64, z in recentred(x64, centres, home, dtype):
        resp_j, lse, ent = source.rows(z, params.in_frame(j), z64)
        wj = None if w is None else w[rows]
        acc.add(z, z64, resp_j, wj, lse, strategy, ent, centres[j] - centres)


def chunk_statistics(
    x: np.ndarray,
    w: np.ndarray | None,
    row0: int,
    shift: np.ndarray,
    jobs: list[StatsJob],
    check_finite: bool = False,
) -> list[SuffStats]:
    """E-step and sufficient statistics of every job on one row block.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_features)
        The row block, of any real dtype.
    w : ndarray of shape (n_rows,) or None
        Row weights; None means weight 1.
    row0 : int
        Global index of the block's first row.
    shift : ndarray of shape (n_features,)
        Offset subtracted (in float64) from every row before anything else.
    jobs : list of StatsJob
        The candidates this pass serves.
    check_finite : bool
        Raise a ValueError naming the rows if the block holds NaN or inf.

    Returns
    -------
    list of SuffStats
        One per job, in float64, about each job's centres, with the number of rows it
        re-centred.
    """
    if check_finite:
        check_block_finite(x, row0)
    dtype = compute_dtype(x.dtype)
    n, d = x.shape
    w64 = None if w is None else w.astype(np.float64, copy=False)
    accs = [
        _Accumulator(
            0.0,
            0.0,
            np.zeros(j.source.n_components),
            np.zeros((j.source.n_components, d)),
            np.zeros(j.strategy.moment_shape(j.source.n_components, d)),
        )
        for j in jobs
    ]
    # a hard source with centres re-centres every row, and so does a model far from the shift
    framed = [
        j.source.centres is not None
        and (not isinstance(j.source, Posterior) or frames_every_row(j.source.params, dtype))
        for j in jobs
    ]
    # what the block's bound leaves to check row by row, per model in the global frame
    checks: list[FarCheck | None] = [None] * len(jobs)
    models = [i for i, j in enumerate(jobs) if isinstance(j.source, Posterior) and not framed[i]]
    if models and n:
        reach = _reach(x, shift)
        for i in models:
            checks[i] = far_check(jobs[i].source.params, reach, dtype)
    # Each job runs in sub-blocks sized by its own temporaries, so its arithmetic (and so its
    # bits) does not depend on which other jobs share the pass; jobs of one size share them.
    # A framed job splits each sub-block K ways: larger ones keep its frames' products large.
    by_step: dict[int, list[int]] = {}
    for i, j in enumerate(jobs):
        step = sub_block_rows(_row_values(j.strategy, j.source.n_components, d), dtype.itemsize)
        by_step.setdefault(step * (FRAMED_ROWS if framed[i] else 1), []).append(i)
    for step, members in by_step.items():
        for s in range(0, n, step):
            # The shift is subtracted in float64: in float32 it would round rows far from it.
            x64 = np.subtract(x[s : s + step], shift, dtype=np.float64)
            ws = None if w64 is None else w64[s : s + step]
            for i in members:
                _add_rows(accs[i], jobs[i], x64, dtype, ws, row0 + s, framed[i], checks[i])
    return [
        SuffStats(a.n, a.loglik, a.nk, a.sx, a.sxx, a.entropy, j.source.centres, a.recentred)
        for a, j in zip(accs, jobs, strict=True)
    ]


def _column_extreme(x: np.ndarray, reduce) -> np.ndarray:
    """``reduce(x, axis=0)``, with the rows folded into long ones first: numpy reduces long
    contiguous rows several times faster than many short ones (4 ms against 19 for 250k × 32)."""
    n, d = x.shape
    k = max(1, 4096 // max(d, 1))
    m = n // k
    if m == 0:
        return reduce(x, axis=0)
    out = reduce(np.ascontiguousarray(x[: m * k]).reshape(m, k * d), axis=0).reshape(k, d)
    return reduce(np.concatenate([out, x[m * k :]]), axis=0)


def _reach(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Per feature, the largest ``|x − shift|`` of a block (in float64)."""
    hi = _column_extreme(x, np.max).astype(np.float64) - shift
    lo = _column_extreme(x, np.min).astype(np.float64) - shift
    return np.maximum(np.abs(hi), np.abs(lo))


def log_prob(params: ShiftedParams, x64: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``log π_k + log N(x | θ_k)`` (K, n) of shifted float64 rows, re-centred where needed."""
    xs = x64.astype(dtype, copy=False)
    if frames_every_row(params, dtype):
        return _framed_log_prob(params, x64, xs, dtype)
    lp = params.weighted_log_prob(xs, x64)
    far = far_rows(params, x64, lp, far_check(params, _reach(x64, np.zeros(1)), dtype))
    if far is not None:
        lp[:, far] = _framed_log_prob(params, x64[far], xs[far], dtype)
    return lp


def _framed_log_prob(
    params: ShiftedParams, x64: np.ndarray, xs: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """`log_prob` of rows each re-centred on its nearest component."""
    lp = np.empty((params.means_s.shape[0], x64.shape[0]), dtype=dtype)
    home = nearest_centre(xs, params.means_s)
    for j, rows, z64, z in recentred(x64, params.centres, home, dtype):
        lp[:, rows] = params.in_frame(j).weighted_log_prob(z, z64)
    return lp


def block_output(x: np.ndarray, params: ShiftedParams, shift: np.ndarray, output: str):
    """``labels`` (n,), ``proba`` (n, K), ``score`` (per-row log-likelihood, n) or
    ``entropy`` (per-row ``Σ_k τ log τ``, n, float64) of one row block, sub-block by sub-block.

    Probabilities are normalised directly (``exp(lp − max) / Σ``), not taken as
    ``exp(lp − lse)``: for a row far from every component ``lse`` rounds to the largest ``lp``
    (``log K`` is lost next to it) and ``exp(lp − lse)`` would sum to up to K.
    """
    dtype = compute_dtype(x.dtype)
    n, d = x.shape
    k = params.means_s.shape[0]
    step = sub_block_rows(_row_values(params.strategy, k, d), dtype.itemsize)
    out_dtype = {"labels": np.intp, "entropy": np.float64}.get(output, dtype)
    out = np.empty((n, k) if output == "proba" else n, dtype=out_dtype)
    for s in range(0, n, step):
        lp = log_prob(params, np.subtract(x[s : s + step], shift, dtype=np.float64), dtype)
        if output == "labels":
            out[s : s + step] = lp.argmax(axis=0)
            continue
        lse, resp, ent = posterior_rows(lp, output == "entropy")
        out[s : s + step] = {"proba": resp.T, "entropy": ent}.get(output, lse)
    return out


def row_output(
    params: GaussianParams | VariationalParams, x: np.ndarray, output: str
) -> np.ndarray:
    """`block_output` of in-memory rows (float64): ``score`` is each row's log-likelihood,
    ``entropy`` its ``Σ_k τ log τ`` (its share of ICL's classification term)."""
    shift = x.mean(axis=0, dtype=np.float64)
    shifted = params.shifted(shift, compute_dtype(x.dtype))
    return block_output(x, shifted, shift, output).astype(np.float64)


@dataclass(frozen=True)
class ApplySpec:
    """What `apply_block` returns for a fitted model: ``labels``, ``proba`` or ``score``."""

    params: ShiftedParams
    shift: np.ndarray
    output: str


def apply_block(x: np.ndarray, spec: ApplySpec, block_info: dict | None = None) -> np.ndarray:
    """Labels, probabilities or per-row log-likelihoods of one row block of new data."""
    row0 = block_info[0]["array-location"][0][0] if block_info else 0
    check_block_finite(x, row0)
    return block_output(x, spec.params, spec.shift, spec.output)
