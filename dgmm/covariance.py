"""Covariance types as strategies: one class each, one registry, no branching elsewhere.

Every strategy works on rows and means relative to one origin (the global shift, or a component's
centre for the rows near it) and takes second moments about that origin; `move_moments` carries
them to each component's own centre without cancelling.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from scipy import linalg

__all__ = [
    "COVARIANCE_TYPES",
    "CovarianceType",
    "DegenerateCovarianceError",
    "get_covariance_type",
]


_LOG_2PI = float(np.log(2 * np.pi))  # a Python float: keeps float32 arrays float32

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


def _flip(a: np.ndarray) -> np.ndarray:
    return a[..., ::-1, ::-1]


def _chol_precision(cov: np.ndarray, component: int) -> np.ndarray:
    """Upper-triangular ``U`` with ``U Uᵀ = cov⁻¹`` (the factor scikit-learn stores)."""
    try:
        cov_chol = linalg.cholesky(cov, lower=True)
    except linalg.LinAlgError:
        raise DegenerateCovarianceError(component) from None
    if not np.all(np.isfinite(cov_chol)) or np.any(np.diag(cov_chol) <= 0):
        raise DegenerateCovarianceError(component)
    return linalg.solve_triangular(cov_chol, np.eye(cov.shape[0]), lower=True).T


def _chol_from_precision(precision: np.ndarray) -> np.ndarray:
    return _flip(linalg.cholesky(_flip(precision), lower=True))


def _check_spd(matrices: np.ndarray, what: str) -> None:
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


# From this many features float32 data's centred rows are multiplied in float32 (below it the
# cast costs more than float32 products save: measured 0.9× at D=16, 1.3–1.6× faster at 32, 64).
_CENTRE_FROM_D = 32
# From this many features a full covariance's E-step centres rows per component and projects
# them with a blocked triangular product (`_upper_squares`, ~5/8 of a general product's work),
# and takes moments about each centre (numpy's symmetric update for ``zᵀz``, half the work).
# Only numpy's products: SciPy's BLAS wrappers hold the GIL, and threads must run at once.
_CENTRED_FROM_D = 64


def _scatter(xs: np.ndarray, x64: np.ndarray, r: np.ndarray, n: float, s: np.ndarray) -> np.ndarray:
    """``Σ r·x·xᵀ`` in float64 over rows ``xs`` (``x64``: the same in float64), given ``n = Σ r``
    and ``s = Σ r·x``.

    float64 rows, and float32 rows with fewer than ``_CENTRE_FROM_D`` features, are multiplied in
    float64 as they are. Wider float32 rows are first centred on their weighted mean ``c``, so
    the float32 product has small terms and keeps the accuracy float64 has about the shift, then
    moved back in float64: ``Σ r·x·xᵀ = Σ r·(x − c)(x − c)ᵀ + c·sᵀ + s·cᵀ − n·c·cᵀ`` (for the
    ``c`` actually subtracted).
    """
    if xs.dtype == np.float64 or xs.shape[1] < _CENTRE_FROM_D:
        return (x64 * r[:, None]).T @ x64
    if n <= 0:
        return np.zeros((xs.shape[1], xs.shape[1]))
    c = (s / n).astype(xs.dtype)
    z = xs - c
    m = ((z * r.astype(xs.dtype)[:, None]).T @ z).astype(np.float64)
    c64 = c.astype(np.float64)
    cs = np.outer(c64, s)
    return m + cs + cs.T - n * np.outer(c64, c64)


def _upper_squares(z: np.ndarray, u: np.ndarray, out: np.ndarray) -> None:
    """``out = Σ_e (z @ u)_e²`` per row, for an upper-triangular ``u``: column block ``j`` of
    ``z @ u`` needs only the first ``j + 1`` row blocks of ``u``, so B blocks do
    ``(B + 1) / 2B`` of a general product's work."""
    d = z.shape[1]
    width = 32 if d < 192 else 64  # measured on single-thread sub-blocks, D = 64…256
    out[:] = 0.0
    for s in range(0, d, width):
        e = min(d, s + width)
        y = z[:, :e] @ u[:e, s:e]
        out += np.einsum("nb,nb->n", y, y)


