"""What every covariance type shares: the strategy interface (`CovarianceType`), the
degenerate-covariance error, and the Cholesky helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from scipy import linalg

LOG_2PI = float(np.log(2 * np.pi))  # a Python float: keeps float32 arrays float32


DEGENERATE_MESSAGE = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)


class DegenerateCovarianceError(ValueError):
    """A component's covariance is not positive definite.

    Parameters
    ----------
    component : int
        Index of the first offending component.
    reg_covar : float or None
        The regularisation in use, quoted in the message when known.
    """

    def __init__(self, component: int, reg_covar: float | None = None):
        self.component = component
        hint = f" (current reg_covar={reg_covar:g})" if reg_covar is not None else ""
        super().__init__(
            f"{DEGENERATE_MESSAGE} Component {component} has a covariance that is not positive "
            f"definite; increase reg_covar{hint}."
        )


def flip(a: np.ndarray) -> np.ndarray:
    return a[..., ::-1, ::-1]


def chol_precision(cov: np.ndarray, component: int) -> np.ndarray:
    """Upper-triangular ``U`` with ``U Uᵀ = cov⁻¹`` (the factor scikit-learn stores)."""
    try:
        cov_chol = linalg.cholesky(cov, lower=True)
    except linalg.LinAlgError:
        raise DegenerateCovarianceError(component) from None
    if not np.all(np.isfinite(cov_chol)) or np.any(np.diag(cov_chol) <= 0):
        raise DegenerateCovarianceError(component)
    return linalg.solve_triangular(cov_chol, np.eye(cov.shape[0]), lower=True).T


def chol_from_precision(precision: np.ndarray) -> np.ndarray:
    return flip(linalg.cholesky(flip(precision), lower=True))


def check_spd(matrices: np.ndarray, what: str) -> None:
    for k, m in enumerate(matrices):
        if not np.allclose(m, m.T) or np.any(np.linalg.eigvalsh(m) <= 0.0):
            raise ValueError(f"'{what}' should be symmetric, positive-definite; matrix {k} is not.")


class CovarianceType(ABC):
    """Protocol of a covariance type: statistics, finalisation, densities, sampling."""

    name: ClassVar[str]

    @abstractmethod
    def moment_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of the accumulated second-moment statistic."""

    @abstractmethod
    def second_moments(
        self, xs: np.ndarray, x64: np.ndarray, resp: np.ndarray, nk: np.ndarray, sx: np.ndarray
    ) -> np.ndarray:
        """Weighted second moments of a row block about the shift, in float64.

        ``xs`` holds the shifted rows in the compute dtype and ``x64`` the same rows in float64;
        ``resp`` is (K, n) float64 and carries row weights; ``nk`` (K,) and ``sx`` (K, D) are
        this block's weighted counts and sums, which centred formulations use.
        """

    @abstractmethod
    def move_moments(
        self, m: np.ndarray, nk: np.ndarray, sx: np.ndarray, delta: np.ndarray
    ) -> np.ndarray:
        """Second moments ``m`` of rows about one origin, moved to the centres ``origin − delta``.

        ``nk`` (K,) and ``sx`` (K, D) are the same rows' weighted counts and sums about the
        origin and ``delta`` (K, D) is the origin minus each component's centre:
        ``Σ r (z + δ)(z + δ)ᵀ = m + δ·sxᵀ + sx·δᵀ + n·δ·δᵀ``. Every term is at most the size of
        the result, so nothing cancels when the rows lie near the origin.
        """

    @abstractmethod
    def term_bound(self, prec_chol: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Bound (K,) on the terms of each component's quadratic form ``|Pᵀ(x − μ)|²`` for
        ``|x − μ| ≤ v`` per feature (``v``: (K, D), non-negative): ``‖|P|ᵀ v‖²``. A worst
        case: `dgmm.persistence` checks with it that a model read from outside stays finite; the
        kernels measure their rounding with `row_scales`."""

    @abstractmethod
    def row_scales(self, prec_chol: np.ndarray, n_components: int, n_features: int) -> np.ndarray:
        """Per component and feature, the squared norm of the factor's row, shape (K, D):
        ``Σ_e P_de²`` for ``Pᵀx``. A point ``x`` enters a component's expanded terms with the
        size ``(Σ_d x_d² · scales_kd)^½``, the root-sum-square of its products with the factor:
        what rounding the products, and moments taken about another origin, lose ``eps`` of.
        """

    def moment_sizes(
        self, squares: np.ndarray, centres: np.ndarray, scales: np.ndarray
    ) -> np.ndarray:
        """``(n, K)``: squared sizes, in each component's units, of rows whose squared values
        are ``squares`` (n, D) and of the centres (K, D) its moments are moved by, as far as
        the moments' rounding goes (``scales``: `row_scales`). A general covariance's error
        spreads over every direction: the root-sum-squares of the products, as `form_loss`
        measures them."""
        rows = np.sqrt(squares @ scales.T)
        return (rows + np.sqrt(np.einsum("kd,kd->k", centres * centres, scales))) ** 2

    def form_loss(self, sizes: np.ndarray, forms: np.ndarray, eps: float) -> np.ndarray:
        """What rounding at ``eps`` can lose of quadratic forms ``forms`` that `log_gaussian`
        computes from expanded terms of squared sizes ``sizes`` (`row_scales`).

        Here the projection ``Pᵀx − Pᵀμ`` is taken first: it is off by about ``eps·t``
        (``t = √sizes``), so its square by ``eps·t·(2·√forms + eps·t)``.
        """
        t = np.sqrt(sizes)
        return eps * t * (2.0 * np.sqrt(forms) + eps * t)

    def safe_form(self, sizes: np.ndarray, eps: float, loss: float) -> np.ndarray:
        """The smallest quadratic form ``f ≥ 1`` from which on `form_loss` stays within
        ``loss·(1 + f)`` for terms of squared sizes ``sizes`` (beyond 1 the relative loss only
        falls as ``f`` grows).

        Here ``eps·t·(2s + eps·t) = loss·(1 + s²)`` (``s = √f``) is a quadratic in ``s``; with
        no real root the loss is within bounds at every form.
        """
        a = eps * np.sqrt(sizes)
        disc = a * a * (1.0 + loss) - loss * loss
        with np.errstate(invalid="ignore"):
            s = (a + np.sqrt(np.maximum(disc, 0.0))) / loss
        return np.where(disc > 0.0, np.maximum(s * s, 1.0), 1.0)

    @abstractmethod
    def covariances(
        self, nk: np.ndarray, means_s: np.ndarray, sxx: np.ndarray, reg_covar: float
    ) -> np.ndarray:
        """Covariances from the reduced statistics: ``sxx`` about each component's centre and
        ``means_s`` the new means relative to those centres."""

    @abstractmethod
    def precision_cholesky(self, covariances: np.ndarray) -> np.ndarray:
        """Cholesky factors of the precisions; raises `DegenerateCovarianceError`."""

    @abstractmethod
    def precision_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        """Cholesky factors from user-given precisions (scikit-learn's convention)."""

    @abstractmethod
    def precisions(self, prec_chol: np.ndarray) -> np.ndarray:
        """Precision matrices (or their diagonal / scalar parts) from the factors."""

    @abstractmethod
    def log_gaussian(
        self,
        xs: np.ndarray,
        means_s: np.ndarray,
        prec_chol: np.ndarray,
        x64: np.ndarray | None = None,
        means64: np.ndarray | None = None,
    ) -> np.ndarray:
        """Log density of every row under every component, shape (K, n_rows).

        ``x64`` and ``means64``, when given, are the same rows and means in float64: a type
        that takes each row's difference to each mean before projecting it
        (`expanded_form` False) subtracts them in float64.
        """

    def expanded_form(self, n_features: int) -> bool:
        """Whether `log_gaussian` computes quadratic forms from expanded terms (``Pᵀx − Pᵀμ``,
        ``x² − 2xμ + μ²``), which lose `form_loss` to rounding far from the origin."""
        return True

    def moves_moments(self, n_features: int) -> bool:
        """Whether `centred_moments` takes moments about the origin and moves them to the
        centres (`move_moments`), losing ``eps`` times their size about the origin."""
        return True

    def centred_moments(
        self,
        xs: np.ndarray,
        x64: np.ndarray,
        resp: np.ndarray,
        nk: np.ndarray,
        sx: np.ndarray,
        delta: np.ndarray | None,
        out: np.ndarray,
    ) -> None:
        """Add to ``out`` the weighted second moments of rows about each component's centre,
        ``origin − delta`` (None: the origin); arguments as `second_moments`."""
        m = self.second_moments(xs, x64, resp, nk, sx)
        out += m if delta is None else self.move_moments(m, nk, sx, delta)

    @abstractmethod
    def n_cov_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free covariance parameters."""

    @abstractmethod
    def full(self, covariances: np.ndarray, n_components: int, n_features: int) -> np.ndarray:
        """The covariances as (K, D, D) matrices."""

    @abstractmethod
    def row_temporaries(self, n_components: int, n_features: int) -> int:
        """Values per row that `log_gaussian` and `second_moments` hold at once."""

    @abstractmethod
    def sample(
        self, rng: np.random.RandomState, mean: np.ndarray, covariances: np.ndarray, k: int, n: int
    ) -> np.ndarray:
        """Draw ``n`` rows from component ``k``, with scikit-learn's calls on ``rng``."""

    @abstractmethod
    def check_precisions(
        self, precisions: np.ndarray, n_components: int, n_features: int
    ) -> np.ndarray:
        """Validate ``precisions_init``: shape, symmetry, positive definiteness."""

    # -- the variational (Bayesian) mixture: Wishart posteriors of the precisions
    @abstractmethod
    def log_det_cholesky(self, prec_chol: np.ndarray, n_features: int) -> np.ndarray:
        """``log det`` of each precision factor ((K,), or a scalar when shared)."""

    @abstractmethod
    def prior_covariance(self, covariance: np.ndarray) -> np.ndarray:
        """The default ``covariance_prior`` from the data's (D, D) covariance (ddof=1)."""

    @abstractmethod
    def check_covariance_prior(self, prior: object, n_features: int) -> np.ndarray:
        """Validate a user-given ``covariance_prior`` (scikit-learn's checks)."""

    @abstractmethod
    def wishart(
        self,
        nk: np.ndarray,
        sk: np.ndarray,
        diff: np.ndarray,
        prior: np.ndarray,
        dof_prior: float,
        mean_precision_prior: float,
        mean_precision: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior degrees of freedom and normalised covariances (scikit-learn's formulas),
        from counts ``nk``, covariances ``sk`` and ``diff`` = means − mean prior."""

    def covariances_from_precision_cholesky(self, prec_chol: np.ndarray) -> np.ndarray:
        """Covariances implied by precision factors (used when only precisions are given)."""
        return np.linalg.inv(self.precisions(prec_chol))

    @staticmethod
    def _check_shape(a: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if a.shape != shape:
            raise ValueError(
                f"The parameter '{what}' should have the shape of {shape}, but got {a.shape}"
            )
        return a


def check_positive(variances: np.ndarray) -> None:
    bad = np.flatnonzero(~(np.atleast_2d(variances.T).T > 0.0).all(axis=-1))
    if bad.size:
        raise DegenerateCovarianceError(int(bad[0]))
