"""Out-of-core k-means for Dask input ('k-means||'): dask-ml's k-means|| seeding and Lloyd
iterations. The other methods run scikit-learn on a uniform sample (`dgmm.sampling`)."""

from __future__ import annotations

import numpy as np


def kmeans_parallel_centres(x, n_clusters: int, seed: int) -> np.ndarray:
    """Centres of Lloyd's k-means with k-means|| seeding, computed by dask-ml out of core."""
    from dask_ml.cluster.k_means import k_means

    _, centres, _ = k_means(x, n_clusters, init="k-means||", random_state=seed)
    return np.asarray(centres, dtype=np.float64)
