"""Out-of-core k-means seeding for Dask input: k-means|| through dask-ml, and our own k-means++.

dask-ml's ``KMeans(init='k-means++')`` no longer runs against current scikit-learn and computes
the whole array into memory, so k-means++ here is D² sampling with one pass per centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._reduce import compute
from .validation import check_block_finite


def kmeans_parallel_centers(x, n_clusters: int, seed: int) -> np.ndarray:
    """Centres of Lloyd's k-means with k-means|| seeding, computed by dask-ml out of core."""
    from dask_ml.cluster.k_means import k_means

    _, centers, _ = k_means(x, n_clusters, init="k-means||", random_state=seed)
    return np.asarray(centers, dtype=np.float64)


@dataclass(frozen=True)
class D2Spec:
    """One D²-sampling pass for several seedings: their centres so far (shifted) and streams."""

    centers_s: list[np.ndarray]
    shift: np.ndarray
    seeds: list[int]
    round: int
    check_finite: bool


Draw = tuple[float, int, int]  # (total D² weight, drawn row, the seeding's seed)


def _d2_kernel(x, w, row0: int, spec: D2Spec) -> list[Draw]:
    """Per seeding: the block's total D² weight and one row drawn proportionally within it."""
    if spec.check_finite:
        check_block_finite(x, row0)
    xs = x.astype(np.float64) - spec.shift
    x2 = np.einsum("nd,nd->n", xs, xs)[:, None]
    out = []
    for c, seed in zip(spec.centers_s, spec.seeds, strict=True):
        d2 = np.maximum(x2 - 2.0 * xs @ c.T + np.einsum("kd,kd->k", c, c), 0.0).min(axis=1)
        if w is not None:
            d2 = d2 * w
        cum = np.cumsum(d2)
        total = float(cum[-1]) if cum.size else 0.0
        if total <= 0.0:
            out.append((0.0, -1, seed))
            continue
        u = np.random.default_rng([seed, spec.round, row0]).random() * total
        row = row0 + int(min(np.searchsorted(cum, u, side="right"), cum.size - 1))
        out.append((total, row, seed))
    return out


def _merge(a: Draw, b: Draw) -> Draw:
    """Keep each side's draw with probability proportional to its total.

    The coin is seeded by the seeding's own seed and the two rows, so a seeding's draws do not
    depend on which other seedings share the pass.
    """
    (ta, ia, seed), (tb, ib, _) = a, b
    if tb <= 0.0:
        return a
    if ta <= 0.0:
        return b
    u = np.random.default_rng([seed, ia, ib]).random()
    return (ta + tb, ib if u * (ta + tb) < tb else ia, seed)


def _d2_combine(parts: list[list[Draw]]) -> list[Draw]:
    out = parts[0]
    for p in parts[1:]:
        out = [_merge(a, b) for a, b in zip(out, p, strict=True)]
    return out


def _rows(x, indices: list[int]) -> dict[int, np.ndarray]:
    uniq = sorted(set(indices))
    values = np.asarray(compute(x[uniq])[0], dtype=np.float64)
    return dict(zip(uniq, values, strict=True))


def kmeans_plusplus_many(
    passes, requests: list[tuple[int, int]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k-means++ seed rows (indices, values) for several (seed, n_clusters) requests, sharing
    every pass.

    The first seed of each is a uniform row; each next one is drawn by D² sampling in a pass
    that serves every request still needing seeds, so ``max(n_clusters) − 1`` passes in all.
    """
    x = passes.blocks.x
    rngs = [np.random.default_rng(seed) for seed, _ in requests]
    indices = [[int(r.integers(x.shape[0]))] for r in rngs]
    rows = _rows(x, [i[0] for i in indices])
    centers = [[rows[i[0]]] for i in indices]
    for rnd in range(1, max(k for _, k in requests)):
        todo = [j for j, (_, k) in enumerate(requests) if k > rnd]
        centers_s = [np.array(centers[j]) - passes.shift for j in todo]
        seeds = [requests[j][0] for j in todo]
        draws = passes.run(
            _d2_kernel,
            lambda check, c=centers_s, s=seeds, r=rnd: D2Spec(c, passes.shift, s, r, check),
            _d2_combine,
            "dgmm-kmeans++",
        )
        for j, (total, idx, _) in zip(todo, draws, strict=True):
            if total <= 0.0 or idx < 0:
                idx = int(rngs[j].integers(x.shape[0]))  # every row coincides with a centre
            indices[j].append(idx)
        rows = _rows(x, [indices[j][-1] for j in todo])
        for j in todo:
            centers[j].append(rows[indices[j][-1]])
    return [(np.array(i), np.array(c)) for i, c in zip(indices, centers, strict=True)]