class Full(CovarianceType):
    """Each component has its own general covariance matrix."""

    name = "full"

    def moment_shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def moves_moments(self, n_features):
        return n_features < _CENTRED_FROM_D

    def second_moments(self, xs, x64, resp, nk, sx):
        # One (D × n)(n × D) product per component on the responsibility-scaled rows: measured
        # faster than a single (D × n)(n × K·D) product on a K-times larger temporary.
        out = np.zeros((resp.shape[0], xs.shape[1], xs.shape[1]))
        for k in np.flatnonzero(nk):  # rows far from a component often carry none of it
            out[k] = _scatter(xs, x64, resp[k], nk[k], sx[k])
        return out

    def centred_moments(self, xs, x64, resp, nk, sx, delta, out):
        n, d = xs.shape
        if self.moves_moments(d):
            super().centred_moments(xs, x64, resp, nk, sx, delta, out)
            return
        # From _CENTRED_FROM_D features each component's rows are taken about its own centre
        # and scaled by √r; ``zᵀz`` of one buffer is numpy's symmetric rank-n update. The
        # centred values carry no cancellation at any offset, so float32 data multiplies them
        # in float32.
        z = np.empty((n, d))
        for k in np.flatnonzero(nk):  # rows far from a component often carry none of it
            np.add(x64, 0.0 if delta is None else delta[k], out=z)
            np.multiply(z, np.sqrt(resp[k])[:, None], out=z)
            zc = z.astype(xs.dtype, copy=False)
            out[k] += zc.T @ zc

    def move_moments(self, m, nk, sx, delta):
        ds = delta[:, :, None] * sx[:, None, :]
        return (
            m
            + ds
            + ds.transpose(0, 2, 1)
            + nk[:, None, None] * (delta[:, :, None] * delta[:, None, :])
        )

    def term_bound(self, prec_chol, v):
        return (np.einsum("kde,kd->ke", np.abs(prec_chol), v) ** 2).sum(axis=1)

    def row_scales(self, prec_chol, n_components, n_features):
        return np.einsum("kde,kde->kd", prec_chol, prec_chol)

    def covariances(self, nk, means_s, sxx, reg_covar):
        d = means_s.shape[1]
        cov = sxx / nk[:, None, None] - means_s[:, :, None] * means_s[:, None, :]
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        cov[:, np.arange(d), np.arange(d)] += reg_covar
        return cov

    def precision_cholesky(self, covariances):
        return np.stack([_chol_precision(c, k) for k, c in enumerate(covariances)])

    def precision_cholesky_from_precisions(self, precisions):
        return np.stack([_chol_from_precision(p) for p in precisions])

    def precisions(self, prec_chol):
        return prec_chol @ prec_chol.transpose(0, 2, 1)

    def expanded_form(self, n_features):
        return n_features < _CENTRED_FROM_D

    def log_gaussian(self, xs, means_s, prec_chol, x64=None, means64=None):
        n, d = xs.shape
        k = means_s.shape[0]
        log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
        if not self.expanded_form(d):
            # Per component: the rows' differences to its mean (in float64 when given), then
            # ``Pᵀ(x − μ)`` by a triangular product in place. Nothing cancels at any offset.
            sq = np.empty((k, n), dtype=xs.dtype)
            for j in range(k):
                if x64 is None:
                    z = xs - means_s[j]
                else:
                    z = np.subtract(x64, means64[j]).astype(xs.dtype, copy=False)
                _upper_squares(z, prec_chol[j], sq[j])
            return -0.5 * (d * _LOG_2PI + sq) + log_det[:, None]
        # One GEMM against all factors side by side: (K·D, D) @ (D, n), component-major.
        p_all = prec_chol.transpose(0, 2, 1).reshape(k * d, d)
        y = p_all @ xs.T
        y -= np.einsum("kd,kde->ke", means_s, prec_chol).reshape(k * d, 1)
        y *= y
        sq = y.reshape(k, d, n).sum(axis=1)
        return -0.5 * (d * _LOG_2PI + sq) + log_det[:, None]

    def n_cov_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def full(self, covariances, n_components, n_features):
        return covariances

    def row_temporaries(self, n_components, n_features):
        if not self.expanded_form(n_features):
            return 3 * n_features  # one component's difference (and its float64 form); a copy
        return n_components * n_features + n_features  # stacked projections; a scaled copy

    def sample(self, rng, mean, covariances, k, n):
        return rng.multivariate_normal(mean, covariances[k], n)

    def check_precisions(self, precisions, n_components, n_features):
        p = self._check_shape(precisions, (n_components, n_features, n_features), "precisions")
        _check_spd(p, "full precision")
        return p

    def log_det_cholesky(self, prec_chol, n_features):
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)

    def prior_covariance(self, covariance):
        return np.atleast_2d(covariance)

    def check_covariance_prior(self, prior, n_features):
        p = self._check_shape(prior, (n_features, n_features), f"{self.name} covariance_prior")
        _check_spd(p[None], f"{self.name} covariance_prior")
        return p

    def wishart(self, nk, sk, diff, prior, dof_prior, mean_precision_prior, mean_precision):
        dof = dof_prior + nk
        outer = diff[:, :, None] * diff[:, None, :]
        shrink = nk * mean_precision_prior / mean_precision
        cov = prior + nk[:, None, None] * sk + shrink[:, None, None] * outer
        return dof, cov / dof[:, None, None]


