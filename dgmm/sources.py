"""Responsibility sources: what weighs each row's contribution to a component's statistics (the
posterior of current parameters, fixed labels, the nearest centre, single rows, random draws),
and the posterior of a row's log-probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .params import ShiftedParams

# Rows per page of random responsibilities: drawn per page, so chunking changes no draw.
RANDOM_PAGE_ROWS = 4096


def posterior_rows(
    lp: np.ndarray, entropy: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-row log-sum-exp over components of (K, n) log-probabilities, the normalised
    responsibilities (K, n), sharing one ``exp``, and with ``entropy`` each row's
    ``Σ_k τ log τ`` (else None).

    ``log τ_k = (lp_k − m) − log s`` for the row's maximum ``m`` and ``s = Σ_k exp(lp_k − m)``,
    so the entropy takes one product with the shifted log-probabilities, not a ``log`` per
    component (scikit-learn's ``Σ exp(log_resp)·log_resp``, the same to rounding).
    """
    m = lp.max(axis=0)
    m[~np.isfinite(m)] = 0.0
    e = lp - m
    t = e.copy() if entropy else None
    np.exp(e, out=e)
    s = e.sum(axis=0)
    with np.errstate(divide="ignore"):
        log_s = np.log(s)
    lse = log_s + m
    e /= s
    ent = None
    if entropy:
        # components with τ = 0 add nothing (their shifted log-probability may be −inf)
        np.multiply(e, t, out=t, where=e > 0)
        t[e <= 0] = 0.0
        ent = t.sum(axis=0, dtype=np.float64) - log_s
    return lse, e, ent


class Responsibilities(Protocol):
    """Where a pass gets each row's responsibilities from.

    ``centres`` (K, D) float64, relative to the shift, are the points each component's moments
    are taken about (None: the shift). A source whose responsibilities are hard assignments and
    that knows its centres is always framed: rows are re-centred on their assigned centre.
    """

    n_components: int
    centres: np.ndarray | None

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

    @property
    def centres(self) -> np.ndarray:
        return self.params.centres

    entropy = False  # whether passes also accumulate Σ τ log τ

    def __call__(self, xs, row0):
        resp, lse, _ = self.rows(xs)
        return resp, lse

    def rows(
        self,
        xs: np.ndarray,
        params: ShiftedParams | None = None,
        x64: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Responsibilities, log-likelihoods and (if `entropy`) ``Σ_k τ log τ`` of rows
        ``xs`` (``x64``: the same in float64, if at hand), under ``params`` (a frame of this
        model's) or the model's own."""
        return self.from_log_prob((params or self.params).weighted_log_prob(xs, x64))

    def from_log_prob(self, lp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`rows` of rows whose weighted log-probabilities (K, n) are ``lp``."""
        lse, resp, ent = posterior_rows(lp, self.entropy)
        return resp, lse, ent


@dataclass(frozen=True)
class ScoringPosterior(Posterior):
    """The E-step of a scoring pass (and of a variational fit): also accumulates the entropy
    term that ICL and the variational bound need."""

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
    centres: np.ndarray | None = None

    def __call__(self, xs, row0):
        return _one_hot(self.labels[row0 : row0 + xs.shape[0]], self.n_components, xs.dtype), None


@dataclass(frozen=True)
class NearestCentre:
    """Hard assignment of each row to its nearest centre (centres shifted like the rows)."""

    centres_s: np.ndarray

    @property
    def n_components(self) -> int:
        return self.centres_s.shape[0]

    @property
    def centres(self) -> np.ndarray:
        return self.centres_s

    def __call__(self, xs, row0):
        c = self.centres_s.astype(xs.dtype)
        d = np.einsum("kd,kd->k", c, c)[:, None] - 2.0 * (c @ xs.T)
        return _one_hot(d.argmin(axis=0), self.n_components, xs.dtype), None


@dataclass(frozen=True)
class RowIndices:
    """Component k is the single row ``indices[k]`` (random_from_data, k-means++)."""

    indices: np.ndarray
    n_components: int
    centres: np.ndarray | None = None

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
    centres = None  # every component starts near the overall mean: the shift serves them all

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
