"""Information criteria of a fitted mixture (BIC, AIC, ICL) and its effective components."""

from __future__ import annotations

import numpy as np

from .options import CRITERIA
from .params import GaussianParams
from .variational import VariationalParams

__all__ = ["CRITERIA", "effective_components", "information_criteria"]


def information_criteria(
    log_likelihood: float, n_parameters: int, n_samples: float, entropy: float = 0.0
) -> dict[str, float]:
    """BIC, AIC and ICL of a fitted mixture (lower is better), the one place they are written.

    Parameters
    ----------
    log_likelihood : float
        Total (weighted) log-likelihood of the data under the model.
    n_parameters : int
        Free parameters of the model.
    n_samples : float
        Number of rows (total weight when weighted).
    entropy : float
        ``Σ_i Σ_k τ_ik log τ_ik`` (≤ 0); ICL = BIC − 2·entropy, as mclust defines it.
    """
    bic = -2.0 * log_likelihood + n_parameters * np.log(n_samples)
    return {
        "bic": float(bic),
        "aic": float(-2.0 * log_likelihood + 2 * n_parameters),
        "icl": float(bic - 2.0 * entropy),
    }


def effective_components(params: GaussianParams | VariationalParams, threshold: float) -> int:
    """Components whose weight exceeds ``threshold``."""
    return int(np.sum(params.weights > threshold))
