"""Per-iteration EM time of dgmm against scikit-learn, measured side by side in one run.

For every case and covariance type both estimators fit the same seeded data from the same
explicit initialisation with ``tol=0``; the time per iteration is the difference between a fit
of ``1 + m`` iterations and a fit of 1 iteration, divided by ``m``, so set-up and scikit-learn's
final E-step cancel out. The matrix-product ceiling is measured in the same run on the shapes
of the E-step, with one BLAS thread per core, all cores busy. ``dask/direct`` compares the fit
with the same kernels and M-step called directly on the same chunks from plain threads.

Flop model per EM iteration (N rows, K components, D features): full 4·N·K·D²; tied
4·N·D² + 3·N·K·D; diag 8·N·K·D; spherical 4·N·K·D (E-step products plus M-step moments).

Usage: python benchmarks/run.py [--quick] [--case N,D,K ...] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

warnings.simplefilter("ignore")

FULL_CASES = [(1_000_000, 16, 8), (200_000, 64, 16), (2_000_000, 4, 4)]
QUICK_CASES = [(200_000, 16, 8), (40_000, 64, 16), (400_000, 4, 4)]
COV_TYPES = ("full", "tied", "diag", "spherical")


def flops(cov: str, n: int, k: int, d: int) -> float:
    return {
        "full": 4.0 * n * k * d * d,
        "tied": 4.0 * n * d * d + 3.0 * n * k * d,
        "diag": 8.0 * n * k * d,
        "spherical": 4.0 * n * k * d,
    }[cov]


def make_case(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    return centers[rng.integers(k, size=n)] + rng.normal(size=(n, d))


def explicit_init(X: np.ndarray, k: int, cov: str) -> dict:
    d = X.shape[1]
    var = float(X[:10_000].var(axis=0).mean())
    prec = {
        "full": np.stack([np.eye(d) / var] * k),
        "tied": np.eye(d) / var,
        "diag": np.full((k, d), 1 / var),
        "spherical": np.full(k, 1 / var),
    }[cov]
    idx = np.linspace(0, len(X) - 1, k).astype(int)
    return {"weights_init": np.full(k, 1 / k), "means_init": X[idx], "precisions_init": prec}


def per_iteration(make, X, m: int, repeats: int) -> tuple[float, object]:
    """Best-of-``repeats`` of (t(1 + m iterations) − t(1 iteration)) / m."""
    best, model = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        make(1).fit(X)
        t1 = time.perf_counter() - t
        t = time.perf_counter()
        model = make(1 + m).fit(X)
        t2 = time.perf_counter() - t
        best = min(best, (t2 - t1) / m)
    return best, model


def gemm_ceiling(n: int, d: int, kd: int, dtype, seconds: float = 1.0) -> float:
    """GFLOP/s of (rows × D)(D × K·D) products on every core at once, one BLAS thread each."""
    cores = os.cpu_count() or 1
    rows = 2048
    a = np.random.default_rng(0).normal(size=(rows, d)).astype(dtype)
    b = np.random.default_rng(1).normal(size=(d, kd)).astype(dtype)

    def work() -> int:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            a @ b
            count += 1
        return count

    with threadpool_limits(1), ThreadPoolExecutor(cores) as pool:
        work()
        t = time.perf_counter()
        total = sum(pool.map(lambda _: work(), range(cores)))
        elapsed = time.perf_counter() - t
    return total * 2.0 * rows * d * kd / elapsed / 1e9


def kernel_direct(X: np.ndarray, cov: str, init: dict, m: int) -> float:
    """The same per-block kernel and M-step called directly, per iteration: the array's row
    chunks (as dgmm chunks in-memory input) spread over one plain thread per core."""
    from dgmm.covariance import get_covariance_type
    from dgmm.estep import StatsJob, chunk_statistics
    from dgmm.inputs import in_memory_chunk_rows
    from dgmm.mstep import m_step
    from dgmm.params import GaussianParams
    from dgmm.sources import Posterior
    from dgmm.stats import sum_stats

    strat = get_covariance_type(cov)
    pc = strat.precision_cholesky_from_precisions(init["precisions_init"])
    p = GaussianParams(
        cov,
        init["weights_init"],
        init["means_init"],
        strat.covariances_from_precision_cholesky(pc),
        pc,
    )
    shift = X[:1024].mean(axis=0)
    rows = in_memory_chunk_rows(*X.shape, X.dtype.itemsize)
    chunks = [(X[s : s + rows], s) for s in range(0, len(X), rows)]
    eps = float(np.finfo(X.dtype).eps)
    with threadpool_limits(1), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        t = time.perf_counter()
        for _ in range(m):
            job = StatsJob(Posterior(p.shifted(shift, X.dtype)), strat)
            parts = list(
                pool.map(
                    lambda c, job=job: chunk_statistics(c[0], None, c[1], shift, [job]), chunks
                )
            )
            p = m_step(sum_stats(parts)[0], strat, 1e-6, shift, eps)
        return (time.perf_counter() - t) / m


def run(cases, m: int, repeats: int, quick: bool) -> dict:
    from sklearn.mixture import GaussianMixture as SkGM

    from dgmm import GaussianMixture

    results = []
    for n, d, k in cases:
        X64 = make_case(n, d, k)
        ceiling = {str(dt): gemm_ceiling(n, d, k * d, dt) for dt in ("float64", "float32")}
        print(
            f"\nN={n:,} D={d} K={k}: matrix-product ceiling (all cores) "
            f"{ceiling['float64']:.1f} GFLOP/s float64, {ceiling['float32']:.1f} float32"
        )
        print(
            f"{'cov':>10} {'dtype':>8} {'s/it':>8} {'sk s/it':>8} {'x sk':>6} {'GFLOP/s':>8} "
            f"{'ceil%':>6} {'x f64':>6} {'lb rel':>8} {'dask/direct':>11}"
        )
        for cov in COV_TYPES:
            init = explicit_init(X64, k, cov)
            row = {"n": n, "d": d, "k": k, "covariance_type": cov}
            sk_t, _ = per_iteration(
                lambda it, init=init, cov=cov, k=k: SkGM(
                    k, covariance_type=cov, tol=0, max_iter=it, **init
                ),
                X64,
                m,
                repeats,
            )
            for dtype in ("float64", "float32"):
                X = X64.astype(dtype)
                t, model = per_iteration(
                    lambda it, init=init, cov=cov, k=k: GaussianMixture(
                        k, covariance_type=cov, tol=0, max_iter=it, **init
                    ),
                    X,
                    m,
                    repeats,
                )
                fl = flops(cov, n, k, d) / t / 1e9
                direct = min(kernel_direct(X, cov, init, m) for _ in range(repeats))
                rec = {
                    "dtype": dtype,
                    "seconds_per_iter": t,
                    "sklearn_seconds_per_iter": sk_t,
                    "speedup_vs_sklearn": sk_t / t,
                    "gflops": fl,
                    "ceiling_gflops": ceiling[dtype],
                    "ceiling_fraction": fl / ceiling[dtype],
                    "direct_kernels_seconds": direct,
                    "dask_cost_vs_kernel": t / direct,
                    "lower_bound": model.lower_bound_,
                }
                if dtype == "float64":
                    f64 = rec
                else:
                    rec["speedup_vs_float64"] = f64["seconds_per_iter"] / t
                    rec["lower_bound_rel_diff"] = abs(model.lower_bound_ / f64["lower_bound"] - 1)
                results.append({**row, **rec})
                print(
                    f"{cov:>10} {dtype:>8} {t:8.3f} {sk_t:8.3f} {sk_t / t:6.2f} {fl:8.1f} "
                    f"{100 * fl / ceiling[dtype]:5.0f}% "
                    f"{rec.get('speedup_vs_float64', 1.0):6.2f} "
                    f"{rec.get('lower_bound_rel_diff', 0.0):8.1e} "
                    f"{rec['dask_cost_vs_kernel']:11.2f}",
                    flush=True,
                )
    blas = [
        {
            k: v
            for k, v in i.items()
            if k in ("internal_api", "version", "architecture", "num_threads")
        }
        for i in threadpool_info()
    ]
    return {
        "quick": quick,
        "iterations_timed": m,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "blas": blas,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        },
        "results": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller cases, under ~2 minutes")
    ap.add_argument("--json", default=None, help="write results here (default: print only)")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument(
        "--case", action="append", default=None, metavar="N,D,K", help="only these cases"
    )
    args = ap.parse_args()
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.case:
        cases = [tuple(int(v) for v in c.split(",")) for c in args.case]
    m = args.iterations or (3 if args.quick else 4)
    out = run(cases, m, 2, args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
