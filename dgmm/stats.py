"""Sufficient statistics of a Gaussian mixture: a small additive value (a monoid under ``+``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SuffStats:
    """Statistics of a set of rows under one candidate model, all in float64.

    Attributes
    ----------
    n : float
        Total row weight (the number of rows when unweighted).
    loglik : float
        Weighted sum of the per-row log-likelihoods (0 for hard-assignment passes).
    nk : ndarray of shape (n_components,)
        Weighted responsibility counts.
    sx : ndarray of shape (n_components, n_features)
        Weighted sums of ``x − shift − centres[k]`` for component k.
    sxx : ndarray
        Weighted second moments about the same centres, shaped by the covariance type.
    entropy : float
        Weighted sum over rows of ``Σ_k τ_ik log τ_ik`` (≤ 0), the classification term of ICL;
        accumulated by scoring passes only (0 otherwise).
    centres : ndarray of shape (n_components, n_features) or None
        Each component's centre relative to the shift (the means its E-step used, so the new
        means are near it and its moments do not cancel); None means the shift itself. Every
        part of a sum has the same centres.
    recentred : int
        How many of the rows were re-centred on a component's mean for the E-step and the
        moments (`dgmm.estep.far_rows`): a measure of the work, not part of the statistics.
    """

    n: float
    loglik: float
    nk: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray
    entropy: float = 0.0
    centres: np.ndarray | None = None
    recentred: int = 0

    def __add__(self, other: SuffStats) -> SuffStats:
        return SuffStats(
            self.n + other.n,
            self.loglik + other.loglik,
            self.nk + other.nk,
            self.sx + other.sx,
            self.sxx + other.sxx,
            self.entropy + other.entropy,
            self.centres,
            self.recentred + other.recentred,
        )

    @classmethod
    def zero(cls, n_components: int, n_features: int, moment_shape: tuple[int, ...]) -> SuffStats:
        """The identity of ``+``."""
        return cls(
            0.0,
            0.0,
            np.zeros(n_components),
            np.zeros((n_components, n_features)),
            np.zeros(moment_shape),
        )


def sum_stats(parts: list[list[SuffStats]]) -> list[SuffStats]:
    """Add per-candidate statistics of several row blocks, candidate by candidate."""
    out = parts[0]
    for p in parts[1:]:
        out = [a + b for a, b in zip(out, p, strict=True)]
    return out


def add_stats_into(running: list[SuffStats], part: list[SuffStats]) -> list[SuffStats]:
    """``sum_stats([running, part])`` adding into ``running``'s arrays (no new arrays): a chain
    of a pass folds its blocks this way, holding one set of statistics."""
    out = []
    for a, b in zip(running, part, strict=True):
        a.nk.__iadd__(b.nk)
        a.sx.__iadd__(b.sx)
        a.sxx.__iadd__(b.sxx)
        out.append(
            SuffStats(
                a.n + b.n,
                a.loglik + b.loglik,
                a.nk,
                a.sx,
                a.sxx,
                a.entropy + b.entropy,
                a.centres,
                a.recentred + b.recentred,
            )
        )
    return out
