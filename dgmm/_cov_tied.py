"""The tied covariance type: one D × D covariance shared by every component."""

from __future__ import annotations

import numpy as np

from ._cov_base import (
    LOG_2PI,
    CovarianceType,
    check_spd,
    chol_from_precision,
    chol_precision,
)
from ._cov_full import Full, _scatter


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
        return chol_precision(covariances, 0)

    def precision_cholesky_from_precisions(self, precisions):
        return chol_from_precision(precisions)

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
        return -0.5 * (d * LOG_2PI + sq) + log_det

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
        check_spd(p[None], "tied precision")
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
