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

from ._reduce import one_blas_thread
from ._rng import choice_without_replacement
from .covariance import CovarianceType, DegenerateCovarianceError, get_covariance_type
from .em import DataPasses
from .estep import StatsJob
from .kmeans import kmeans_parallel_centres
from .mstep import m_step
from .options import INIT_METHODS
from .params import GaussianParams
from .sources import Labels, NearestCentre, RandomUniform, Responsibilities, RowIndices
from .stats import SuffStats
from .variational import PriorSpec, VariationalParams, variational_m_step

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DenseResp:
    """Given responsibilities of every row (scikit-learn's in-memory 'random' init)."""

    resp: np.ndarray
    centres = None  # soft random responsibilities: every component starts near the overall mean

    @property
    def n_components(self) -> int:
        return self.resp.shape[1]

    def __call__(self, xs, row0):
        return self.resp[row0 : row0 + xs.shape[0]].T.astype(xs.dtype), None


@dataclass(frozen=True)
class AllRows:
    """Every row in one component: the data's own mean and covariance (the priors' defaults)."""

    n_components = 1
    centres = None

    def __call__(self, xs, row0):
        return np.ones((1, xs.shape[0]), dtype=xs.dtype), None


@dataclass(frozen=True)
class UserInit:
    """Validated ``weights_init`` / ``means_init`` / ``precisions_init`` (each may be None)."""

    weights: np.ndarray | None = None
    means: np.ndarray | None = None
    precisions: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        return self.weights is not None and self.means is not None and self.precisions is not None


@dataclass(frozen=True)
class InitRequest:
    """One candidate to initialise: its covariance type, size, method and user-given parts."""

    strategy: CovarianceType
    n_components: int
    method: str
    user: UserInit = UserInit()
    reg_covar: float = 1e-6
    # the random stream this request draws from (requests may share one, drawn in order);
    # None: the stream given to `initial_parameters`
    rng: np.random.RandomState | None = None
    # a variational mixture's priors (None: a Gaussian mixture fitted by EM)
    prior: PriorSpec | None = None

    @property
    def cell(self) -> tuple[str, int]:
        return self.strategy.name, self.n_components


def _seed(rng: np.random.RandomState) -> int:
    return int(rng.randint(np.iinfo(np.int32).max))


def make_source(
    method: str,
    passes: DataPasses,
    n_components: int,
    rng: np.random.RandomState,
    x_mem: np.ndarray | None,
    w_mem: np.ndarray | None,
    sample_rows: int | None = None,
) -> Responsibilities:
    """The responsibility source of one restart; consumes ``rng`` as scikit-learn does.
    'kmeans' and 'k-means++' on Dask input run on the sample's ``sample_rows`` (all of it:
    None)."""
    k = n_components
    n = passes.blocks.x.shape[0]
    # Hard assignments are framed on their own centres where these are known: the moments of a
    # cluster far from the shift then do not cancel (a one-row component's variance is exactly 0).
    if method == "random_from_data":
        idx = choice_without_replacement(rng, n, k)
        return RowIndices(idx, k, None if x_mem is None else x_mem[idx] - passes.shift)
    if x_mem is not None:
        if method == "kmeans":
            km = KMeans(n_clusters=k, n_init=1, random_state=rng)
            labels = km.fit(x_mem, sample_weight=w_mem).labels_
            return Labels(labels, k, km.cluster_centers_.astype(np.float64) - passes.shift)
        if method == "k-means++":
            _, idx = kmeans_plusplus(x_mem, k, random_state=rng, sample_weight=w_mem)
            return RowIndices(idx, k, x_mem[idx] - passes.shift)
        if method == "random":
            resp = rng.uniform(size=(n, k))
            return DenseResp(resp / resp.sum(axis=1)[:, None])
    if method == "k-means||":
        x = passes.first_read_array()
        scheduler = passes.blocks.scheduler or dask.config.get("scheduler", None)
        with dask.config.set(scheduler=scheduler):
            centres = kmeans_parallel_centres(x, k, _seed(rng))
        return NearestCentre(centres - passes.shift)
    if method in ("kmeans", "k-means++"):
        # scikit-learn's own k-means / k-means++ on the uniform sample: one pass to draw it
        # (shared by every request), whatever N and K
        s = passes.sample(sample_rows)
        if s.w is not None and not np.sum(s.w) > 0:
            raise ValueError(
                f"every one of the {s.x.shape[0]} rows sampled for initialisation has zero "
                "weight; give a larger sample_size"
            )
        if s.x.shape[0] < k:
            raise ValueError(
                f"the sample of {s.x.shape[0]} rows drawn for initialisation holds fewer rows "
                f"than n_components={k}; give a larger sample_size"
            )
        # in one thread: scikit-learn's k-means sums per thread, so its centres' last bits
        # would depend on the machine's cores (a stored fit must be what any machine gives);
        # on a sample one thread is about as fast, and faster on small ones
        with one_blas_thread():
            if method == "kmeans":
                km = KMeans(n_clusters=k, n_init=1, random_state=rng)
                centres = km.fit(s.x, sample_weight=s.w).cluster_centers_.astype(np.float64)
                return NearestCentre(centres - passes.shift)
            _, idx = kmeans_plusplus(s.x, k, random_state=rng, sample_weight=s.w)
        return RowIndices(s.index[idx], k, s.x[idx].astype(np.float64) - passes.shift)
    if method == "random":
        return RandomUniform(_seed(rng), k)
    raise ValueError(f"init_params must be one of {INIT_METHODS}, got {method!r}.")


