"""`GaussianMixture`: the scikit-learn-style estimator over the lockstep EM driver."""

from __future__ import annotations

import logging
import os
import warnings
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._candidates import Candidate, best_restart
from ._reduce import map_rows
from ._sweep import Sweep
from .covariance import get_covariance_type
from .criteria import information_criteria
from .em import DataPasses, EMState
from .estep import ApplySpec, apply_block, compute_dtype
from .init import UserInit
from .inputs import InputData, load_input
from .params import GaussianParams
from .persistence import load_model, save_model
from .settings import FitSettings
from .validation import check_n_components, check_number
from .variational import PriorSpec

logger = logging.getLogger(__name__)


class _BaseMixture(DensityMixin, BaseEstimator):
    """What every mixture estimator shares: fitting on the lockstep engine, inference on row
    blocks, sampling and persistence. Subclasses give the parameters, their checks, the
    starting values a user may give and how fitted parameters become attributes."""

    def _prior_spec(self, n_features: int) -> PriorSpec | None:
        """The priors of a variational mixture (None: a mixture fitted by EM)."""
        return None

    def _method(self) -> dict[str, Any]:
        """The fitting method's settings (`FitSettings`): EM."""
        return {"method": "sweep"}

    def _check_parameters(self) -> FitSettings:
        """The parameters checked (scikit-learn's wording), as the engine's settings: one cell,
        every restart kept as scikit-learn's fit keeps it (no screening)."""
        check_number("n_components", self.n_components, Integral, low=1)
        settings = FitSettings(
            self.n_components,
            self.covariance_type,
            n_init=self.n_init,
            init_params=self.init_params,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            random_state=self.random_state,
            strategy=self.strategy,
            sample_size=self.sample_size,
            screen_cells=False,
            screen_degenerate=False,
            **self._method(),
        )
        check_number("verbose", self.verbose, Integral, low=0)
        check_number("verbose_interval", self.verbose_interval, Integral, low=1)
        return settings

    def _check_features(self, data: InputData) -> None:
        """The count of ``data``'s columns, and a warning (scikit-learn's) when named data
        meets a model fitted without names, or unnamed data a model fitted with them."""
        fitted = hasattr(self, "feature_names_in_")
        if fitted and data.feature_names is None:
            warnings.warn(
                f"X does not have valid feature names, but {type(self).__name__} was fitted "
                "with feature names; its columns are taken in the order of "
                "feature_names_in_.",
                UserWarning,
                stacklevel=4,
            )
        elif data.feature_names is not None and not fitted:
            warnings.warn(
                f"X has feature names, but {type(self).__name__} was fitted without feature "
                "names; its columns are taken in their order.",
                UserWarning,
                stacklevel=4,
            )
        n_features = data.x.shape[1]
        if n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )

    # --------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> _BaseMixture:
        """Estimate the parameters with EM, ``n_init`` restarts sharing every data pass.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), Dask array, Zarr array, DataFrame or path
            Training data: numpy-like or Dask rows, a pandas or Dask DataFrame (its column
            names become ``feature_names_in_``), or a path to a Zarr array or to a Parquet,
            CSV or ``.npy`` file.
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights.

        Returns
        -------
        self : GaussianMixture

        Raises
        ------
        ValueError
            On NaN/inf rows (naming how many and the first), wrong shape or dtype, fewer rows
            than components, bad parameter values, or a covariance that degenerates.
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then label the training data; equal to ``fit(X).predict(X)``."""
        return self._fit(X, sample_weight).predict(X)

    def _fit(self, X: Any, sample_weight: Any) -> _BaseMixture:
        """One cell of the selection engine: ``n_init`` restarts (one with a warm start)."""
        settings = self._check_parameters()
        warm = self.warm_start and hasattr(self, "converged_")
        # a warm start continues on the columns it was fitted on, matched by name
        columns = getattr(self, "feature_names_in_", None) if warm else None
        data = load_input(X, sample_weight, columns=columns)
        n_samples, n_features = data.x.shape
        check_n_components(self.n_components, n_samples)
        user = self._user_init(n_features)
        if warm and n_features != self.n_features_in_:
            self._check_features(data)
        # With every start given, all restarts would be identical: run one.
        n_starts = 1 if warm or user.complete else self.n_init
        cands = [
            Candidate(self.covariance_type, self.n_components, r, self.reg_covar)
            for r in range(n_starts)
        ]
        if warm:
            cands[0].state = EMState(self._params(), self.reg_covar, self.lower_bound_)
        passes = DataPasses.over(data)
        sweep = Sweep(
            passes,
            cands,
            settings,
            user=user,
            x_mem=data.x_mem,
            w_mem=data.w_mem,
            progress=lambda phase: self._progress(cands) if phase == "em" else None,
            prior=self._prior_spec(n_features),
        )
        self._say(1, f"Initializing {n_starts} restart(s) with {self.init_params!r}.")
        sweep.run(score=False)
        for c in cands:
            if c.init_error is not None:
                raise ValueError(c.init_error)
            if c.stopped is None and c.state.failed:
                raise ValueError(c.state.error)
        from_candidate(best_restart(cands), self, n_features, passes.n_passes, data.feature_names)
        self.recentred_fraction_ = passes.recentred_fraction()
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _say(self, level: int, msg: str) -> None:
        logger.info(msg)
        if self.verbose >= level:
            print(msg)

    def _progress(self, cands: list[Candidate]) -> None:
        results = [c.state for c in cands if c.state is not None]  # stopped on the sample: None
        it = max(r.n_iter for r in results)
        active = [r for r in results if not (r.converged or r.failed) and r.n_iter < self.max_iter]
        if it % self.verbose_interval == 0 or not active:
            best = max(r.lower_bound for r in results)
            self._say(
                2 if active else 1,
                f"Iteration {it}: {len(active)} of {len(results)} restart(s) running, "
                f"best lower bound {best:.6f}",
            )

    def _set_result(self, r: EMState) -> None:
        p = r.params
        self.weights_, self.means_ = p.weights, p.means
        self.covariances_, self.precisions_cholesky_ = p.covariances, p.precisions_cholesky
        self.converged_, self.n_iter_ = r.converged, r.n_iter
        self.lower_bound_, self.lower_bounds_ = r.lower_bound, list(r.lower_bounds)
        self._set_derived()

    def _set_derived(self) -> None:
        self.precisions_ = get_covariance_type(self.covariance_type).precisions(
            self.precisions_cholesky_
        )

    def _params(self) -> GaussianParams:
        return GaussianParams(
            self.covariance_type,
            np.asarray(self.weights_),
            np.asarray(self.means_),
            np.asarray(self.covariances_),
            np.asarray(self.precisions_cholesky_),
        )

    # --------------------------------------------------------------- inference
    def _apply(self, X: Any, output: str, dtype: Any) -> Any:
        check_is_fitted(self)
        data = load_input(X, columns=getattr(self, "feature_names_in_", None))
        self._check_features(data)
        params = self._params()
        shift = params.weights @ params.means
        spec = ApplySpec(params.shifted(shift, compute_dtype(data.x.dtype)), shift, output)
        if data.lazy:
            n_cols = self.n_components if output == "proba" else None
            return map_rows(data.x, apply_block, spec, dtype, n_cols, f"dgmm-{output}")
        return apply_block(data.x_mem, spec)

    def predict(self, X: Any) -> Any:
        """Component labels of the rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), Dask array, Zarr array, DataFrame or path
            As for ``fit``. A model fitted on named columns takes a table's columns by name
            (in any order) and refuses a missing or an extra one.

        Returns
        -------
        labels : ndarray or dask.array.Array of shape (n_samples,)
            Lazy for Dask / Zarr input.
        """
        return self._apply(X, "labels", np.int64)

    def predict_proba(self, X: Any) -> Any:
        """Posterior probability of each component for every row, shape (n_samples, K)."""
        return self._apply(X, "proba", np.float64)

    def score_samples(self, X: Any) -> Any:
        """Log-likelihood of every row under the model, shape (n_samples,)."""
        return self._apply(X, "score", np.float64)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean per-row log-likelihood of ``X``."""
        return float(np.asarray(self.score_samples(X).mean()))

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw rows from the fitted mixture (scikit-learn's draws for the same seed).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            The component each row was drawn from.
        """
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples}. The sampling requires at least "
                "one sample."
            )
        strategy = get_covariance_type(self.covariance_type)
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        X = np.vstack(
            [
                strategy.sample(rng, mean, self.covariances_, k, int(c))
                for k, (mean, c) in enumerate(zip(self.means_, counts, strict=True))
            ]
        )
        y = np.concatenate([np.full(c, k, dtype=int) for k, c in enumerate(counts)])
        return X, y

    # -------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the fitted model to a directory as JSON + ``.npz`` (no pickle)."""
        check_is_fitted(self)
        save_model(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> _BaseMixture:
        """Read a model written by `save`."""
        return load_model(path, cls)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "precisions_cholesky_")


