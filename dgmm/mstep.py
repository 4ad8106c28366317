"""The M-step: reduced sufficient statistics to new mixture parameters (pure numpy)."""

from __future__ import annotations

import numpy as np

from .covariance import CovarianceType, DegenerateCovarianceError
from .params import GaussianParams
from .stats import SuffStats


def m_step(
    stats: SuffStats,
    strategy: CovarianceType,
    reg_covar: float,
    shift: np.ndarray,
    eps: float,
    weights_denominator: float | None = None,
    weight_scale: float = 1.0,
) -> GaussianParams:
    """New parameters from the statistics of one pass, with scikit-learn's conventions.

    Parameters
    ----------
    stats : SuffStats
        Statistics reduced over all rows, about ``shift + stats.centres``.
    strategy : CovarianceType
    reg_covar : float
        Added to the diagonal of every covariance.
    shift : ndarray of shape (n_features,)
        The offset the statistics were taken around.
    eps : float
        Machine epsilon of the data's dtype; ``10·eps·weight_scale`` is added to each count.
    weights_denominator : float, optional
        Divide counts by this instead of their sum (the initialisation divides by n_samples).
    weight_scale : float
        The mean row weight (1 without weights). scikit-learn adds ``10·eps`` to counts of
        unit-weight rows; scaling the floor with the weights keeps the fit of ``c·w`` that of
        ``w`` for any ``c > 0``.

    Raises
    ------
    DegenerateCovarianceError
        If a covariance is not positive definite; the message names the component.
    """
    nk, means, covariances = gaussian_estimates(
        stats, strategy, reg_covar, shift, eps, weight_scale
    )
    prec_chol = precision_cholesky(strategy, covariances, reg_covar)
    denominator = nk.sum() if weights_denominator is None else weights_denominator
    return GaussianParams(strategy.name, nk / denominator, means, covariances, prec_chol)


def gaussian_estimates(
    stats: SuffStats,
    strategy: CovarianceType,
    reg_covar: float,
    shift: np.ndarray,
    eps: float,
    weight_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (with the ``10·eps`` floor), means and regularised covariances of the statistics
    (scikit-learn's ``_estimate_gaussian_parameters``); see `m_step`."""
    nk = stats.nk + 10.0 * eps * weight_scale
    # New means relative to each centre: small when the centres are the previous means, so the
    # covariance ``sxx/n − d·dᵀ`` loses nothing to cancellation at any separation.
    d = stats.sx / nk[:, None]
    covariances = strategy.covariances(nk, d, stats.sxx, reg_covar)
    centres = shift if stats.centres is None else shift + stats.centres
    return nk, centres + d, covariances


def precision_cholesky(
    strategy: CovarianceType, covariances: np.ndarray, reg_covar: float
) -> np.ndarray:
    """The precision factors; a `DegenerateCovarianceError` names ``reg_covar``."""
    try:
        return strategy.precision_cholesky(covariances)
    except DegenerateCovarianceError as e:
        raise DegenerateCovarianceError(e.component, reg_covar) from None
