"""Per-block kernels: responsibilities from any source, and the block's sufficient statistics.

Everything here is plain numpy on one row block. A block is processed in row sub-blocks sized to
keep the (rows × K·D) temporaries in cache; statistics are accumulated in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .covariance import CovarianceType
from .params import ShiftedParams
from .stats import SuffStats
from .validation import check_block_finite

# Budget for the temporaries of one sub-block: measured best at about 2k rows for K=8, D=16.
SUB_BLOCK_BYTES = 3 * 2**20
RANDOM_PAGE_ROWS = 4096


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


def logsumexp_rows(lp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row log-sum-exp over components of (K, n) log-probabilities, and the normalised
    responsibilities (K, n), sharing one ``exp``."""
    m = lp.max(axis=0)
    m[~np.isfinite(m)] = 0.0
    e = lp - m
    np.exp(e, out=e)
    s = e.sum(axis=0)
    with np.errstate(divide="ignore"):
        lse = np.log(s) + m
    e /= s
    return lse, e


class Responsibilities(Protocol):
    """Where a pass gets each row's responsibilities from."""

    n_components: int

    def __call__(self, xs: np.ndarray, row0: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Responsibilities (K, n) of the shifted rows starting at global row ``row0``, and
        their log-likelihoods (or None when the source is not a model)."""


@dataclass(frozen=True)
class Posterior:
    """The E-step: posterior responsibilities under the current parameters."""

    params: ShiftedParams

    @property
    def n_components(self) -> int:
        return self.params.means_s.shape[0]

    def __call__(self, xs, row0):
        lse, resp = logsumexp_rows(self.params.weighted_log_prob(xs))
        return resp, lse


@dataclass(frozen=True)
class ScoringPosterior(Posterior):
    """The E-step of a scoring pass: also accumulates the entropy term that ICL needs."""

    entropy = True


def _one_hot(labels: np.ndarray, n_components: int, dtype: np.dtype) -> np.ndarray:
    resp = np.zeros((n_components, labels.shape[0]), dtype=dtype)
    resp[labels, np.arange(labels.shape[0])] = 1.0
    return resp


@dataclass(frozen=True)
class Labels:
    """Hard assignment from labels of every row (an in-memory clustering)."""

    labels: np.ndarray
    n_components: int

    def __call__(self, xs, row0):
        return _one_hot(self.labels[row0 : row0 + xs.shape[0]], self.n_components, xs.dtype), None


@dataclass(frozen=True)
class NearestCenter:
    """Hard assignment of each row to its nearest centre (centres shifted like the rows)."""

    centers_s: np.ndarray

    @property
    def n_components(self) -> int:
        return self.centers_s.shape[0]

    def __call__(self, xs, row0):
        c = self.centers_s.astype(xs.dtype)
        d = np.einsum("kd,kd->k", c, c)[:, None] - 2.0 * (c @ xs.T)
        return _one_hot(d.argmin(axis=0), self.n_components, xs.dtype), None


@dataclass(frozen=True)
class RowIndices:
    """Component k is the single row ``indices[k]`` (random_from_data, k-means++)."""

    indices: np.ndarray
    n_components: int

    def __call__(self, xs, row0):
        resp = np.zeros((self.n_components, xs.shape[0]), dtype=xs.dtype)
        local = self.indices - row0
        inside = (local >= 0) & (local < xs.shape[0])
        resp[np.flatnonzero(inside), local[inside]] = 1.0
        return resp, None


@dataclass(frozen=True)
class RandomUniform:
    """Uniform random responsibilities, normalised per row.

    Draws come in fixed pages of rows, each from its own seeded stream, so a row's draw does not
    depend on how the data is chunked.
    """

    seed: int
    n_components: int

    def __call__(self, xs, row0):
        n = xs.shape[0]
        first, last = row0 // RANDOM_PAGE_ROWS, (row0 + n - 1) // RANDOM_PAGE_ROWS
        pages = [
            np.random.default_rng([self.seed, p]).random((RANDOM_PAGE_ROWS, self.n_components))
            for p in range(first, last + 1)
        ]
        start = row0 - first * RANDOM_PAGE_ROWS
        u = np.concatenate(pages)[start : start + n].T.astype(xs.dtype)
        u /= u.sum(axis=0)
        return u, None


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

    def add(self, xs, x64, resp, w, lse, strategy: CovarianceType, entropy: bool) -> None:
        """Add a sub-block: shifted rows ``xs`` (compute dtype) and ``x64`` (float64), ``resp``
        (K, n) of any float dtype; with ``entropy``, also ``Σ w Σ_k τ log τ``."""
        rw = resp.astype(np.float64, copy=False)
        if entropy:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(rw > 0, rw * np.log(rw), 0.0).sum(axis=0)
            self.entropy += float(t.sum() if w is None else t @ w)
        if w is not None:
            rw = rw * w
        self.n += float(x64.shape[0] if w is None else w.sum())
        if lse is not None:
            self.loglik += float(lse.sum(dtype=np.float64) if w is None else lse @ w)
        nk = rw.sum(axis=1)
        sx = rw @ x64
        self.nk += nk
        self.sx += sx
        self.sxx += strategy.second_moments(xs, x64, rw, nk, sx)


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
        The row block, float32 or float64.
    w : ndarray of shape (n_rows,) or None
        Row weights; None means weight 1.
    row0 : int
        Global index of the block's first row.
    shift : ndarray of shape (n_features,)
        Offset subtracted from every row before any moment is taken.
    jobs : list of StatsJob
        The candidates this pass serves.
    check_finite : bool
        Raise a ValueError naming the rows if the block holds NaN or inf.

    Returns
    -------
    list of SuffStats
        One per job, in float64.
    """
    if check_finite:
        check_block_finite(x, row0)
    dtype = compute_dtype(x.dtype)
    n, d = x.shape
    shift_c = shift.astype(dtype)
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
    # Each job runs in sub-blocks sized by its own temporaries, so its arithmetic (and so its
    # bits) does not depend on which other jobs share the pass; jobs of one size share them.
    by_step: dict[int, list[int]] = {}
    for i, j in enumerate(jobs):
        step = sub_block_rows(_row_values(j.strategy, j.source.n_components, d), dtype.itemsize)
        by_step.setdefault(step, []).append(i)
    for step, members in by_step.items():
        for s in range(0, n, step):
            xs = x[s : s + step].astype(dtype, copy=False) - shift_c
            # Moments are taken from float64 values: float32 products of rows far from the
            # shift would leave errors larger than a tight component's variance.
            x64 = xs.astype(np.float64, copy=False)
            ws = None if w64 is None else w64[s : s + step]
            for i in members:
                job, acc = jobs[i], accs[i]
                resp, lse = job.source(xs, row0 + s)
                scoring = getattr(job.source, "entropy", False)
                acc.add(xs, x64, resp, ws, lse, job.strategy, scoring)
    return [SuffStats(a.n, a.loglik, a.nk, a.sx, a.sxx, a.entropy) for a in accs]


def block_output(x: np.ndarray, params: ShiftedParams, shift: np.ndarray, output: str):
    """``labels`` (n,), ``proba`` (n, K) or ``score`` (per-row log-likelihood, n) of one row
    block, sub-block by sub-block.

    Probabilities are normalised directly (``exp(lp − max) / Σ``), not taken as
    ``exp(lp − lse)``: for a row far from every component ``lse`` rounds to the largest ``lp``
    (``log K`` is lost next to it) and ``exp(lp − lse)`` would sum to up to K.
    """
    dtype = compute_dtype(x.dtype)
    n, d = x.shape
    k = params.means_s.shape[0]
    step = sub_block_rows(_row_values(params.strategy, k, d), dtype.itemsize)
    out = np.empty(
        (n, k) if output == "proba" else n, dtype=np.intp if output == "labels" else dtype
    )
    shift_c = shift.astype(dtype)
    for s in range(0, n, step):
        lp = params.weighted_log_prob(x[s : s + step].astype(dtype, copy=False) - shift_c)
        if output == "labels":
            out[s : s + step] = lp.argmax(axis=0)
            continue
        lse, resp = logsumexp_rows(lp)
        out[s : s + step] = resp.T if output == "proba" else lse
    return out


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
