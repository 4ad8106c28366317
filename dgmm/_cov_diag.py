"""The diag and spherical covariance types: per-feature variances per component, or one
variance per component."""

from __future__ import annotations

import numpy as np

from ._cov_base import (
    LOG_2PI,
    CovarianceType,
    check_positive,
)


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
        check_positive(covariances)
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
        return -0.5 * (d * LOG_2PI + sq) + log_det[:, None]

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
        return -0.5 * (d * LOG_2PI + sq) + log_det[:, None]

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
