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
    """One D²-sampling pass for several seedings: their centres so far (shifted) and streams."""

    centers_s: list[np.ndarray]
    shift: np.ndarray
    seeds: list[int]
    round: int
    check_finite: bool


Draw = tuple[float, int]


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
            out.append((0.0, -1))
            continue
        u = np.random.default_rng([seed, spec.round, row0]).random() * total
        out.append((total, row0 + int(min(np.searchsorted(cum, u, side="right"), cum.size - 1))))
    return out


def _merge(a: Draw, b: Draw, seed: int) -> Draw:
    """Keep each side's draw with probability proportional to its total."""
    (ta, ia), (tb, ib) = a, b
    if tb <= 0.0:
        return a
    if ta <= 0.0:
        return b
    u = np.random.default_rng([seed, ia, ib]).random()
    return (ta + tb, ib if u * (ta + tb) < tb else ia)


def _d2_combine(parts: list[list[Draw]]) -> list[Draw]:
    out = parts[0]
    for p in parts[1:]:
        out = [_merge(a, b, i) for i, (a, b) in enumerate(zip(out, p, strict=True))]
    return out


def _rows(x, indices: list[int]) -> dict[int, np.ndarray]:
    uniq = sorted(set(indices))
    values = np.asarray(x[uniq].compute(), dtype=np.float64)
    return dict(zip(uniq, values, strict=True))


def kmeans_plusplus_many(passes, requests: list[tuple[int, int]]) -> list[np.ndarray]:
    """k-means++ seed rows for several (seed, n_clusters) requests, sharing every pass.

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
        spec = D2Spec(
            [np.array(centers[j]) - passes.shift for j in todo],
            passes.shift,
            [requests[j][0] for j in todo],
            rnd,
            not passes.checked,
        )
        draws = passes.blocks.map_reduce(_d2_kernel, spec, _d2_combine, "dgmm-kmeans++")
        passes.checked = True
        passes.n_passes += 1
        for j, (total, idx) in zip(todo, draws, strict=True):
            if total <= 0.0 or idx < 0:
                idx = int(rngs[j].integers(x.shape[0]))  # every row coincides with a centre
            indices[j].append(idx)
        rows = _rows(x, [indices[j][-1] for j in todo])
        for j in todo:
            centers[j].append(rows[indices[j][-1]])
    return [np.array(i) for i in indices]
