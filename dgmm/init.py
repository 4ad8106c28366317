"""Initialisation: starting parameters for every restart, computed in lockstep.

Each method yields a responsibility source (hard labels, chosen rows, random weights); one shared
pass over the data turns the sources of all restarts into their starting parameters. For
in-memory input the methods call scikit-learn exactly as its ``GaussianMixture`` does, so the same
``random_state`` gives the same start; Dask input uses out-of-core equivalents.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dask
import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from .covariance import CovarianceType
from .em import DataPasses
from .estep import (
    Labels,
    NearestCenter,
    RandomUniform,
    Responsibilities,
    RowIndices,
    StatsJob,
)
from .kmeans import kmeans_parallel_centers, kmeans_plusplus_indices
from .mstep import m_step
from .params import GaussianParams

logger = logging.getLogger(__name__)

INIT_METHODS = ("kmeans", "k-means||", "k-means++", "random", "random_from_data")


@dataclass(frozen=True)
class DenseResp:
    """Given responsibilities of every row (scikit-learn's in-memory 'random' init)."""

    resp: np.ndarray

    @property
    def n_components(self) -> int:
        return self.resp.shape[1]

    def __call__(self, xs, row0):
        return self.resp[row0 : row0 + xs.shape[0]].astype(xs.dtype), None


@dataclass(frozen=True)
class UserInit:
    """Validated ``weights_init`` / ``means_init`` / ``precisions_init`` (each may be None)."""

    weights: np.ndarray | None = None
    means: np.ndarray | None = None
    precisions: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        return self.weights is not None and self.means is not None and self.precisions is not None


def _seed(rng: np.random.RandomState) -> int:
    return int(rng.randint(np.iinfo(np.int32).max))


def make_source(
    method: str,
    passes: DataPasses,
    n_components: int,
    rng: np.random.RandomState,
    x_mem: np.ndarray | None,
    w_mem: np.ndarray | None,
) -> Responsibilities:
    """The responsibility source of one restart; consumes ``rng`` as scikit-learn does."""
    k = n_components
    n = passes.blocks.x.shape[0]
    if method == "random_from_data":
        return RowIndices(rng.choice(n, size=k, replace=False), k)
    if x_mem is not None:
        if method == "kmeans":
            km = KMeans(n_clusters=k, n_init=1, random_state=rng)
            return Labels(km.fit(x_mem, sample_weight=w_mem).labels_, k)
        if method == "k-means++":
            _, idx = kmeans_plusplus(x_mem, k, random_state=rng, sample_weight=w_mem)
            return RowIndices(idx, k)
        if method == "random":
            resp = rng.uniform(size=(n, k))
            return DenseResp(resp / resp.sum(axis=1)[:, None])
    if method in ("kmeans", "k-means||"):
        x = passes.first_read_array()
        with dask.config.set(
            scheduler=passes.blocks.scheduler or dask.config.get("scheduler", None)
        ):
            centers = kmeans_parallel_centers(x, k, _seed(rng))
        return NearestCenter(centers - passes.shift)
    if method == "k-means++":
        return RowIndices(kmeans_plusplus_indices(passes, k, _seed(rng)), k)
    if method == "random":
        return RandomUniform(_seed(rng), k)
    raise ValueError(f"init_params must be one of {INIT_METHODS}, got {method!r}.")


def initial_parameters(
    passes: DataPasses,
    strategy: CovarianceType,
    n_components: int,
    method: str,
    n_init: int,
    rng: np.random.RandomState,
    user: UserInit,
    reg_covar: float,
    x_mem: np.ndarray | None = None,
    w_mem: np.ndarray | None = None,
) -> list[GaussianParams]:
    """Starting parameters of ``n_init`` restarts, sharing one pass over the data.

    As in scikit-learn, weights start as counts / n_samples, covariances are estimated around the
    responsibilities' own means, and any of ``weights_init``, ``means_init``, ``precisions_init``
    replaces its estimate. With all three given no data is read and one start suffices (every
    restart would be identical).
    """
    if user.complete:
        return [_apply_user(None, strategy, user)]
    sources = [make_source(method, passes, n_components, rng, x_mem, w_mem) for _ in range(n_init)]
    stats = passes.statistics([StatsJob(s, strategy) for s in sources], name="dgmm-init")
    return [
        _apply_user(
            m_step(st, strategy, reg_covar, passes.shift, passes.eps, weights_denominator=st.n),
            strategy,
            user,
        )
        for st in stats
    ]


def _apply_user(
    est: GaussianParams | None, strategy: CovarianceType, user: UserInit
) -> GaussianParams:
    weights = user.weights if user.weights is not None else est.weights
    means = user.means if user.means is not None else est.means
    if user.precisions is None:
        return GaussianParams(
            strategy.name, weights, means, est.covariances, est.precisions_cholesky
        )
    prec_chol = strategy.precision_cholesky_from_precisions(user.precisions)
    covariances = strategy.covariances_from_precision_cholesky(prec_chol)
    return GaussianParams(strategy.name, weights, means, covariances, prec_chol)