class Tied(CovarianceType):
    """All components share one general covariance matrix."""

    name = "tied"

    def moment_shape(self, n_components, n_features):
        return (n_features, n_features)

    def second_moments(self, xs, x64, resp, nk, sx):
        # The pooled scatter needs only each row's total responsibility (its weight in an
        # E-step; 0 for rows a hard initialisation leaves out). It is taken in float64: the
        # covariance is this scatter minus the between-component part, and float32 errors of the
        # spread between components would swamp a tight within-component variance.
        return _scatter(x64, x64, resp.sum(axis=0), nk.sum(), sx.sum(axis=0))

    def move_moments(self, m, nk, sx, delta):
        ds = delta.T @ sx
        return m + ds + ds.T + (delta * nk[:, None]).T @ delta

    def term_bound(self, prec_chol, v):
        return ((v @ np.abs(prec_chol)) ** 2).sum(axis=1)

    def row_scales(self, prec_chol, n_components, n_features):
        return np.broadcast_to((prec_chol * prec_chol).sum(axis=1), (n_components, n_features))

    def covariances(self, nk, means_s, sxx, reg_covar):
        between = (nk[:, None] * means_s).T @ means_s
        cov = (sxx - between) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        cov[np.diag_indices_from(cov)] += reg_covar
        return cov

    def precision_cholesky(self, covariances):
        return _chol_precision(covariances, 0)

    def precision_cholesky_from_precisions(self, precisions):
        return _chol_from_precision(precisions)

    def precisions(self, prec_chol):
        return prec_chol @ prec_chol.T

    def log_gaussian(self, xs, means_s, prec_chol, x64=None, means64=None):
        d = xs.shape[1]
        y = prec_chol.T @ xs.T  # (D, n)
        m = means_s @ prec_chol  # (K, D)
        diff = y[None, :, :] - m[:, :, None]
        diff *= diff
        sq = diff.sum(axis=1)
        log_det = np.log(np.diag(prec_chol)).sum()
        return -0.5 * (d * _LOG_2PI + sq) + log_det

    def n_cov_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def full(self, covariances, n_components, n_features):
        return np.broadcast_to(covariances, (n_components, n_features, n_features))

    def row_temporaries(self, n_components, n_features):
        return n_components * n_features + 2 * n_features  # differences to every mean

    def sample(self, rng, mean, covariances, k, n):
        return rng.multivariate_normal(mean, covariances, n)

    def check_precisions(self, precisions, n_components, n_features):
        p = self._check_shape(precisions, (n_features, n_features), "precisions")
        _check_spd(p[None], "tied precision")
        return p

    def log_det_cholesky(self, prec_chol, n_features):
        return np.log(np.diag(prec_chol)).sum()

    def prior_covariance(self, covariance):
        return np.atleast_2d(covariance)

    check_covariance_prior = Full.check_covariance_prior

    def wishart(self, nk, sk, diff, prior, dof_prior, mean_precision_prior, mean_precision):
        k = nk.shape[0]
        dof = dof_prior + nk.sum() / k
        between = ((nk / mean_precision) * diff.T) @ diff
        cov = prior + sk * nk.sum() / k + mean_precision_prior / k * between
        return np.float64(dof), cov / dof


