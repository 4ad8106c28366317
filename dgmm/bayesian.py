"""`BayesianGaussianMixture`: scikit-learn's variational mixture on the lockstep engine."""

from __future__ import annotations

from typing import Any

import numpy as np

from .em import EMState
from .estimator import _BaseMixture
from .init import UserInit
from .options import PRIOR_SETTINGS
from .params import GaussianParams
from .variational import (
    Prior,
    PriorSpec,
    VariationalParams,
    check_prior_spec,
    mean_weights,
)


class BayesianGaussianMixture(_BaseMixture):
    """Variational Bayesian Gaussian mixture, fitted as a map-reduce over row chunks.

    scikit-learn's ``BayesianGaussianMixture`` on numpy, Dask or Zarr data: a Dirichlet-process
    (stick-breaking) or Dirichlet prior on the weights and Gaussian-Wishart priors on the
    components. Fitted at a generous ``n_components``, it leaves the components the data do not
    need with weights near zero, so one fit can stand in for a sweep over K. Every iteration is
    one pass over the data computing the same statistics as `GaussianMixture` plus
    ``Σ r log r`` for the lower bound; restarts share every pass.

    Parameters
    ----------
    n_components : int, default=1
        The most components the fit may use.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound (a total, as scikit-learn's).
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
    init_params : {'kmeans', 'k-means||', 'k-means++', 'random', 'random_from_data'}, \
default='kmeans'
        As in `GaussianMixture`.
    weight_concentration_prior_type : {'dirichlet_process', 'dirichlet_distribution'}, \
default='dirichlet_process'
    weight_concentration_prior : float, default=None
        1 / n_components when None. Smaller values put more weight on fewer components.
    mean_precision_prior : float, default=None
        1 when None.
    mean_prior : array-like of shape (n_features,), default=None
        The data's mean when None.
    degrees_of_freedom_prior : float, default=None
        n_features when None; must exceed n_features − 1.
    covariance_prior : float or array-like, default=None
        The data's covariance (ddof=1; its diagonal for 'diag', their mean for 'spherical')
        when None. Data-dependent defaults come from the initialisation pass: no extra pass.
    random_state, warm_start, verbose, verbose_interval
        As in `GaussianMixture`.
    strategy : {'exact', 'sample'}, default='exact'
    sample_size : int, default=None
        As in `GaussianMixture` ('sample': the priors' defaults then come from the sample).

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_
        Posterior means, as scikit-learn's.
    weight_concentration_ : tuple of two ndarrays or ndarray
        The Beta parameters of the stick-breaking process, or the Dirichlet's.
    mean_precision_, degrees_of_freedom_ : ndarray
    weight_concentration_prior_, mean_precision_prior_, mean_prior_,
    degrees_of_freedom_prior_, covariance_prior_
        The priors used.
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_, n_passes_
        As in `GaussianMixture`; ``lower_bound_`` is the variational bound (a total).

    Notes
    -----
    The same ``random_state`` gives scikit-learn's fit on numpy input. ``fit`` accepts
    ``sample_weight`` (scikit-learn's does not). There is no ``bic`` / ``aic``: the lower bound
    and the weights choose the components.

    Examples
    --------
    >>> import numpy as np
    >>> from dgmm import BayesianGaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (300, 2)), rng.normal(8, 1, (300, 2))])
    >>> bgm = BayesianGaussianMixture(n_components=6, random_state=0).fit(X)
    >>> int((bgm.weights_ > 0.01).sum())
    2
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
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior: Any = None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior: Any = None,
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
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.strategy = strategy
        self.sample_size = sample_size

    # what `save` stores besides scikit-learn's mixture attributes
    _FITTED_ARRAYS = (
        "weight_concentration_",
        "mean_precision_",
        "degrees_of_freedom_",
        "mean_prior_",
        "covariance_prior_",
    )
    _FITTED_SCALARS = (
        "weight_concentration_prior_",
        "mean_precision_prior_",
        "degrees_of_freedom_prior_",
    )

    def _set_derived(self) -> None:
        super()._set_derived()
        c = self.weight_concentration_
        if self.weight_concentration_prior_type == "dirichlet_process" and not isinstance(c, tuple):
            self.weight_concentration_ = (np.asarray(c[0]), np.asarray(c[1]))  # as loaded

    def _user_init(self, n_features: int) -> UserInit:
        return UserInit()

    def _method(self) -> dict[str, Any]:
        """The fitting method's settings (`FitSettings`): variational, with these priors."""
        prior = {name: getattr(self, name) for name in PRIOR_SETTINGS}
        return {"method": "variational", "prior": prior}

    def _prior_spec(self, n_features: int) -> PriorSpec:
        spec = PriorSpec(
            self.weight_concentration_prior_type,
            self.weight_concentration_prior,
            self.mean_precision_prior,
            self.mean_prior,
            self.degrees_of_freedom_prior,
            self.covariance_prior,
        )
        return check_prior_spec(spec, self.covariance_type, n_features)

    def _set_result(self, r: EMState) -> None:
        p: VariationalParams = r.params
        c = p.weight_concentration
        self.weight_concentration_ = (c[0], c[1]) if p.prior.process else c
        self.mean_precision_ = p.mean_precision
        self.degrees_of_freedom_ = p.degrees_of_freedom
        prior = p.prior
        self.weight_concentration_prior_ = prior.weight_concentration
        self.mean_precision_prior_ = prior.mean_precision
        self.mean_prior_ = prior.mean
        self.degrees_of_freedom_prior_ = prior.degrees_of_freedom
        self.covariance_prior_ = prior.covariance
        super()._set_result(r)

    def _params(self) -> VariationalParams:
        process = self.weight_concentration_prior_type == "dirichlet_process"
        c = np.asarray(self.weight_concentration_, dtype=np.float64)
        gaussian = GaussianParams(
            self.covariance_type,
            mean_weights(c, process),
            np.asarray(self.means_),
            np.asarray(self.covariances_),
            np.asarray(self.precisions_cholesky_),
        )
        prior = Prior(
            process,
            float(self.weight_concentration_prior_),
            float(self.mean_precision_prior_),
            np.asarray(self.mean_prior_),
            float(self.degrees_of_freedom_prior_),
            np.asarray(self.covariance_prior_),
        )
        return VariationalParams(
            gaussian,
            c,
            np.asarray(self.mean_precision_, dtype=np.float64),
            np.asarray(self.degrees_of_freedom_, dtype=np.float64),
            prior,
        )
