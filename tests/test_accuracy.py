"""Accuracy at any offset and separation, against a long-double two-pass EM.

Two components of sd ~1 are ``sep`` apart and the whole set sits ``offset`` from the origin,
rows sorted by component (the first rows, which set the global shift, are all one component).
Both fits start from the same explicit init and run 5 EM iterations with tol 0. The reference
takes every moment about the component's own new mean, in ``np.longdouble``; its
responsibilities are exactly 0 or 1 at these separations, so it is the exact answer.
"""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest

from dgmm import GaussianMixture, estep
from dgmm.covariance import get_covariance_type
from dgmm.estep import StatsJob
from dgmm.mstep import m_step
from dgmm.params import GaussianParams
from dgmm.sources import Labels, Posterior

from .conftest import COV_TYPES

A = np.array([[1.0, 0.5], [0.5, 2.0]])
REG = 1e-6
N_ITER = 5
SEPARATIONS = [1e2, 1e4, 1e6, 1e8]
OFFSETS = [0.0, 1e4, 1e7, 1e10]


def _cases():
    for sep, offset, dtype in itertools.product(SEPARATIONS, OFFSETS, ["float64", "float32"]):
        # float32 holds ~7 digits: beyond ~1e5 sd from the origin a unit-sd component is not
        # represented at all (its rows round to a few values), so there is nothing to measure.
        if dtype == "float32" and sep + offset > 1e5:
            continue
        yield sep, offset, dtype


