"""Soak: many consecutive fits on one LocalCluster must not grow memory or leak tasks.

Runs ``--fits`` (default 100) small fits (cycling covariance types and seeds) of a Zarr array on
one ``LocalCluster`` with worker processes, then compares the resident memory of the client
process and of every worker after the warm-up fits with their memory at the end, and collects
every warning logged by the client, the scheduler and the workers.

    python benchmarks/soak.py            # exit status 1 if memory grew > 50 MB or a warning
    python benchmarks/soak.py --json soak.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import zarr
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgmm import GaussianMixture

MB = 2**20
COV_TYPES = ("full", "tied", "diag", "spherical")


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _worker_rss() -> int:
    import gc as _gc

    import psutil as _psutil

    _gc.collect()
    return _psutil.Process().memory_info().rss


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()[:300]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fits", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--limit-mb", type=float, default=50.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    collect = _Collect()
    logging.getLogger().addHandler(collect)  # client and (in-process) scheduler loggers
    logging.getLogger("distributed").addHandler(collect)
    tmp = Path(tempfile.mkdtemp(prefix="dgmm-soak-"))
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6, size=(4, 4))
    x = centres[rng.integers(0, 4, args.rows)] + rng.normal(size=(args.rows, 4))
    arr = zarr.create_array(str(tmp / "x.zarr"), shape=x.shape, chunks=(5_000, 4), dtype="f8")
    arr[...] = x

    with (
        warnings.catch_warnings(record=True) as caught,
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="1GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        base = None
        for i in range(args.fits):
            gm = GaussianMixture(
                4,
                covariance_type=COV_TYPES[i % 4],
                init_params="k-means++",
                random_state=i,
                max_iter=30,
                tol=1e-4,
            ).fit(str(tmp / "x.zarr"))
            assert np.isfinite(gm.lower_bound_)
            if i + 1 == args.warmup:
                base = (_rss(), client.run(_worker_rss))
        end = (_rss(), client.run(_worker_rss))
        seconds = time.perf_counter() - t0
        worker_logs = client.get_worker_logs()
        scheduler_tasks = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))

    logging.getLogger().removeHandler(collect)
    logging.getLogger("distributed").removeHandler(collect)
    growth = {"client": (end[0] - base[0]) / MB}
    for addr, rss in end[1].items():
        if addr in base[1]:
            growth[f"worker {addr}"] = (rss - base[1][addr]) / MB
    logged = list(collect.records)
    for addr, lines in worker_logs.items():
        logged += [f"{addr}: {msg[:300]}" for level, msg in lines if level in ("WARNING", "ERROR")]
    py_warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    result = {
        "fits": args.fits,
        "warmup": args.warmup,
        "rows": args.rows,
        "seconds": round(seconds, 1),
        "rss_after_warmup_mb": {
            "client": round(base[0] / MB, 1),
            **{f"worker {a}": round(r / MB, 1) for a, r in base[1].items()},
        },
        "growth_mb": {k: round(v, 1) for k, v in growth.items()},
        "tasks_left_on_scheduler": scheduler_tasks,
        "logged_warnings": logged,
        "python_warnings": py_warnings,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    problems = [f"{k} grew {v:.1f} MB" for k, v in growth.items() if v > args.limit_mb]
    problems += [f"logged: {m}" for m in logged]
    problems += [f"tasks left on the scheduler: {scheduler_tasks}"] if scheduler_tasks else []
    for p in problems:
        print("FAIL", p, file=sys.stderr)
    if not problems:
        print(f"OK: {args.fits} fits, growth within {args.limit_mb:g} MB, no warnings logged")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
