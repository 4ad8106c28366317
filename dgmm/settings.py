"""The fitting settings, validated once: `FitSettings` is built from `select`'s keywords, an
estimator's parameters or the pipeline's config, and carried as one object to the engine
(`Sweep`), the checkpoint key and the result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from numbers import Integral, Real
from typing import Any

import numpy as np

from ._candidates import Candidate, Retry
from .covariance import get_covariance_type
from .options import CRITERIA, INIT_METHODS, METHODS, PRIOR_SETTINGS, STRATEGIES
from .validation import check_number

__all__ = ["FitSettings", "check_estimator_params"]


def check_estimator_params(
    *,
    n_init: Any,
    init_params: Any,
    tol: Any,
    reg_covar: Any,
    max_iter: Any,
    strategy: Any = "exact",
    sample_size: Any = None,
) -> None:
    """Check the fitting parameters shared by `GaussianMixture` and `select` (scikit-learn's
    wording)."""
    if strategy not in STRATEGIES:
        raise ValueError(
            f"The 'strategy' parameter must be one of {list(STRATEGIES)}; got {strategy!r}."
        )
    if sample_size is not None:
        check_number("sample_size", sample_size, Integral, low=1)
    check_number("tol", tol, Real, low=0.0)
    check_number("reg_covar", reg_covar, Real, low=0.0)
    check_number("max_iter", max_iter, Integral, low=0)
    check_number("n_init", n_init, Integral, low=1)
    if init_params not in INIT_METHODS:
        raise ValueError(
            f"The 'init_params' parameter must be one of {list(INIT_METHODS)}; got {init_params!r}."
        )


def _grid(n_components: Any, covariance_types: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The K values and covariance types, checked, in the order given, each once."""
    ks = [n_components] if isinstance(n_components, (int, np.integer)) else list(n_components)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in ks):
        raise ValueError(f"n_components must be a whole number or a sequence of them; got {ks!r}")
    if min(ks) < 1:
        raise ValueError(f"every n_components must be >= 1; got {min(ks)}")
    types = [covariance_types] if isinstance(covariance_types, str) else list(covariance_types)
    if not types:
        raise ValueError("covariance_types is empty; give at least one")
    for t in types:
        get_covariance_type(t)
    return tuple(int(k) for k in dict.fromkeys(ks)), tuple(dict.fromkeys(types))


def _jsonable(value: Any) -> Any:
    """A setting as JSON holds it (arrays of a prior as nested lists)."""
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


@dataclass(frozen=True)
class FitSettings:
    """What determines a selection's fits, validated on construction.

    The defaults are `select`'s. ``n_components`` and ``covariance_types`` are kept as tuples,
    each value once in the order given; with ``method='variational'`` only the largest K is
    fitted (one fit per type chooses its own components), so ``n_components`` holds it alone.

    Parameters
    ----------
    n_components : int or sequence of int, default=range(1, 11)
    covariance_types : str or sequence of {'full', 'tied', 'diag', 'spherical'}, default='full'
    criterion : {'bic', 'aic', 'icl'}, default='bic'
    n_init, init_params, tol, reg_covar, max_iter, random_state
        As in `GaussianMixture`.
    strategy : {'exact', 'sample'}, default='exact'
    sample_size : int or None, default=None
    method : {'sweep', 'variational'}, default='sweep'
    prior : dict or None, default=None
        Prior settings of ``method='variational'`` (names in `dgmm.options.PRIOR_SETTINGS`).
    weight_threshold : float, default=0.01
    screen_cells : bool, default=True
    screen_degenerate : bool, default=True
    retry : Retry or None, default=None

    Raises
    ------
    ValueError
        A setting out of its range or vocabulary, named with the value given.
    """

    n_components: Any = tuple(range(1, 11))
    covariance_types: Any = ("full",)
    criterion: str = "bic"
    n_init: int = 1
    init_params: str = "kmeans"
    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    random_state: Any = None
    strategy: str = "exact"
    sample_size: int | None = None
    method: str = "sweep"
    prior: Mapping[str, Any] | None = None
    weight_threshold: float = 0.01
    screen_cells: bool = True
    screen_degenerate: bool = True
    retry: Retry | None = None

    def __post_init__(self) -> None:
        ks, types = _grid(self.n_components, self.covariance_types)
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {list(CRITERIA)}; got {self.criterion!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}; got {self.method!r}")
        if self.method == "variational":
            ks = (max(ks),)
        if not (0.0 <= self.weight_threshold < 1.0):
            raise ValueError(f"weight_threshold must be in [0, 1); got {self.weight_threshold!r}")
        check_estimator_params(
            n_init=self.n_init,
            init_params=self.init_params,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            strategy=self.strategy,
            sample_size=self.sample_size,
        )
        if self.prior is not None:
            if self.method != "variational":
                raise ValueError("prior is a setting of method='variational'")
            unknown = sorted(set(self.prior) - set(PRIOR_SETTINGS))
            if unknown:
                raise ValueError(
                    f"unknown prior setting(s) {unknown}; known: {list(PRIOR_SETTINGS)}"
                )
            object.__setattr__(self, "prior", dict(self.prior))
        object.__setattr__(self, "n_components", ks)
        object.__setattr__(self, "covariance_types", types)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FitSettings):
            return NotImplemented
        return self.key() == other.key()

    __hash__ = None  # type: ignore[assignment]  # a prior may hold arrays

    @property
    def variational(self) -> bool:
        """Whether the fits are variational mixtures (one per type, choosing their K)."""
        return self.method == "variational"

    @property
    def cells(self) -> list[tuple[str, int]]:
        """The (covariance type, K) cells, type by type."""
        return [(t, k) for t in self.covariance_types for k in self.n_components]

    @property
    def screened_by(self) -> str | None:
        """The criterion cells trailing on the sample are stopped by (None: none stopped)."""
        return self.criterion if self.screen_cells else None

    @property
    def used_weight(self) -> float | None:
        """The weight above which a variational fit's component counts (None: not variational)."""
        return self.weight_threshold if self.variational else None

    def candidates(self) -> list[Candidate]:
        """Every restart of every cell, cell by cell, in restart order."""
        return [
            Candidate(t, k, r, self.reg_covar) for t, k in self.cells for r in range(self.n_init)
        ]

    def key(self, sample_size: int | None = None) -> dict[str, Any]:
        """Every setting by name, as JSON holds it: what a checkpoint's fits were made under.

        ``sample_size`` is the sample a run really draws (the setting may be None: a default
        of the data).
        """
        out = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}
        if sample_size is not None:
            out["sample_size"] = int(sample_size)
        out["retry"] = None if self.retry is None else [self.retry.factor, self.retry.max_reg_covar]
        if not isinstance(self.random_state, (int, np.integer, type(None))):
            out["random_state"] = repr(self.random_state)  # a generator: no stable key
        return out

    def estimator_params(self) -> dict[str, Any]:
        """The parameters of the estimator of one cell fitted under these settings, less
        ``n_components``, ``covariance_type`` and ``reg_covar`` (a retried restart's own)."""
        params = {
            "tol": self.tol,
            "max_iter": self.max_iter,
            "n_init": self.n_init,
            "init_params": self.init_params,
            "random_state": self.random_state,
            "strategy": self.strategy,
            "sample_size": self.sample_size,
        }
        return {**params, **(self.prior or {})} if self.variational else params
