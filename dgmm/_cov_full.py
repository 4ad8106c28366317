"""The full covariance type: one D × D covariance per component."""

from __future__ import annotations

import numpy as np

from ._cov_base import (
    LOG_2PI,
    CovarianceType,
    check_spd,
    chol_from_precision,
    chol_precision,
)

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
        return np.stack([chol_precision(c, k) for k, c in enumerate(covariances)])

    def precision_cholesky_from_precisions(self, precisions):
        return np.stack([chol_from_precision(p) for p in precisions])

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
            return -0.5 * (d * LOG_2PI + sq) + log_det[:, None]
        # One GEMM against all factors side by side: (K·D, D) @ (D, n), component-major.
        p_all = prec_chol.transpose(0, 2, 1).reshape(k * d, d)
        y = p_all @ xs.T
        y -= np.einsum("kd,kde->ke", means_s, prec_chol).reshape(k * d, 1)
        y *= y
        sq = y.reshape(k, d, n).sum(axis=1)
        return -0.5 * (d * LOG_2PI + sq) + log_det[:, None]

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
        check_spd(p, "full precision")
        return p

    def log_det_cholesky(self, prec_chol, n_features):
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)

    def prior_covariance(self, covariance):
        return np.atleast_2d(covariance)

    def check_covariance_prior(self, prior, n_features):
        p = self._check_shape(prior, (n_features, n_features), f"{self.name} covariance_prior")
        check_spd(p[None], f"{self.name} covariance_prior")
        return p

    def wishart(self, nk, sk, diff, prior, dof_prior, mean_precision_prior, mean_precision):
        dof = dof_prior + nk
        outer = diff[:, :, None] * diff[:, None, :]
        shrink = nk * mean_precision_prior / mean_precision
        cov = prior + nk[:, None, None] * sk + shrink[:, None, None] * outer
        return dof, cov / dof[:, None, None]
