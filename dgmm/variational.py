"""The variational Bayesian Gaussian mixture on the same statistics (pure numpy).

scikit-learn's ``BayesianGaussianMixture``: a Dirichlet (or Dirichlet-process, stick-breaking)
prior on the weights and a Gaussian-Wishart prior on each component. Its E-step is the mixture's
with expected log weights and per-component constants in place of ``log π``; its M-step turns
the same counts, means and covariances (the Gaussian M-step's) into posterior parameters; its
lower bound needs one more statistic, ``Σ r log r``, which scoring passes already accumulate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
from scipy.special import betaln, digamma, gammaln

from .covariance import CovarianceType, get_covariance_type
from .mstep import gaussian_estimates, precision_cholesky
from .params import GaussianParams, ShiftedParams, n_parameters
from .stats import SuffStats

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@dataclass(frozen=True)
class Prior:
    """The resolved priors of a variational mixture (scikit-learn's trailing-underscore ones).

    Attributes
    ----------
    process : bool
        Dirichlet-process (stick-breaking) weights, else a Dirichlet distribution.
    weight_concentration, mean_precision, degrees_of_freedom : float
    mean : ndarray of shape (n_features,)
    covariance : ndarray or float
        Shaped by the covariance type: (D, D), (D,) or a scalar.
    """

    process: bool
    weight_concentration: float
    mean_precision: float
    mean: np.ndarray
    degrees_of_freedom: float
    covariance: np.ndarray


@dataclass(frozen=True)
class PriorSpec:
    """User settings of the priors; None parts come from the data (mean and covariance of X).

    ``resolve`` fills them from the data's moments, which the initialisation pass computes.
    """

    weight_concentration_prior_type: str = "dirichlet_process"
    weight_concentration_prior: float | None = None
    mean_precision_prior: float | None = None
    mean_prior: np.ndarray | None = None
    degrees_of_freedom_prior: float | None = None
    covariance_prior: np.ndarray | float | None = None

    @property
    def needs_data(self) -> bool:
        return self.mean_prior is None or self.covariance_prior is None

    def resolve(
        self,
        strategy: CovarianceType,
        n_components: int,
        n_features: int,
        mean: np.ndarray | None,
        covariance: np.ndarray | None,
    ) -> Prior:
        """The priors, data-dependent defaults taken from ``mean`` and ``covariance`` (ddof=1)."""
        return Prior(
            self.weight_concentration_prior_type == "dirichlet_process",
            1.0 / n_components
            if self.weight_concentration_prior is None
            else float(self.weight_concentration_prior),
            1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior),
            mean if self.mean_prior is None else self.mean_prior,
            float(n_features)
            if self.degrees_of_freedom_prior is None
            else float(self.degrees_of_freedom_prior),
            strategy.prior_covariance(covariance)
            if self.covariance_prior is None
            else self.covariance_prior,
        )


# The posterior arrays a checkpoint keeps of a variational fit.
VARIATIONAL_ARRAYS = ("weight_concentration", "mean_precision", "degrees_of_freedom")


@dataclass(frozen=True)
class VariationalParams:
    """Posterior parameters of a variational mixture, with the Gaussian view of them.

    ``gaussian`` holds ``weights_`` (posterior mean weights), ``means_``, ``covariances_`` and
    ``precisions_cholesky_`` as scikit-learn's attributes; ``weight_concentration`` is (K,) for
    a Dirichlet distribution or (2, K) for the stick-breaking process.
    """

    gaussian: GaussianParams
    weight_concentration: np.ndarray
    mean_precision: np.ndarray
    degrees_of_freedom: np.ndarray
    prior: Prior

    # What the engine asks (see `GaussianParams`): the evidence bound needs the E-step's
    # ``Σ r log r``, is a total over rows, and a fit on a sample is judged by its rows'
    # log-likelihoods and by each row's term of the bound.
    bound_needs_entropy: ClassVar[bool] = True
    bound_is_total: ClassVar[bool] = True
    judged: ClassVar[tuple[str, ...]] = ("score", "evidence")
    evidence_output: ClassVar[str] = "evidence"

    def selection_size(self, weight_threshold: float) -> tuple[int, dict]:
        """The parameters of the effective components (weight above ``weight_threshold``),
        which a criterion counts, and the effective count and weights a report shows."""
        used = int(np.sum(self.weights > weight_threshold))
        size = n_parameters(self.covariance_type, used, self.n_features)
        return size, {"effective_components": used, "weights": self.weights.tolist()}

    def checkpoint_arrays(self) -> dict[str, np.ndarray]:
        """The posterior's arrays and the priors' mean and covariance."""
        arrays = {a: np.asarray(getattr(self, a)) for a in VARIATIONAL_ARRAYS}
        arrays.update(
            prior_mean=np.asarray(self.prior.mean),
            prior_covariance=np.asarray(self.prior.covariance),
        )
        return arrays

    def checkpoint_prior(self) -> list | None:
        """The priors' scalars, in the order a checkpoint keeps them."""
        q = self.prior
        return [q.process, q.weight_concentration, q.mean_precision, q.degrees_of_freedom]

    # the Gaussian view: what the E-step kernels, checks and reports read
    covariance_type = property(lambda self: self.gaussian.covariance_type)
    strategy = property(lambda self: self.gaussian.strategy)
    weights = property(lambda self: self.gaussian.weights)
    means = property(lambda self: self.gaussian.means)
    covariances = property(lambda self: self.gaussian.covariances)
    precisions_cholesky = property(lambda self: self.gaussian.precisions_cholesky)
    n_components = property(lambda self: self.gaussian.n_components)
    n_features = property(lambda self: self.gaussian.n_features)

    def n_parameters(self) -> int:
        return self.gaussian.n_parameters()

    def degenerate(
        self, n_rows: float, reg_covar: float, columns: Sequence[str] | None = None
    ) -> str | None:
        return None  # the priors keep every covariance away from singular

    def log_weight_terms(self) -> np.ndarray:
        """Per component: expected ``log π`` plus the Wishart constants of the E-step."""
        d = self.gaussian.n_features
        dof = self.degrees_of_freedom
        log_lambda = d * math.log(2.0) + np.sum(
            digamma(0.5 * (dof - np.arange(d)[:, None])), axis=0
        )
        return (
            expected_log_weights(self.weight_concentration, self.prior.process)
            - 0.5 * d * np.log(dof)
            + 0.5 * (log_lambda - d / self.mean_precision)
        )

    def shifted(self, shift: np.ndarray, dtype: np.dtype) -> ShiftedParams:
        g = self.gaussian.shifted(shift, dtype)
        return replace(g, log_weights=self.log_weight_terms().astype(dtype))


def expected_log_weights(concentration: np.ndarray, process: bool) -> np.ndarray:
    """``E[log π_k]`` under the Dirichlet (process) posterior."""
    if process:
        a, b = concentration
        digamma_sum = digamma(a + b)
        return digamma(a) - digamma_sum + np.hstack((0, np.cumsum(digamma(b) - digamma_sum)[:-1]))
    return digamma(concentration) - digamma(np.sum(concentration))


def mean_weights(concentration: np.ndarray, process: bool) -> np.ndarray:
    """The posterior mean weights (scikit-learn's ``weights_``)."""
    if process:
        a, b = concentration
        total = a + b
        w = a / total * np.hstack((1, np.cumprod(b / total)[:-1]))
        return w / np.sum(w)
    return concentration / np.sum(concentration)


def variational_m_step(
    stats: SuffStats,
    strategy: CovarianceType,
    prior: Prior,
    reg_covar: float,
    shift: np.ndarray,
    eps: float,
    weight_scale: float = 1.0,
) -> VariationalParams:
    """The posterior parameters from one pass's statistics (scikit-learn's ``_m_step``, and its
    ``_initialize`` on the statistics of the initial responsibilities)."""
    nk, xk, sk = gaussian_estimates(stats, strategy, reg_covar, shift, eps, weight_scale)
    if prior.process:
        tail = np.hstack((np.cumsum(nk[::-1])[-2::-1], 0))
        concentration = np.stack([1.0 + nk, prior.weight_concentration + tail])
    else:
        concentration = prior.weight_concentration + nk
    mean_precision = prior.mean_precision + nk
    means = (prior.mean_precision * prior.mean + nk[:, None] * xk) / mean_precision[:, None]
    dof, covariances = strategy.wishart(
        nk,
        sk,
        xk - prior.mean,
        prior.covariance,
        prior.degrees_of_freedom,
        prior.mean_precision,
        mean_precision,
    )
    prec_chol = precision_cholesky(strategy, covariances, reg_covar)
    gaussian = GaussianParams(
        strategy.name, mean_weights(concentration, prior.process), means, covariances, prec_chol
    )
    return VariationalParams(gaussian, concentration, mean_precision, dof, prior)


def lower_bound(entropy: float, params: VariationalParams) -> float:
    """scikit-learn's variational lower bound (constants dropped) after an M-step, given the
    E-step's ``Σ r log r`` (``entropy``, ≤ 0)."""
    g = params.gaussian
    k, d = g.means.shape
    dof = params.degrees_of_freedom
    log_det = g.strategy.log_det_cholesky(g.precisions_cholesky, d) - 0.5 * d * np.log(dof)
    norm = _log_wishart_norm(dof, log_det, d)
    log_wishart = float(np.sum(norm)) * (k if np.ndim(dof) == 0 else 1)  # tied: one, K times
    c = params.weight_concentration
    if params.prior.process:
        log_norm_weight = -float(np.sum(betaln(c[0], c[1])))
    else:
        log_norm_weight = float(gammaln(np.sum(c)) - np.sum(gammaln(c)))
    return (
        -entropy
        - log_wishart
        - log_norm_weight
        - 0.5 * d * float(np.sum(np.log(params.mean_precision)))
    )


def _log_wishart_norm(dof: np.ndarray, log_det_chol: np.ndarray, n_features: int) -> np.ndarray:
    return -(
        dof * log_det_chol
        + dof * n_features * 0.5 * math.log(2.0)
        + np.sum(gammaln(0.5 * (dof - np.arange(n_features)[:, None])), axis=0)
    )


def check_prior_spec(spec: PriorSpec, covariance_type: str, n_features: int) -> PriorSpec:
    """Validate user-given priors against the data's width (scikit-learn's checks)."""
    from .validation import check_number

    if spec.weight_concentration_prior_type not in PRIOR_TYPES:
        raise ValueError(
            "The 'weight_concentration_prior_type' parameter must be one of "
            f"{list(PRIOR_TYPES)}; got {spec.weight_concentration_prior_type!r}."
        )
    for name in ("weight_concentration_prior", "mean_precision_prior"):
        value = getattr(spec, name)
        if value is not None:
            check_number(name, value, (int, float, np.integer, np.floating), low=0.0)
            if not value > 0:
                raise ValueError(f"The '{name}' parameter must be > 0; got {value!r}.")
    mean = spec.mean_prior
    if mean is not None:
        mean = np.asarray(mean, dtype=np.float64)
        if mean.shape != (n_features,):
            raise ValueError(
                f"The parameter 'means' should have the shape of ({n_features},), but got "
                f"{mean.shape}"
            )
    dof = spec.degrees_of_freedom_prior
    if dof is not None and not dof > n_features - 1.0:
        raise ValueError(
            "The parameter 'degrees_of_freedom_prior' should be greater than "
            f"{n_features - 1}, but got {float(dof):.3f}."
        )
    cov = spec.covariance_prior
    if cov is not None:
        cov = get_covariance_type(covariance_type).check_covariance_prior(cov, n_features)
    return replace(spec, mean_prior=mean, covariance_prior=cov)
