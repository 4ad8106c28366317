"""Parameters of one Gaussian mixture and their shifted, compute-dtype view for the kernels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from .covariance import CovarianceType, get_covariance_type

__all__ = [
    "GaussianParams",
    "n_parameters",
]


def along(direction: np.ndarray, columns: Sequence[str] | None = None, shown: int = 5) -> str:
    """The columns a unit ``direction`` runs along, for people: those carrying at least a
    tenth of its squared length, largest first (``columns`` names them, else 0-based)."""
    share = direction**2
    order = [int(i) for i in np.argsort(-share) if share[i] >= 0.1] or [int(np.argmax(share))]
    names = [repr(columns[i]) if columns is not None else str(i) for i in order[:shown]]
    more = f" and {len(order) - shown} more" if len(order) > shown else ""
    kind = "" if columns is not None else " (0-based)"
    noun = "column" if len(order) == 1 else "a combination of columns"
    return f"{noun} {', '.join(names)}{more}{kind}"


def n_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Free parameters of a mixture: covariance + means + (weights − 1)."""
    k, d = n_components, n_features
    return get_covariance_type(covariance_type).n_cov_parameters(k, d) + k * d + k - 1


@dataclass(frozen=True)
class GaussianParams:
    """Weights, means and covariance of a mixture, with the precision Cholesky factors."""

    covariance_type: str
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray

    # What the engine asks of a kind of parameters (`VariationalParams` answers the same): a
    # Gaussian mixture's bound is its mean log-likelihood (per row, no entropy term), and the
    # rows it is judged by on a sample are its log-likelihoods (its evidence is its score).
    bound_needs_entropy: ClassVar[bool] = False
    bound_is_total: ClassVar[bool] = False
    judged: ClassVar[tuple[str, ...]] = ("score",)
    evidence_output: ClassVar[str] = "score"

    @property
    def gaussian(self) -> GaussianParams:
        """The mixture the fit stands for: itself."""
        return self

    def selection_size(self, weight_threshold: float) -> tuple[int, dict]:
        """The free parameters a criterion counts, and what a report shows of the fit besides."""
        return self.n_parameters(), {}

    def checkpoint_arrays(self) -> dict[str, np.ndarray]:
        """Arrays a checkpoint keeps besides the Gaussian ones (none)."""
        return {}

    def checkpoint_prior(self) -> list | None:
        """The priors a checkpoint keeps (none)."""
        return None

    @property
    def strategy(self) -> CovarianceType:
        return get_covariance_type(self.covariance_type)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    def n_parameters(self) -> int:
        """Free parameters: covariance + means + (weights − 1)."""
        return n_parameters(self.covariance_type, *self.means.shape)

    def degenerate(
        self, n_rows: float, reg_covar: float, columns: Sequence[str] | None = None
    ) -> str | None:
        """Why this fit is a spurious maximum, or None (mclust reports such fits as NA).

        A component is degenerate when it holds fewer rows (``weight × n_rows``) than it takes
        for its covariance to be estimable at all (D + 1 for full, 2 for diag and spherical:
        fewer make the sample covariance singular whatever the data; tied shares one), or when
        its covariance without ``reg_covar`` is singular on its own scale (smallest variance
        ≤ 1e-10 × its largest) along a direction in which the whole mixture has spread: it has
        collapsed onto a few rows, its likelihood grows as it shrinks and only the
        regularisation stops it. Collinear data, and tight clusters far apart, make no
        component degenerate. The reason names the columns that direction runs along (by
        ``columns``, else 0-based) and what to do.
        """
        k, d = self.means.shape
        need = {"full": d + 1, "tied": 1, "diag": 2, "spherical": 2}[self.covariance_type]
        rows = self.weights * n_rows
        few = np.flatnonzero(rows < need)
        if few.size:
            j = int(few[0])
            return (
                f"component {j} holds {rows[j]:.3g} rows, fewer than the {need} its "
                f"{self.covariance_type} covariance needs"
            )
        covs = self.strategy.full(self.covariances, k, d) - reg_covar * np.eye(d)
        centred = self.means - self.weights @ self.means
        total = np.einsum("k,kde->de", self.weights, covs) + (centred.T * self.weights) @ centred
        for j in range(k):
            vals, vecs = np.linalg.eigh(covs[j])
            top = max(float(vals[-1]), 0.0)
            # singular on its own scale, along a direction in which the data do spread
            if vals[0] <= 1e-10 * top and vecs[:, 0] @ total @ vecs[:, 0] > 1e-6 * top:
                return (
                    f"component {j} has a singular covariance along "
                    f"{along(vecs[:, 0], columns)} (its smallest variance is at the reg_covar "
                    f"floor {reg_covar:g}): its rows do not vary along it; raise "
                    "reg_covar, drop or standardise those columns, or keep such fits with "
                    "screen_degenerate=False"
                )
        return None

    def shifted(self, shift: np.ndarray, dtype: np.dtype) -> ShiftedParams:
        """The view the E-step kernels use: means relative to ``shift``, cast to ``dtype``."""
        with np.errstate(divide="ignore"):
            log_w = np.log(self.weights)
        centres = self.means - shift
        k, d = self.means.shape
        scales = self.strategy.row_scales(self.precisions_cholesky.astype(np.float64), k, d)
        return ShiftedParams(
            self.strategy,
            log_w.astype(dtype),
            centres.astype(dtype),
            self.precisions_cholesky.astype(dtype),
            centres,
            np.ascontiguousarray(scales),
            centres,
        )


