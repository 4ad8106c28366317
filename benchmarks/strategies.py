"""Multi-resolution EM against exhaustive EM, side by side in one run, on a Zarr array.

On one LocalCluster (2 workers × 1 thread, 2 GiB each) and the same float32 Zarr array:

* the sweep K = 1..10 × {full, tied, diag, spherical} × ``n_init=2`` with ``strategy='exact'``
  (every restart's EM on all rows) and ``strategy='sample'`` (EM on a uniform sample first,
  restarts that trail stopped, then all rows);
* one K=10 ``full`` fit with each strategy;
* the variational run over the same types: one `BayesianGaussianMixture` per type at K=10
  (``n_init=2``, ``strategy='sample'``, ``max_iter=300``), against the exact sweep's time.

All with k-means++ seeding, ``tol=1e-3``, ``max_iter=100``, ``random_state=0``. Printed per run:
wall seconds, passes over the data, the selected cell, and the selected model's mean
log-likelihood on all rows (computed after the timing).

    python benchmarks/strategies.py [--rows 1000000] [--features 32] [--json out.json]
        [--parts single,sweep,variational]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed import Client, LocalCluster

import dgmm
from dgmm.io import open_zarr_array, zarr_to_dask
from pipelines.data import make_data

warnings.simplefilter("ignore")

TYPES = ["full", "tied", "diag", "spherical"]


def sweep(x, strategy: str, **common) -> dict:
    t = time.perf_counter()
    found = dgmm.select(x, list(range(1, 11)), TYPES, n_init=2, strategy=strategy, **common)
    seconds = time.perf_counter() - t
    rows = found.results
    return {
        "seconds": seconds,
        "passes": found.n_passes_,
        "selected": found.best_params_,
        "mean_log_likelihood": float(found.best_estimator_.score(x)),
        "stopped": sum((r["error"] or "").startswith("stopped") for r in rows),
        "failed": sum(r["error"] is not None for r in rows),
        "full_data_iterations": sum(r["n_iter"] or 0 for r in rows),
        "sample_iterations": sum(r["sample_iter"] for r in rows),
    }


def variational(x, **common) -> dict:
    t = time.perf_counter()
    found = dgmm.select(
        x,
        10,
        TYPES,
        n_init=2,
        method="variational",
        strategy="sample",
        **{**common, "max_iter": 300},
    )
    seconds = time.perf_counter() - t
    best = found.best_estimator_
    return {
        "seconds": seconds,
        "passes": found.n_passes_,
        "selected": found.best_params_,
        "effective_components": {
            r["covariance_type"]: r["effective_components"] for r in found.cells()
        },
        "stopped_on_the_sample": [r["covariance_type"] for r in found.cells() if r["error"]],
        "sample_iter": {r["covariance_type"]: r["sample_iter"] for r in found.cells()},
        "n_iter": {r["covariance_type"]: r["n_iter"] for r in found.cells()},
        "converged": bool(best.converged_),
        # the posterior-mean mixture's, from the run's scoring pass
        "mean_log_likelihood": next(
            r["log_likelihood"] / x.shape[0]
            for r in found.cells()
            if r["covariance_type"] == found.best_params_["covariance_type"]
        ),
    }


def single(x, strategy: str, **common) -> dict:
    t = time.perf_counter()
    gm = dgmm.GaussianMixture(10, covariance_type="full", strategy=strategy, **common).fit(x)
    seconds = time.perf_counter() - t
    return {
        "seconds": seconds,
        "passes": gm.n_passes_,
        "n_iter": gm.n_iter_,
        "mean_log_likelihood": float(gm.score(x)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tmp", type=Path)
    ap.add_argument("--parts", default="single,sweep,variational")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="dgmm-strategies-", dir=args.tmp))
    out: dict = {"rows": args.rows, "features": args.features, "dtype": "float32"}
    try:
        make_data(tmp / "d.zarr", args.rows, args.features, 8, seed=0, dtype="float32")
        x = zarr_to_dask(open_zarr_array(tmp / "d.zarr" / "X"))
        common = dict(max_iter=100, tol=1e-3, init_params="k-means++", random_state=0)
        with (
            LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                memory_limit="2GiB",
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster),
        ):
            for what, run in (("single_k10_full", single), ("sweep", sweep)):
                if what.split("_")[0] in parts:
                    for strategy in ("sample", "exact"):
                        out[f"{what}_{strategy}"] = run(x, strategy, **common)
                        print(strategy, what, out[f"{what}_{strategy}"], flush=True)
            if "variational" in parts:
                out["variational"] = variational(x, **common)
                print("variational", out["variational"], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for what in ("single_k10_full", "sweep"):
        if f"{what}_exact" in out:
            e, s = out[f"{what}_exact"], out[f"{what}_sample"]
            out[f"{what}_time_ratio"] = s["seconds"] / e["seconds"]
            gain = s["mean_log_likelihood"] - e["mean_log_likelihood"]
            out[f"{what}_log_likelihood_gain"] = gain
    for sweep_run in ("sweep_exact", "sweep_sample"):
        if "variational" in out and sweep_run in out:
            out[f"variational_time_ratio_to_{sweep_run}"] = (
                out["variational"]["seconds"] / out[sweep_run]["seconds"]
            )
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
