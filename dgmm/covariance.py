"""Covariance types as strategies: one class each, one registry, no branching elsewhere.

Every strategy works on rows and means relative to one origin (the global shift, or a component's
centre for the rows near it) and takes second moments about that origin; `move_moments` carries
them to each component's own centre without cancelling.
"""

from __future__ import annotations

from ._cov_base import (
    CovarianceType,
    DegenerateCovarianceError,
)
from ._cov_diag import Diag, Spherical
from ._cov_full import Full
from ._cov_tied import Tied

__all__ = [
    "COVARIANCE_TYPES",
    "CovarianceType",
    "DegenerateCovarianceError",
    "get_covariance_type",
]


COVARIANCE_TYPES: dict[str, CovarianceType] = {
    cls.name: cls() for cls in (Full, Tied, Diag, Spherical)
}


def get_covariance_type(name: str) -> CovarianceType:
    """Look up a covariance strategy by its scikit-learn name."""
    try:
        return COVARIANCE_TYPES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"covariance_type must be one of {sorted(COVARIANCE_TYPES)}, got {name!r}."
        ) from None
