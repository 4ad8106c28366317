"""dgmm: Gaussian mixture clustering for data that does not fit in memory, on Dask."""

from .covariance import COVARIANCE_TYPES, DegenerateCovarianceError
from .estimator import GaussianMixture
from .params import GaussianParams
from .stats import SuffStats

__all__ = [
    "COVARIANCE_TYPES",
    "DegenerateCovarianceError",
    "GaussianMixture",
    "GaussianParams",
    "SuffStats",
    "load",
]

__version__ = "0.1.0"


def load(path):
    """Load a model saved with `GaussianMixture.save`."""
    return GaussianMixture.load(path)
