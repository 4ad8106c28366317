"""High-dimensional sweeps on small workers: bounded memory, no worker restarted.

Runs `dgmm.select` on a LocalCluster of two single-threaded worker processes with a memory
limit (1 GiB by default), for each case:

- ``full256``: D=256, full, K=1..16 × n_init 2, 60 000 rows in 5 000-row chunks (~142 MB of
  statistics per block when all candidates share one pass);
- ``diag1024``: D=1024, diag, K=1..32, 60 000 rows in 5 000-row chunks.

The data is a float32 Zarr array. It samples every worker's resident memory (RSS) five times a
second and reports the peak per worker, the worker PIDs before and after (a restarted worker
has a new PID), the passes per EM iteration the memory plan chose, and the wall time.

Usage: python benchmarks/high_dim.py [--cases full256,diag1024] [--memory-limit 1GiB]
       [--max-iter 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
from out_of_core import PeakRSS  # this folder is on the path when a script here runs

# Worker processes are spawned and re-run this file's top-level imports: anything heavier than
# numpy is imported inside the functions, so the workers hold what a `dgmm run`'s workers hold.

CASES = {
    "full256": {"n_features": 256, "covariance_types": ["full"], "ks": range(1, 17), "n_init": 2},
    "diag1024": {"n_features": 1024, "covariance_types": ["diag"], "ks": range(1, 33), "n_init": 1},
}


def _data(path: Path, n: int, d: int, chunk: int):
    import zarr

    rng = np.random.default_rng(0)
    z = zarr.create_array(str(path), shape=(n, d), chunks=(chunk, d), dtype="float32")
    for r0 in range(0, n, chunk):
        block = rng.normal(size=(min(chunk, n - r0), d)).astype(np.float32)
        block[: len(block) // 2] += 3.0  # two groups, so that K matters
        z[r0 : r0 + len(block)] = block
    return zarr.open_array(str(path), mode="r")


def run_case(name: str, memory_limit: str, rows: int, chunk: int, max_iter: int) -> dict:
    from distributed import Client, LocalCluster

    import dgmm
    from dgmm.io import zarr_to_dask
    from dgmm.memory import plan_for

    case = CASES[name]
    d, ks, types = case["n_features"], list(case["ks"]), case["covariance_types"]
    with tempfile.TemporaryDirectory() as tmp:
        x = zarr_to_dask(_data(Path(tmp) / "x.zarr", rows, d, chunk))
        with (
            LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                memory_limit=memory_limit,
                host="127.0.0.1",
                dashboard_address=None,
                preload=["dgmm.worker"],
            ) as cluster,
            Client(cluster) as client,
        ):
            pids = client.run(lambda: psutil.Process().pid)
            limit = min(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
            cands = [(c, k) for c in types for k in ks] * case["n_init"]
            plan = plan_for(cands, d, chunk, 4, limit)
            t = time.perf_counter()
            with PeakRSS() as rss, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = dgmm.select(
                    x,
                    ks,
                    types,
                    n_init=case["n_init"],
                    init_params="random_from_data",
                    max_iter=max_iter,
                    tol=0,
                    random_state=0,
                )
            seconds = time.perf_counter() - t
            after = client.run(lambda: psutil.Process().pid)
    best = found.best_params_
    return {
        "case": name,
        "rows": rows,
        "n_features": d,
        "chunk_rows": chunk,
        "candidates": len(found.results),
        "failed": sum(r["error"] is not None for r in found.results),
        "memory_limit_bytes": limit,
        "passes_per_iteration": len(plan.batches),
        "planned_task_bytes": plan.task_bytes,
        "passes": found.n_passes_,
        "seconds": seconds,
        "worker_peak_rss_bytes": sorted(rss.per_pid.get(p, 0) for p in pids.values()),
        "workers_restarted": sorted(set(pids.values()) - set(after.values())) != [],
        "selected": [best["covariance_type"], best["n_components"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="full256,diag1024")
    ap.add_argument("--memory-limit", default="1GiB")
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--chunk-rows", type=int, default=5_000)
    ap.add_argument("--max-iter", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = []
    for name in args.cases.split(","):
        rec = run_case(name, args.memory_limit, args.rows, args.chunk_rows, args.max_iter)
        out.append(rec)
        peaks = ", ".join(f"{b / 2**20:.0f}" for b in rec["worker_peak_rss_bytes"])
        print(
            f"{name}: {rec['candidates']} candidates ({rec['failed']} failed), "
            f"{rec['passes_per_iteration']} pass(es) per iteration, {rec['passes']} passes in "
            f"{rec['seconds']:.0f} s; worker peak RSS {peaks} MiB of "
            f"{rec['memory_limit_bytes'] / 2**20:.0f}; restarted: {rec['workers_restarted']}; "
            f"selected {rec['selected']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
