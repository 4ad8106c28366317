"""The lockstep sweep against one fit: wall time and bytes read, on a Zarr array.

Fits, on one LocalCluster (2 workers × 1 thread, 2 GiB each), from the same float32 Zarr array:

* the sweep: K = 1..10 × {full, tied, diag, spherical} × ``n_init=2`` (80 candidates) in lockstep;
* one K=10 ``full`` fit;

both with k-means++ seeding, ``tol=0`` and the same iteration cap, so every candidate runs the
cap and the comparison is pass for pass. Bytes read are counted from the chunk reads (every pass
reads every chunk once): passes × the array's size.

    python benchmarks/sweep.py [--rows 1000000] [--features 32] [--max-iter 5] [--json out.json]
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


def timed(x, ks: list[int], types: list[str], n_init: int, **common) -> dict:
    t = time.perf_counter()
    found = dgmm.select(x, ks, types, n_init=n_init, **common)
    seconds = time.perf_counter() - t
    n_passes = found.n_passes_  # init, EM and scoring passes, as the engine counts them
    return {
        "candidates": len(found.results),
        "failed": sum(r["error"] is not None for r in found.results),
        "seconds": seconds,
        "passes": n_passes,
        "bytes_read": n_passes * x.nbytes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--max-iter", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tmp", type=Path)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dgmm-sweep-", dir=args.tmp))
    try:
        make_data(tmp / "d.zarr", args.rows, args.features, 8, seed=0, dtype="float32")
        x = zarr_to_dask(open_zarr_array(tmp / "d.zarr" / "X"))
        common = dict(max_iter=args.max_iter, tol=0, init_params="k-means++", random_state=0)
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
            single = timed(x, [10], ["full"], 1, **common)
            sweep = timed(x, list(range(1, 11)), ["full", "tied", "diag", "spherical"], 2, **common)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {
        "rows": args.rows,
        "features": args.features,
        "dtype": "float32",
        "max_iter": args.max_iter,
        "array_bytes": int(x.nbytes),
        "single_k10_full": single,
        "sweep": sweep,
        "time_ratio": sweep["seconds"] / single["seconds"],
        "bytes_ratio": sweep["bytes_read"] / single["bytes_read"],
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