@dataclass(frozen=True)
class ShiftedParams:
    """Kernel-side parameters: log weights, shifted means and factors in the compute dtype,
    the shifted means in float64 (``centres``: the origins rows are re-centred on) and the
    factors' squared row norms (``row_scales``, (K, D) float64: see
    `CovarianceType.row_scales`)."""

    strategy: CovarianceType
    log_weights: np.ndarray
    means_s: np.ndarray
    precisions_cholesky: np.ndarray
    centres: np.ndarray
    row_scales: np.ndarray
    means64: np.ndarray  # ``means_s`` in float64: the means relative to the current origin

    def in_frame(self, j: int) -> ShiftedParams:
        """The same model with component ``j``'s centre as origin."""
        means = self.centres - self.centres[j]
        return replace(self, means_s=means.astype(self.means_s.dtype), means64=means)

    def term_sizes(self, squares: np.ndarray, comps: np.ndarray | None = None) -> np.ndarray:
        """``(n, K)``: the size of the largest expanded term of each component's quadratic form
        (``Pᵀx`` or ``Pᵀμ``, as root-sum-squares of their products: `CovarianceType.row_scales`)
        for rows whose squared shifted values are ``squares`` (n, D), squared; only for the
        components ``comps`` if given."""
        sel = slice(None) if comps is None else comps
        rows = np.sqrt(squares @ self.row_scales[sel].T)
        return (rows + self.centre_sizes()[sel]) ** 2

    def moment_sizes(self, squares: np.ndarray, comps: np.ndarray | None = None) -> np.ndarray:
        """``(n, K)``: `CovarianceType.moment_sizes` of rows with squared shifted values
        ``squares`` (n, D) and of this model's centres in the global frame (only for the
        components ``comps`` if given)."""
        sel = slice(None) if comps is None else comps
        return self.strategy.moment_sizes(squares, self.centres[sel], self.row_scales[sel])

    def centre_sizes(self) -> np.ndarray:
        """(K,): each component's ``Pᵀμ`` term in the global frame, as `term_sizes` measures
        rows (not squared)."""
        return np.sqrt(np.einsum("kd,kd->k", self.centres * self.centres, self.row_scales))

    def log_norms(self) -> np.ndarray:
        """(K,) float64: ``weighted_log_prob`` at a zero quadratic form, so that a row's
        quadratic form under component k is ``2·(log_norms[k] − lp[k])``."""
        k, d = self.means_s.shape
        prec = self.precisions_cholesky.astype(np.float64)
        log_det = np.broadcast_to(self.strategy.log_det_cholesky(prec, d), (k,))
        return self.log_weights.astype(np.float64) + log_det - 0.5 * d * np.log(2 * np.pi)

    def weighted_log_prob(self, xs: np.ndarray, x64: np.ndarray | None = None) -> np.ndarray:
        """``log π_k + log N(x | θ_k)`` for every row of the shifted block, shape (K, n);
        ``x64``, the same rows in float64, lets a type that centres rows per component do so
        in float64."""
        lp = self.strategy.log_gaussian(
            xs, self.means_s, self.precisions_cholesky, x64, None if x64 is None else self.means64
        )
        lp += self.log_weights[:, None]
        return lp
