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
    nk = stats.nk + 10.0 * eps * weight_scale
    # New means relative to each centre: small when the centres are the previous means, so the
    # covariance ``sxx/n − d·dᵀ`` loses nothing to cancellation at any separation.
    d = stats.sx / nk[:, None]
    covariances = strategy.covariances(nk, d, stats.sxx, reg_covar)
    try:
        prec_chol = strategy.precision_cholesky(covariances)
    except DegenerateCovarianceError as e:
        raise DegenerateCovarianceError(e.component, reg_covar) from None
    denominator = nk.sum() if weights_denominator is None else weights_denominator
    centres = shift if stats.centres is None else shift + stats.centres
    return GaussianParams(strategy.name, nk / denominator, centres + d, covariances, prec_chol)