class GaussianMixture(_BaseMixture):
    """Gaussian mixture fitted by EM as a map-reduce over row chunks of numpy, Dask or Zarr data.

    Each EM iteration is one pass over the data: every row block yields the sufficient
    statistics of every restart (counts, sums, second moments, log-likelihood), which a Dask tree
    reduction adds up for the M-step. Memory is bounded by the chunk size, not the data size.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Covariance parametrisation, as in scikit-learn.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-sample log-likelihood.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the diagonal of covariances.
    max_iter : int, default=100
        Number of EM iterations per restart.
    n_init : int, default=1
        Number of restarts; the best (largest lower bound) is kept. Restarts share every pass
        over the data.
    init_params : {'kmeans', 'k-means||', 'k-means++', 'random', 'random_from_data'}, \
default='kmeans'
        How the starting responsibilities are drawn. For Dask or Zarr input, 'kmeans' and
        'k-means++' run scikit-learn's on a uniform sample of rows drawn in one pass (see
        ``sample_size``), 'random' and 'random_from_data' draw per row, so each costs at most
        two passes whatever the size of the data; 'k-means||' runs dask-ml's out-of-core
        k-means with k-means|| seeding (a pass per Lloyd iteration).
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        User-provided starting parameters, as in scikit-learn.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation; the same value gives the same result on every run.
    warm_start : bool, default=False
        Start the next ``fit`` from the current solution (one restart).
    verbose : int, default=0
        Print progress: 1 for start and end, 2 for every ``verbose_interval`` iterations too.
    verbose_interval : int, default=10
        Iterations between progress messages.
    strategy : {'exact', 'sample'}, default='exact'
        'exact' is scikit-learn's EM on all rows. 'sample' is multi-resolution EM: every
        restart is initialised and fitted to convergence on a uniform sample of rows in memory
        (drawn in one pass), restarts that clearly trail the best there stop, and the others
        continue on all rows under the same convergence test (so ``n_iter_`` counts full-data
        iterations). It saves most passes over large data; data less than twice the sample is
        fitted 'exact'.
    sample_size : int, default=None
        Rows of that sample, which Dask input's 'kmeans' and 'k-means++' also run on; None: 20
        per free parameter, within 10 000 and 100 000 rows.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        Shaped by ``covariance_type`` as in scikit-learn.
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
        EM iterations of the best restart.
    lower_bound_ : float
        Mean log-likelihood of the best restart, before its last M-step.
    lower_bounds_ : list of float
        The best restart's lower bound at every iteration.
    n_features_in_ : int
    feature_names_in_ : ndarray of str, shape (n_features,)
        The column names of the data ``fit`` was given, when it had them (a pandas or Dask
        DataFrame, a Parquet or CSV file); absent otherwise. Data given later to ``predict``
        and the other methods is matched to them by name.
    n_passes_ : int
        Passes over the data made by the last ``fit``.
    recentred_fraction_ : float
        The fraction of the rows of the last ``fit``'s E-step passes (over all restarts) that
        were re-centred on a component's mean for exactness (README *Accuracy*): 0 when every
        row was computed about the data's offset, the fast path. A measure of cost only.

    Notes
    -----
    Differences from scikit-learn:

    * ``fit`` accepts ``sample_weight``; every statistic is weighted.
    * For Dask / Zarr input, ``predict``, ``predict_proba`` and ``score_samples`` return lazy
      Dask arrays, and 'random' initial responsibilities are drawn per block of rows so they do
      not depend on the chunking (for numpy input they are scikit-learn's draws).
    * Parameters are always float64; float32 data is computed in float32 with float64
      accumulation.
    * Second moments are accumulated around an offset near the data, so data far from the
      origin loses no precision.
    * ``save`` / ``load`` store a model as JSON and ``.npz`` arrays, without pickle.

    Examples
    --------
    >>> import numpy as np
    >>> from dgmm import GaussianMixture
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> np.round(np.sort(gm.means_[:, 0]), 1)
    array([ 1., 10.])
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        strategy: str = "exact",
        sample_size: int | None = None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.strategy = strategy
        self.sample_size = sample_size

    # ------------------------------------------------------------------ checks
    def _user_init(self, n_features: int) -> UserInit:
        k = self.n_components
        weights = means = precisions = None
        if self.weights_init is not None:
            weights = np.asarray(self.weights_init, dtype=np.float64)
            if weights.shape != (k,):
                raise ValueError(
                    f"The parameter 'weights' should have the shape of ({k},), "
                    f"but got {weights.shape}"
                )
            if weights.min() < 0.0 or weights.max() > 1.0:
                raise ValueError(
                    "The parameter 'weights' should be in the range [0, 1], but got max value "
                    f"{weights.max():.5f}, min value {weights.min():.5f}"
                )
            if not np.allclose(np.abs(1.0 - weights.sum()), 0.0):
                raise ValueError(
                    "The parameter 'weights' should be normalized, but got "
                    f"sum(weights) = {weights.sum():.5f}"
                )
        if self.means_init is not None:
            means = np.asarray(self.means_init, dtype=np.float64)
            if means.shape != (k, n_features):
                raise ValueError(
                    f"The parameter 'means' should have the shape of {(k, n_features)}, "
                    f"but got {means.shape}"
                )
        if self.precisions_init is not None:
            strategy = get_covariance_type(self.covariance_type)
            precisions = strategy.check_precisions(self.precisions_init, k, n_features)
        return UserInit(weights, means, precisions)

    def _n_parameters(self) -> int:
        return self._params().n_parameters()

    def _loglik_and_rows(self, X: Any) -> tuple[float, int]:
        ll = self.score_samples(X)  # one read and one check of X
        return float(np.asarray(ll.sum())), ll.shape[0]

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better)."""
        ll, n = self._loglik_and_rows(X)
        return information_criteria(ll, self._n_parameters(), n)["bic"]

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        ll, n = self._loglik_and_rows(X)
        return information_criteria(ll, self._n_parameters(), n)["aic"]


def from_candidate(
    c: Candidate,
    gm: GaussianMixture,
    n_features: int,
    n_passes: int,
    feature_names: tuple[str, ...] | None = None,
) -> GaussianMixture:
    """``gm`` holding the fitted parameters of a candidate of the selection engine, and the
    names of the columns it was fitted on (scikit-learn's ``feature_names_in_``, only when
    the data had them)."""
    gm._set_result(c.state)
    gm.n_features_in_ = n_features
    gm.n_passes_ = n_passes
    if feature_names is not None:
        gm.feature_names_in_ = np.asarray(feature_names, dtype=object)
    elif hasattr(gm, "feature_names_in_"):
        del gm.feature_names_in_
    return gm
