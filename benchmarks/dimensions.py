"""Per-iteration EM time against scikit-learn from D = 16 to 256, with the rows re-centred.

For each case (N rows, D features, K components), covariance type (full, diag) and dtype
(float64, float32), dgmm and scikit-learn fit the same seeded data from the same explicit
initialisation with ``tol=0``; the time per iteration is the difference between the fastest
fit of ``1 + m`` iterations and the fastest fit of 1, divided by ``m`` (set-up and the final
E-step cancel), measured in the same run. scikit-learn always fits the float64 data; dgmm's
float32 fit is also compared with its own float64 fit.

Data (``--data``):

- ``standardised`` (default): K clusters, each with its own random orientation and variances
  spread log-uniformly over a 100-fold range, centres drawn N(0, 1) per feature, then every
  column standardised — what embeddings and engineered features look like after scaling;
- ``separated``: `run.make_case`, unit-variance clusters with centres N(0, 4²) per feature.

``floor`` (diag only) is the time of the four dense ``K × D × N`` products that dgmm's and
scikit-learn's diag iterations both compute (``Σ x·μP`` and ``Σ x²·P`` in the E-step, ``Σ τx``
and ``Σ τx²`` in the M-step), on the whole array with every BLAS thread, best of 5; ``ceil``
is scikit-learn's time over it, the most a kernel built on those products can gain. (Full
covariance has no such common floor: dgmm's triangular projection and symmetric update do
fewer operations than scikit-learn's products.)

``recentred`` is the fraction of the fit's rows × E-steps that were re-centred on a component's
mean (`GaussianMixture.recentred_fraction_`; 0 means every row was computed in the global
frame). ``lb rel`` is ``|lower bound / scikit-learn's − 1|`` after the same iterations.

Usage: python benchmarks/dimensions.py [--quick] [--case N,D,K ...] [--data standardised]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
from run import explicit_init, make_case  # this folder is on the path

warnings.simplefilter("ignore")

FULL_CASES = [(1_000_000, 16, 8), (400_000, 32, 16), (200_000, 64, 16), (60_000, 128, 16)]
FULL_CASES += [(30_000, 256, 16)]
# smaller, with enough rows per cluster (several times D) for its covariance to be estimable
QUICK_CASES = [(200_000, 16, 8), (60_000, 32, 8), (40_000, 64, 8), (20_000, 128, 4)]
QUICK_CASES += [(20_000, 256, 4)]
COV_TYPES = ("full", "diag")


def make_standardised(n: int, d: int, k: int, seed: int = 0, ratio: float = 100.0) -> np.ndarray:
    """K clusters, randomly oriented, variances log-uniform over a ``ratio``-fold range,
    centres N(0, 1) per feature; every column then standardised."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    labels = rng.integers(k, size=n)
    x = np.empty((n, d))
    for j in range(k):
        rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
        sd = 0.5 * np.exp(rng.uniform(-0.5 * np.log(ratio), 0.0, size=d))
        rows = np.flatnonzero(labels == j)
        x[rows] = centres[j] + (rng.normal(size=(len(rows), d)) * sd) @ rotation.T
    return (x - x.mean(axis=0)) / x.std(axis=0)


DATA = {"standardised": make_standardised, "separated": make_case}


def per_iteration(make, x: np.ndarray, m: int, repeats: int) -> tuple[float, object]:
    """(fastest fit of ``1 + m`` iterations − fastest fit of 1) / ``m``, and the longer fit."""
    one = min(_timed(make(1), x)[0] for _ in range(repeats))
    runs = [_timed(make(1 + m), x) for _ in range(repeats)]
    seconds, model = min(runs, key=lambda r: r[0])
    return (seconds - one) / m, model


def _timed(model, x: np.ndarray) -> tuple[float, object]:
    t = time.perf_counter()
    model.fit(x)
    return time.perf_counter() - t, model


def product_floor(x: np.ndarray, k: int, repeats: int = 5) -> float:
    """Seconds of the four dense products of one exact diag EM iteration (see above)."""
    rng = np.random.default_rng(1)
    tau, means = rng.random((k, x.shape[0])), rng.normal(size=(k, x.shape[1]))
    prec = rng.random((k, x.shape[1]))
    sq = x * x
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        _ = (means * prec) @ x.T, prec @ sq.T, tau @ x, tau @ sq
        best = min(best, time.perf_counter() - t)
    return best


def run(cases, data: str, m: int, repeats: int) -> list[dict]:
    from sklearn.mixture import GaussianMixture as SkGM

    from dgmm import GaussianMixture

    print(
        f"{'N':>9} {'D':>4} {'K':>3} {'cov':>5} {'dtype':>8} {'s/it':>8} {'sk s/it':>8} "
        f"{'x sk':>6} {'x f64':>6} {'floor':>7} {'ceil':>5} {'recentred':>9} {'lb rel':>8}"
    )
    out = []
    for n, d, k in cases:
        x64 = DATA[data](n, d, k)
        for cov in COV_TYPES:
            init = explicit_init(x64, k, cov)
            floor = product_floor(x64, k) if cov == "diag" else float("nan")
            sk_t, sk_model = per_iteration(
                lambda it, init=init, cov=cov, k=k: SkGM(
                    k, covariance_type=cov, tol=0, max_iter=it, **init
                ),
                x64,
                m,
                repeats,
            )
            f64_t = None
            for dtype in ("float64", "float32"):
                t, model = per_iteration(
                    lambda it, init=init, cov=cov, k=k: GaussianMixture(
                        k, covariance_type=cov, tol=0, max_iter=it, **init
                    ),
                    x64.astype(dtype),
                    m,
                    repeats,
                )
                f64_t = t if dtype == "float64" else f64_t
                rec = {
                    "n": n,
                    "d": d,
                    "k": k,
                    "covariance_type": cov,
                    "dtype": dtype,
                    "seconds_per_iter": t,
                    "sklearn_seconds_per_iter": sk_t,
                    "speedup_vs_sklearn": sk_t / t,
                    "speedup_vs_float64": f64_t / t,
                    "product_floor_seconds": floor,
                    "sklearn_over_floor": sk_t / floor,
                    # (nan for a dgmm from before the count: `--case` runs compare versions)
                    "recentred_fraction": getattr(model, "recentred_fraction_", float("nan")),
                    "lower_bound_rel_diff": abs(model.lower_bound_ / sk_model.lower_bound_ - 1),
                }
                out.append(rec)
                print(
                    f"{n:>9,} {d:>4} {k:>3} {cov:>5} {dtype:>8} {t:8.3f} {sk_t:8.3f} "
                    f"{sk_t / t:6.2f} {f64_t / t:6.2f} {floor:7.3f} {sk_t / floor:5.1f} "
                    f"{rec['recentred_fraction']:9.3f} "
                    f"{rec['lower_bound_rel_diff']:8.1e}",
                    flush=True,
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller cases, a few minutes")
    ap.add_argument("--data", choices=sorted(DATA), default="standardised")
    ap.add_argument("--case", action="append", metavar="N,D,K", help="only these cases")
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--json", default=None, help="write results here (default: print only)")
    args = ap.parse_args()
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.case:
        cases = [tuple(int(v) for v in c.split(",")) for c in args.case]
    results = run(cases, args.data, args.iterations, 2)
    if args.json:
        meta = {
            "data": args.data,
            "iterations_timed": args.iterations,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": sys.version.split()[0],
            },
        }
        with open(args.json, "w") as f:
            json.dump({**meta, "results": results}, f, indent=2)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
