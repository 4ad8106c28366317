"""A uniform sample of rows, drawn in one pass and the same under any chunking.

Row ``i`` is kept when a hash of (seed, i) falls below the sampling fraction, so which rows are
kept depends on the seed and the row's place only, never on how the data is chunked or in which
order blocks are read. The sample serves in-memory initialisation (scikit-learn's k-means and
k-means++ on it) and the first, in-memory stage of multi-resolution EM.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from .params import n_parameters
from .validation import ColumnProfile, block_profile

# Sample rows per free parameter of the largest candidate, and the bounds on the sample: enough
# rows that every component of the largest model is well determined, few enough that EM on the
# sample costs a small share of one pass over large data.
ROWS_PER_PARAMETER = 20
MIN_SAMPLE_ROWS = 10_000
MAX_SAMPLE_ROWS = 100_000
# The sample's float64 copy stays under this on the client
MAX_SAMPLE_BYTES = 256 * 2**20

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function of uint64 values (wraps modulo 2**64 as intended)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def row_uniforms(seed: int, row0: int, n: int) -> np.ndarray:
    """Uniform draws in [0, 1) of rows ``row0 .. row0 + n − 1``, each a function of (seed, row)."""
    return uniforms_at(seed, np.arange(row0, row0 + n, dtype=np.uint64))


def uniforms_at(seed: int, rows: np.ndarray) -> np.ndarray:
    """The uniform draws of `row_uniforms` of the given global row numbers."""
    key = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))[0]
    rows = np.asarray(rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = _splitmix64((rows + np.uint64(1)) * _GOLDEN + key)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class RowSample:
    """Rows kept by a uniform draw, with their weights and their places in the data.

    Attributes
    ----------
    x : ndarray of shape (m, n_features)
        The rows, in the data's dtype, in row order.
    w : ndarray of shape (m,) or None
        Their weights (None: unweighted data).
    index : ndarray of shape (m,)
        Their global row numbers.
    fraction : float
        The probability with which each row was kept.
    weight_total : float
        The weight of all rows of the data, kept or not (their number without weights).
    """

    x: np.ndarray
    w: np.ndarray | None
    index: np.ndarray
    fraction: float
    weight_total: float = 0.0

    @staticmethod
    def concatenate(parts: list[RowSample]) -> RowSample:
        """The parts' rows in one sample, copied once (a worker holds the parts and the
        result, twice the rows, not more)."""
        first = parts[0]
        return RowSample(
            np.concatenate([p.x for p in parts]),
            None if first.w is None else np.concatenate([p.w for p in parts]),
            np.concatenate([p.index for p in parts]),
            first.fraction,
            float(sum(p.weight_total for p in parts)),
        )

    def subset(self, seed: int, fraction: float) -> RowSample:
        """The rows a draw under ``seed`` keeps at ``fraction`` (at most this sample's own,
        which was drawn under ``seed``): exactly the sample such a draw of the data gives."""
        if fraction >= self.fraction:
            return self
        keep = np.flatnonzero(uniforms_at(seed, self.index) < fraction)
        w = None if self.w is None else self.w[keep]
        return RowSample(self.x[keep], w, self.index[keep], fraction, self.weight_total)

    def in_row_order(self) -> RowSample:
        order = np.argsort(self.index, kind="stable")
        w = None if self.w is None else self.w[order]
        return RowSample(self.x[order], w, self.index[order], self.fraction, self.weight_total)


@dataclass(frozen=True)
class SampleSpec:
    """What a sampling pass keeps: rows whose draw under ``seed`` is below ``fraction``."""

    seed: int
    fraction: float


def sample_block(
    x: np.ndarray, w: np.ndarray | None, row0: int, spec: SampleSpec
) -> tuple[ColumnProfile, RowSample]:
    """A block's profile and the rows of it the draw keeps (rows with NaN/inf never are)."""
    profile = block_profile(x, row0)
    keep = row_uniforms(spec.seed, row0, x.shape[0]) < spec.fraction
    if profile.n_bad:
        keep &= np.isfinite(x).all(axis=1)
    idx = np.flatnonzero(keep)
    total = float(x.shape[0] if w is None else np.sum(w, dtype=np.float64))
    part = RowSample(x[idx], None if w is None else w[idx], idx + row0, spec.fraction, total)
    return profile, part


def combine_samples(
    parts: list[tuple[ColumnProfile, RowSample]],
) -> tuple[ColumnProfile, RowSample]:
    profile = parts[0][0]
    for p, _ in parts[1:]:
        profile = profile + p
    return profile, RowSample.concatenate([s for _, s in parts])


def default_sample_size(cells: list[tuple[str, int]], n_features: int) -> int:
    """Sample rows for candidates of (covariance type, K): ``ROWS_PER_PARAMETER`` per free
    parameter of the largest, within [MIN_SAMPLE_ROWS, MAX_SAMPLE_ROWS] and MAX_SAMPLE_BYTES.
    Of one cell, its own sample's rows."""
    most = max(n_parameters(cov, k, n_features) for cov, k in cells)
    rows = min(max(ROWS_PER_PARAMETER * most, MIN_SAMPLE_ROWS), MAX_SAMPLE_ROWS)
    return int(max(min(rows, MAX_SAMPLE_BYTES // (8 * n_features)), 1))


def sample_seed(random_state: Any) -> int:
    """The sampling seed a ``random_state`` gives, without drawing from the caller's stream."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy % 2**63)
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    rng = copy.deepcopy(random_state)  # a RandomState or Generator the caller keeps drawing from
    draw = rng.randint if isinstance(rng, np.random.RandomState) else rng.integers
    return int(draw(2**31 - 1))


def cell_starts_on_sample(strategy: str, rows: int, n_rows: int) -> bool:
    """Whether a cell's EM starts on its ``rows`` of the sample: multi-resolution EM asked for,
    and the data over twice those rows (a cell decides for itself, whatever its grid)."""
    return strategy == "sample" and 2 * rows < n_rows


@dataclass(frozen=True)
class SamplePlan:
    """How large a sample a run draws, from which seed, and on how many of its rows each cell
    is fitted.

    Attributes
    ----------
    size : int
        The rows drawn: the most any cell is fitted on.
    seed : int
        The draw's seed.
    cell_sizes : tuple of ((covariance type, K), rows)
        The cells fitted on fewer rows: each on the sample a draw of that many rows gives
        (`RowSample.subset`, the same rows as ``sample_size=rows`` draws). So a cell's fit
        does not depend on the other cells of its grid.
    """

    size: int
    seed: int
    cell_sizes: tuple[tuple[tuple[str, int], int], ...] = ()

    def rows_for(self, cell: tuple[str, int]) -> int:
        """The sample rows ``cell`` is fitted on."""
        return dict(self.cell_sizes).get(cell, self.size)

    def starts_on_sample(self, strategy: str, cell: tuple[str, int], n_rows: int) -> bool:
        """Whether ``cell`` starts on the sample (`cell_starts_on_sample` of its rows)."""
        return cell_starts_on_sample(strategy, self.rows_for(cell), n_rows)

    @property
    def sizes(self) -> list[int]:
        """Every distinct sample size, largest first."""
        return sorted({self.size, *(n for _, n in self.cell_sizes)}, reverse=True)