class Diag(CovarianceType):
    """Each component has its own diagonal covariance."""

    name = "diag"

    def moment_shape(self, n_components, n_features):
        return (n_components, n_features)

    def second_moments(self, xs, x64, resp, nk, sx):
        return resp @ (x64 * x64)

    def move_moments(self, m, nk, sx, delta):
        return m + 2.0 * delta * sx + nk[:, None] * delta**2

    def term_bound(self, prec_chol, v):
        return ((np.abs(prec_chol) * v) ** 2).sum(axis=1)

    def row_scales(self, prec_chol, n_components, n_features):
        return prec_chol * prec_chol

    def form_loss(self, sizes, forms, eps):
        # the form is expanded into squares (x², 2xμ, μ², scaled): each term is up to t²
        return eps * sizes

    def safe_form(self, sizes, eps, loss):
        return np.maximum(eps * sizes / loss - 1.0, 1.0)

    def moment_sizes(self, squares, centres, scales):
        # each variance is moved on its own: what counts is its feature's size relative to
        # it, the largest over features (for one row, a bound; for many, the sum bounds it
        # without a (n, K, D) temporary)
        if squares.shape[0] != 1:
            return super().moment_sizes(squares, centres, scales)
        rows = np.sqrt((squares * scales).max(axis=1))
        return ((rows + np.sqrt((centres * centres * scales).max(axis=1))) ** 2)[None, :]

    def covariances(self, nk, means_s, sxx, reg_covar):
        return sxx / nk[:, None] - means_s**2 + reg_covar

    def precision_cholesky(self, covariances):
        _check_positive(covariances)
        return 1.0 / np.sqrt(covariances)

    def precision_cholesky_from_precisions(self, precisions):
        return np.sqrt(precisions)

    def precisions(self, prec_chol):
        return prec_chol**2

    def covariances_from_precision_cholesky(self, prec_chol):
        return 1.0 / prec_chol**2

    def log_gaussian(self, xs, means_s, prec_chol, x64=None, means64=None):
        d = xs.shape[1]
        prec = prec_chol**2
        sq = (means_s * prec) @ xs.T
        sq *= -2.0
        sq += prec @ (xs * xs).T
        sq += np.sum(means_s**2 * prec, axis=1)[:, None]
        log_det = np.log(prec_chol).sum(axis=1)
        return -0.5 * (d * _LOG_2PI + sq) + log_det[:, None]

    def n_cov_parameters(self, n_components, n_features):
        return n_components * n_features

    def full(self, covariances, n_components, n_features):
        return np.stack([np.diag(c) for c in covariances])

    def row_temporaries(self, n_components, n_features):
        return 2 * n_components + n_features  # squared rows; two (K, n) products

    def sample(self, rng, mean, covariances, k, n):
        return mean + rng.standard_normal(size=(n, mean.shape[0])) * np.sqrt(covariances[k])

    def check_precisions(self, precisions, n_components, n_features):
        p = self._check_shape(precisions, (n_components, n_features), "precisions")
        if np.any(p <= 0.0):
            raise ValueError("'diag precision' should be positive")
        return p

    def log_det_cholesky(self, prec_chol, n_features):
        return np.log(prec_chol).sum(axis=1)

    def prior_covariance(self, covariance):
        return np.diag(covariance).copy()

    def check_covariance_prior(self, prior, n_features):
        p = self._check_shape(prior, (n_features,), f"{self.name} covariance_prior")
        if np.any(p <= 0.0):
            raise ValueError(f"'{self.name} covariance_prior' should be positive")
        return p

    def wishart(self, nk, sk, diff, prior, dof_prior, mean_precision_prior, mean_precision):
        dof = dof_prior + nk
        shrink = (mean_precision_prior / mean_precision)[:, None] * diff**2
        cov = prior + nk[:, None] * (sk + shrink)
        return dof, cov / dof[:, None]