def initial_parameters(
    passes: DataPasses,
    requests: list[InitRequest],
    rng: np.random.RandomState | None,
    x_mem: np.ndarray | None = None,
    w_mem: np.ndarray | None = None,
) -> list[GaussianParams | DegenerateCovarianceError]:
    """Starting parameters of every request, sharing the passes over the data.

    As in scikit-learn, weights start as counts / n_samples, covariances are estimated around the
    responsibilities' own means, and any of ``weights_init``, ``means_init``, ``precisions_init``
    replaces its estimate; a request with all three given reads no data. Sources are drawn from
    ``rng`` in request order. A request
    whose starting covariance degenerates gets the error in its place.

    For Dask input every method but 'k-means||' costs at most two passes whatever N and K: one
    draws the uniform sample that 'kmeans' and 'k-means++' run scikit-learn on (shared by all
    requests), one turns every source into its statistics.
    """
    sources: list[Responsibilities | None] = [
        None
        if r.user.complete
        else make_source(
            r.method,
            passes,
            r.n_components,
            rng if r.rng is None else r.rng,
            x_mem,
            w_mem,
            None if passes.sampling is None else passes.sampling.rows_for(r.cell),
        )
        for r in requests
    ]
    todo = [i for i, s in enumerate(sources) if s is not None]
    jobs = [StatsJob(sources[i], requests[i].strategy) for i in todo]
    # The priors' data-dependent defaults ride along in the same pass: the data's covariance
    # for full and tied, its diagonal for diag and spherical (each type always from the same
    # statistic, so a fit's priors do not depend on which other fits share the pass)
    kinds = {
        _MOMENTS_OF[r.strategy.name] for r in requests if r.prior is not None and r.prior.needs_data
    }
    kinds_order = sorted(kinds)
    jobs += [StatsJob(AllRows(), get_covariance_type(kind)) for kind in kinds_order]
    stats = passes.statistics(jobs, "dgmm-init") if jobs else []
    moments = {
        kind: data_moments(st, passes.shift, kind == "full")
        for kind, st in zip(kinds_order, stats[len(todo) :], strict=True)
    }
    out: list[GaussianParams | VariationalParams | DegenerateCovarianceError] = []
    estimates = dict(zip(todo, stats[: len(todo)], strict=True))
    for i, r in enumerate(requests):
        try:
            if r.prior is not None:
                est = estimates[i]
                d = est.sx.shape[1]
                data = moments.get(_MOMENTS_OF[r.strategy.name], (None, None))
                prior = r.prior.resolve(r.strategy, r.n_components, d, *data)
                out.append(
                    variational_m_step(
                        est,
                        r.strategy,
                        prior,
                        r.reg_covar,
                        passes.shift,
                        passes.eps,
                        weight_scale=passes.weight_scale(est),
                    )
                )
                continue
            est = estimates.get(i)
            if est is not None:
                est = m_step(
                    est,
                    r.strategy,
                    r.reg_covar,
                    passes.shift,
                    passes.eps,
                    weights_denominator=est.n,
                    weight_scale=passes.weight_scale(est),
                )
            out.append(_apply_user(est, r.strategy, r.user))
        except DegenerateCovarianceError as e:
            out.append(e)
    return out


_MOMENTS_OF = {"full": "full", "tied": "full", "diag": "diag", "spherical": "diag"}


def data_moments(stats: SuffStats, shift: np.ndarray, full: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1, as ``np.cov``; only its diagonal unless ``full``) of the
    rows, from their statistics as one component about ``shift``."""
    n = stats.n
    d = stats.sx[0] / n
    if full:
        cov = (stats.sxx[0] / n - np.outer(d, d)) * (n / (n - 1))
    else:
        cov = np.diag((stats.sxx[0] / n - d**2) * (n / (n - 1)))
    return shift + d, cov


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
