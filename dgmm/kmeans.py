"""Out-of-core k-means seeding for Dask input: k-means|| through dask-ml, and our own k-means++.

dask-ml's ``KMeans(init='k-means++')`` no longer runs against current scikit-learn and computes
the whole array into memory, so k-means++ here is D² sampling with one pass per centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .validation import check_block_finite


def kmeans_parallel_centers(x, n_clusters: int, seed: int) -> np.ndarray:
    """Centres of Lloyd's k-means with k-means|| seeding, computed by dask-ml out of core."""
    from dask_ml.cluster.k_means import k_means

    _, centers, _ = k_means(x, n_clusters, init="k-means||", random_state=seed)
    return np.asarray(centers, dtype=np.float64)


@dataclass(frozen=True)
class D2Spec:
    """One D²-sampling pass: the centres chosen so far (shifted) and the stream to draw from."""

    centers_s: np.ndarray
    shift: np.ndarray
    seed: int
    round: int
    check_finite: bool


def _d2_kernel(x, w, row0: int, spec: D2Spec) -> tuple[float, int, int, int]:
    """Block total of D² weights and one row drawn within the block proportionally to them."""
    if spec.check_finite:
        check_block_finite(x, row0)
    xs = x.astype(np.float64) - spec.shift
    c = spec.centers_s
    d2 = np.maximum(
        np.einsum("nd,nd->n", xs, xs)[:, None] - 2.0 * xs @ c.T + np.einsum("kd,kd->k", c, c),
        0.0,
    ).min(axis=1)
    if w is not None:
        d2 = d2 * w
    cum = np.cumsum(d2)
    total = float(cum[-1]) if cum.size else 0.0
    if total <= 0.0:
        return 0.0, -1, spec.seed, spec.round
    u = np.random.default_rng([spec.seed, spec.round, row0]).random() * total
    return (
        total,
        row0 + int(min(np.searchsorted(cum, u, side="right"), cum.size - 1)),
        spec.seed,
        spec.round,
    )


def _d2_combine(parts: list[tuple[float, int, int, int]]) -> tuple[float, int, int, int]:
    """Merge draws: keep each side with probability proportional to its total."""
    total, idx, seed, rnd = parts[0]
    for t, j, _, _ in parts[1:]:
        if t <= 0.0:
            continue
        u = np.random.default_rng([seed, rnd, max(idx, 0), j]).random()
        if total <= 0.0 or u * (total + t) < t:
            idx = j
        total += t
    return total, idx, seed, rnd


def kmeans_plusplus_indices(passes, n_clusters: int, seed: int) -> np.ndarray:
    """Row indices of k-means++ seeds: the first uniform, each next by D² sampling (one pass)."""
    rng = np.random.default_rng(seed)
    x = passes.blocks.x
    indices = [int(rng.integers(x.shape[0]))]
    centers = [np.asarray(x[indices[0]].compute(), dtype=np.float64)]
    for r in range(1, n_clusters):
        spec = D2Spec(np.array(centers) - passes.shift, passes.shift, seed, r, not passes.checked)
        total, idx, _, _ = passes.blocks.map_reduce(_d2_kernel, spec, _d2_combine, "dgmm-kmeans++")
        passes.checked = True
        if total <= 0.0 or idx < 0:
            idx = int(rng.integers(x.shape[0]))  # every row already coincides with a centre
        indices.append(idx)
        centers.append(np.asarray(x[idx].compute(), dtype=np.float64))
    return np.array(indices)
