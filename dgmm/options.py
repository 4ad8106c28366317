"""The choices the fitting functions take, in one place (the pipeline's config schema takes
its own from here)."""

from __future__ import annotations

__all__ = [
    "COVARIANCE_TYPE_NAMES",
    "CRITERIA",
    "INIT_METHODS",
    "METHODS",
    "PRIOR_SETTINGS",
    "STRATEGIES",
    "WEIGHT_PRIOR_TYPES",
]

COVARIANCE_TYPE_NAMES = ("full", "tied", "diag", "spherical")  # one strategy each (covariance)
INIT_METHODS = ("kmeans", "k-means||", "k-means++", "random", "random_from_data")
CRITERIA = ("bic", "aic", "icl")
WEIGHT_PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
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