class Spherical(Diag):
    """Each component has its own single variance (a diagonal with equal entries)."""

    name = "spherical"

    def moment_sizes(self, squares, centres, scales):
        # the variance is the mean over features: so is its moments' size
        return CovarianceType.moment_sizes(self, squares, centres, scales) / squares.shape[1]

    def moment_shape(self, n_components, n_features):
        return (n_components,)

    def second_moments(self, xs, x64, resp, nk, sx):
        return resp @ np.einsum("nd,nd->n", x64, x64)

    def move_moments(self, m, nk, sx, delta):
        return m + 2.0 * np.einsum("kd,kd->k", delta, sx) + nk * np.einsum("kd,kd->k", delta, delta)

    def term_bound(self, prec_chol, v):
        return prec_chol**2 * np.einsum("kd,kd->k", v, v)

    def row_scales(self, prec_chol, n_components, n_features):
        return np.broadcast_to((prec_chol * prec_chol)[:, None], (n_components, n_features))

    def covariances(self, nk, means_s, sxx, reg_covar):
        d = means_s.shape[1]
        return (sxx / nk - np.sum(means_s**2, axis=1)) / d + reg_covar

    def log_gaussian(self, xs, means_s, prec_chol, x64=None, means64=None):
        d = xs.shape[1]
        prec = prec_chol**2
        sq = means_s @ xs.T
        sq *= -2.0
        sq += np.einsum("nd,nd->n", xs, xs)
        sq += np.sum(means_s**2, axis=1)[:, None]
        sq *= prec[:, None]
        log_det = d * np.log(prec_chol)
        return -0.5 * (d * _LOG_2PI + sq) + log_det[:, None]

    def n_cov_parameters(self, n_components, n_features):
        return n_components

    def full(self, covariances, n_components, n_features):
        return covariances[:, None, None] * np.eye(n_features)

    def check_precisions(self, precisions, n_components, n_features):
        p = self._check_shape(precisions, (n_components,), "precisions")
        if np.any(p <= 0.0):
            raise ValueError("'spherical precision' should be positive")
        return p

    def log_det_cholesky(self, prec_chol, n_features):
        return n_features * np.log(prec_chol)

    def prior_covariance(self, covariance):
        return np.float64(np.diag(covariance).mean())

    def check_covariance_prior(self, prior, n_features):
        if not isinstance(prior, (int, float, np.integer, np.floating)) or not prior > 0:
            raise ValueError(
                f"'spherical covariance_prior' should be a positive number, got {prior!r}"
            )
        return np.float64(prior)

    def wishart(self, nk, sk, diff, prior, dof_prior, mean_precision_prior, mean_precision):
        dof = dof_prior + nk
        shrink = mean_precision_prior / mean_precision * np.mean(diff**2, axis=1)
        cov = prior + nk * (sk + shrink)
        return dof, cov / dof


def _check_positive(variances: np.ndarray) -> None:
    bad = np.flatnonzero(~(np.atleast_2d(variances.T).T > 0.0).all(axis=-1))
    if bad.size:
        raise DegenerateCovarianceError(int(bad[0]))


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