CASES = list(_cases())
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(sep: float, offset: float, dtype: str, n_per: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.multivariate_normal([0.0, 0.0], A, n_per)
    b = rng.multivariate_normal([0.0, 0.0], A, n_per) + np.array([sep, -sep])
    return (np.vstack([a, b]) + offset).astype(dtype)


def _init(sep: float, offset: float, cov_type: str) -> dict:
    prec = np.linalg.inv(A)
    precisions = {
        "full": np.stack([prec, prec]),
        "tied": prec,
        "diag": np.tile(1.0 / np.diag(A), (2, 1)),
        "spherical": np.full(2, 1.0 / np.diag(A).mean()),
    }[cov_type]
    means = np.array([[offset, offset], [offset + sep, offset - sep]])
    return dict(weights_init=[0.5, 0.5], means_init=means, precisions_init=precisions)


def _as_full(cov_type: str, cov: np.ndarray, k: int) -> np.ndarray:
    """(K, D, D) matrices from a covariance type's parameters (covariances or precisions)."""
    eye = np.eye(2, dtype=cov.dtype)
    if cov_type == "full":
        return cov
    if cov_type == "tied":
        return np.stack([cov] * k)
    if cov_type == "diag":
        return np.stack([np.diag(r) for r in cov])
    return np.stack([eye * v for v in cov])


def _inv2(m: np.ndarray) -> np.ndarray:
    """Inverse of 2×2 matrices, in their own (long double) precision."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    return np.stack([np.stack([d, -b], -1), np.stack([-c, a], -1)], -2) / det[..., None, None]


def reference_em(x: np.ndarray, cov_type: str, init: dict, eps: float):
    """scikit-learn's EM in long double, every moment about its own component's new mean."""
    x = x.astype(np.longdouble)
    d = x.shape[1]
    w = np.asarray(init["weights_init"], dtype=np.longdouble)
    mu = np.asarray(init["means_init"], dtype=np.longdouble)
    prec = _as_full(cov_type, np.asarray(init["precisions_init"], dtype=np.longdouble), len(w))
    bounds = []
    for _ in range(N_ITER):
        diff = x[None, :, :] - mu[:, None, :]  # (K, n, D)
        quad = np.einsum("knd,kde,kne->kn", diff, prec, diff)
        logdet = np.log(prec[:, 0, 0] * prec[:, 1, 1] - prec[:, 0, 1] * prec[:, 1, 0])
        lp = np.log(w)[:, None] + 0.5 * logdet[:, None] - 0.5 * (d * np.log(2 * np.pi) + quad)
        m = lp.max(axis=0)
        lse = m + np.log(np.exp(lp - m).sum(axis=0))
        resp = np.exp(lp - lse)
        bounds.append(float(lse.mean()))
        nk = resp.sum(axis=1) + 10 * eps
        mu = resp @ x / nk[:, None]
        diff = x[None, :, :] - mu[:, None, :]
        scatter = np.einsum("kn,knd,kne->kde", resp, diff, diff)
        eye = np.eye(d, dtype=np.longdouble)
        if cov_type == "full":
            cov = scatter / nk[:, None, None] + REG * eye
        elif cov_type == "tied":
            cov = scatter.sum(axis=0) / nk.sum() + REG * eye
        elif cov_type == "diag":
            cov = np.diagonal(scatter, axis1=1, axis2=2) / nk[:, None] + REG
        else:
            cov = np.trace(scatter, axis1=1, axis2=2) / (d * nk) + REG
        w = nk / nk.sum()
        prec = _inv2(_as_full(cov_type, cov, len(w)))
    return w, mu, cov, bounds


def _rel(a, b) -> float:
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)) / np.max(np.abs(b)))


def _fit(x, cov_type: str, init: dict) -> GaussianMixture:
    return GaussianMixture(
        n_components=2, covariance_type=cov_type, max_iter=N_ITER, tol=0.0, reg_covar=REG, **init
    ).fit(x)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_exact_at_any_offset_and_separation(cov_type):
    """Covariances within 1e-9 (float64) / 1e-4 (float32) of the exact EM, means within
    1e-12 of the scale, at separations 1e2…1e8 and offsets 0…1e10; float32 lower bounds never
    decrease."""
    failures = []
    for sep, offset, dtype in CASES:
        x = _data(sep, offset, dtype, 1000)
        init = _init(sep, offset, cov_type)
        eps = float(np.finfo(dtype).eps)
        w, mu, cov, bounds = reference_em(x, cov_type, init, eps)
        try:
            ours = _fit(x, cov_type, init)
        except ValueError as e:
            failures.append(f"sep={sep:g} offset={offset:g} {dtype}: {e}")
            continue
        scale = max(1.0, sep + offset)
        cov_tol, mean_tol, bound_tol = (
            (1e-9, 1e-12, 1e-10) if dtype == "float64" else (1e-4, eps, 1e-4)
        )
        errors = {
            "covariances": (_rel(ours.covariances_, cov), cov_tol),
            "means": (np.max(np.abs(ours.means_ - np.asarray(mu, np.float64))) / scale, mean_tol),
            "weights": (_rel(ours.weights_, w), 1e-12),
            "lower bounds": (_rel(ours.lower_bounds_, bounds), bound_tol),
        }
        if dtype == "float32":
            errors["bound decrease"] = (-min(np.diff(ours.lower_bounds_), default=0.0), 1e-6)
        # both paths are under test: rows 1e4 sd and more from the shift (the first rows'
        # mean, in the first cluster) are re-centred, rows 1e2 sd from it are not (but for
        # float32 diag and spherical, whose forms are expanded into squares)
        squares = dtype == "float32" and cov_type in ("diag", "spherical")
        if sep >= 1e4 and not ours.recentred_fraction_ > 0:
            failures.append(f"sep={sep:g} offset={offset:g} {dtype}: no row re-centred")
        if sep <= 1e2 and not squares and ours.recentred_fraction_ != 0:
            failures.append(f"sep={sep:g} offset={offset:g} {dtype}: rows re-centred")
        for what, (err, tol) in errors.items():
            if not err <= tol:
                failures.append(f"sep={sep:g} offset={offset:g} {dtype}: {what} {err:.2e} > {tol}")
    assert not failures, "\n".join(failures)


def _layouts(n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=9, replace=False))
    uneven = tuple(int(c) for c in np.diff(np.concatenate(([0], cuts, [n]))))
    return [(1,) * n, (7,) * (n // 7) + ((n % 7,) if n % 7 else ()), uneven]


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_chunk_layout_does_not_change_the_fit(cov_type):
    """numpy input and Dask input with 1-row, 7-row and uneven chunks give one fit (float64
    within 1e-10 relative; float32 within 1e-6) at any separation and offset."""
    rng = np.random.default_rng(11)
    failures = []
    for sep, offset, dtype in [
        (1e4, 0.0, "float64"),
        (1e8, 1e10, "float64"),
        (1e4, 1e4, "float32"),
    ]:
        x = _data(sep, offset, dtype, 25, seed=3)
        init = _init(sep, offset, cov_type)
        base = _fit(x, cov_type, init)
        tol = 1e-10 if dtype == "float64" else 1e-6
        for chunks in _layouts(len(x), rng):
            other = _fit(da.from_array(x, chunks=(chunks, 2)), cov_type, init)
            for name in ("weights_", "means_", "covariances_"):
                err = _rel(getattr(other, name), getattr(base, name))
                if name == "means_":
                    err = np.max(np.abs(other.means_ - base.means_)) / max(1.0, sep + offset)
                if not err <= tol:
                    failures.append(
                        f"sep={sep:g} offset={offset:g} {dtype} {len(chunks)} blocks: "
                        f"{name} {err:.2e}"
                    )
    assert not failures, "\n".join(failures)


def _random_params(cov_type: str, k: int, d: int, rng: np.random.Generator) -> GaussianParams:
    a = rng.normal(size=(k, d, d)) / np.sqrt(d)
    full = a @ a.transpose(0, 2, 1) + np.eye(d) * rng.uniform(0.2, 2.0, (k, 1, 1))
    covs = {
        "full": full,
        "tied": full[0],
        "diag": np.stack([np.diag(c) for c in full]),
        "spherical": np.array([np.trace(c) / d for c in full]),
    }[cov_type]
    strategy = get_covariance_type(cov_type)
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(scale=3.0, size=(k, d))
    return GaussianParams(cov_type, weights, means, covs, strategy.precision_cholesky(covs))


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_recentred_rows_give_the_global_frames_fit(cov_type, monkeypatch):
    """Where the global frame is exact (rows near the offset), re-centring every row on its
    nearest component gives the same M-step, for models and hard assignments, with and without
    weights, float64 and float32: the frames and `move_moments` lose nothing."""
    for seed in range(30):
        rng = np.random.default_rng(seed)
        k, d, n = int(rng.integers(1, 6)), int(rng.integers(1, 9)), int(rng.integers(1, 300))
        dtype = rng.choice([np.float64, np.float32])
        params = _random_params(cov_type, k, d, rng)
        x = (params.means[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(dtype)
        w = rng.uniform(0.0, 3.0, n) if rng.random() < 0.5 else None
        shift = x[:3].mean(axis=0).astype(np.float64)
        strategy = params.strategy
        labels = rng.integers(k, size=n)
        centres = (
            np.stack(
                [x[labels == j].mean(axis=0) if (labels == j).any() else x[0] for j in range(k)]
            )
            - shift
        )
        fits = {}
        for framed in (False, True):
            monkeypatch.setattr(estep, "FRAME_LOSS", -1.0 if framed else 1e300)
            monkeypatch.setattr(estep, "FRAME_MOMENT_LOSS", -1.0 if framed else 1e300)
            jobs = [
                StatsJob(Posterior(params.shifted(shift, estep.compute_dtype(x.dtype))), strategy),
                StatsJob(Labels(labels, k, centres if framed else None), strategy),
            ]
            stats = estep.chunk_statistics(x, w, 0, shift, jobs)
            fits[framed] = [m_step(st, strategy, 1e-6, shift, 1e-15) for st in stats]
            fits[framed].append(stats[0].loglik)
        for a, b in zip(fits[False][:2], fits[True][:2], strict=True):
            tol = 1e-9 if dtype == np.float64 else 1e-5
            np.testing.assert_allclose(a.weights, b.weights, rtol=tol, atol=tol)
            used = a.weights > 1e-9  # a component with no weight has no defined mean
            np.testing.assert_allclose(a.means[used], b.means[used], rtol=tol, atol=tol)
            covs_a, covs_b = (
                (a.covariances, b.covariances)
                if cov_type == "tied" or used.all()
                else (a.covariances[used], b.covariances[used])
            )
            np.testing.assert_allclose(covs_a, covs_b, rtol=tol, atol=tol)
        assert fits[False][2] == pytest.approx(fits[True][2], rel=1e-5, abs=1e-5)


def _standardised(rng: np.random.Generator, d: int, k: int, ratio: float):
    """Standardised rows of K randomly oriented clusters whose variances span ``ratio``
    (log-uniform), centres N(0, 1) per feature, with the per-cluster means and precisions of
    the result (the state EM is in for most of its iterations)."""
    n_per = 6 * d
    parts = []
    for _ in range(k):
        rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
        sd = 0.5 * np.exp(rng.uniform(-0.5 * np.log(ratio), 0.0, size=d))
        parts.append(rng.normal(size=d) + (rng.normal(size=(n_per, d)) * sd) @ rotation.T)
    x = np.concatenate(parts)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    blocks = x.reshape(k, n_per, d)
    means = blocks.mean(axis=1)
    covs = np.stack([np.cov(b, rowvar=False, bias=True) + 1e-6 * np.eye(d) for b in blocks])
    return x, means, covs


@pytest.mark.parametrize("seed", range(4))
def test_standardised_clusters_stay_in_the_global_frame(seed):
    """Generated standardised data at D = 64…256 (clusters whose variances span up to 100×)
    re-centres no row, full and diag, float64 and float32, and its fit is scikit-learn's."""
    from sklearn.mixture import GaussianMixture as SkGM

    rng = np.random.default_rng(seed)
    d = int(rng.choice([64, 96, 128, 192, 256]))
    k = int(rng.integers(2, 5 if d > 128 else 9))
    x, means, covs = _standardised(rng, d, k, float(rng.uniform(2.0, 100.0)))
    for cov_type in ("full", "diag"):
        prec = np.linalg.inv(covs) if cov_type == "full" else 1.0 / np.diagonal(covs, 0, 1, 2)
        init = {"weights_init": np.full(k, 1 / k), "means_init": means, "precisions_init": prec}
        ref = SkGM(k, covariance_type=cov_type, max_iter=2, tol=0, **init).fit(x)
        for dtype in ("float64", "float32"):
            gm = GaussianMixture(k, covariance_type=cov_type, max_iter=2, tol=0, **init)
            gm.fit(x.astype(dtype))
            where = f"D={d} K={k} {cov_type} {dtype}"
            assert gm.recentred_fraction_ == 0.0, where
            tol = 1e-10 if dtype == "float64" else 1e-5
            assert gm.lower_bound_ == pytest.approx(ref.lower_bound_, rel=tol), where
            assert _rel(gm.covariances_, ref.covariances_) < (1e-9 if tol < 1e-6 else 1e-3), where
