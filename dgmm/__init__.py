"""dgmm: Gaussian mixture clustering for data that does not fit in memory, on Dask.

The public names are imported on first use, so that ``import dgmm`` (and the ``dgmm`` command,
which answers a bad config before anything heavy is loaded) stays quick.
"""

from importlib import import_module
from typing import Any

__all__ = [
    "COVARIANCE_TYPES",
    "BayesianGaussianMixture",
    "ColumnProfile",
    "DataError",
    "DegenerateCovarianceError",
    "FitSettings",
    "GaussianMixture",
    "GaussianParams",
    "PassReport",
    "Retry",
    "SelectionResult",
    "SuffStats",
    "information_criteria",
    "load",
    "profile",
    "select",
]

__version__ = "0.1.0"

_WHERE = {
    "COVARIANCE_TYPES": ".covariance",
    "DegenerateCovarianceError": ".covariance",
    "BayesianGaussianMixture": ".bayesian",
    "GaussianMixture": ".estimator",
    "FitSettings": ".settings",
    "GaussianParams": ".params",
    "SuffStats": ".stats",
    "DataError": ".validation",
    "PassReport": ".selection",
    "Retry": ".selection",
    "SelectionResult": ".selection",
    "information_criteria": ".selection",
    "select": ".selection",
    "profile": ".selection",
    "ColumnProfile": ".validation",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dgmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


def load(path):
    """Load a model saved with `GaussianMixture.save` or `BayesianGaussianMixture.save`."""
    from .persistence import saved_class

    name = saved_class(path)
    return getattr(import_module(_WHERE[name], __name__), name).load(path)
