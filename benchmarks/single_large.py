"""One K=10 full fit on a large Zarr array: multi-resolution EM against exhaustive EM.

On a LocalCluster (2 workers × 1 thread, 4 GiB each), ``GaussianMixture(10, 'full',
init_params='k-means++', random_state=0, tol=1e-3)`` with ``strategy='sample'`` and then
``'exact'``: wall seconds, passes over the data, EM iterations on all rows and the final lower
bound (the mean log-likelihood per row before the last M-step).

    python benchmarks/single_large.py PATH [--array X] [--rows N] [--tol 1e-3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from distributed import Client, LocalCluster

    import dgmm
    from dgmm.io import open_zarr_array, zarr_to_dask

    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path)
    ap.add_argument("--array", default="X")
    ap.add_argument("--rows", type=int, default=None, help="only the first ROWS rows")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    x = zarr_to_dask(open_zarr_array(args.path / args.array))
    if args.rows:
        x = x[: args.rows]
    out: dict = {
        "shape": list(x.shape),
        "dtype": str(x.dtype),
        "bytes": int(x.nbytes),
        "tol": args.tol,
    }
    print(out, flush=True)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="4GiB",
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster),
    ):
        for strategy in ("sample", "exact"):
            t = time.perf_counter()
            gm = dgmm.GaussianMixture(
                10,
                covariance_type="full",
                init_params="k-means++",
                random_state=0,
                strategy=strategy,
                tol=args.tol,
            ).fit(x)
            out[strategy] = {
                "seconds": time.perf_counter() - t,
                "passes": gm.n_passes_,
                "n_iter": gm.n_iter_,
                "converged": bool(gm.converged_),
                "lower_bound": float(gm.lower_bound_),
            }
            print(strategy, out[strategy], flush=True)
    out["time_ratio"] = out["sample"]["seconds"] / out["exact"]["seconds"]
    out["lower_bound_difference"] = out["sample"]["lower_bound"] - out["exact"]["lower_bound"]
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
