"""The choices the fitting functions take, in one place (the pipeline's config schema takes
its own from here)."""

from __future__ import annotations

__all__ = ["METHODS", "PRIOR_SETTINGS", "STRATEGIES"]

STRATEGIES = ("exact", "sample")
METHODS = ("sweep", "variational")
PRIOR_SETTINGS = (
    "weight_concentration_prior_type",
    "weight_concentration_prior",
    "mean_precision_prior",
    "mean_prior",
    "degrees_of_freedom_prior",
    "covariance_prior",
)
