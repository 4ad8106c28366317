"""Scheduler overhead of a pass over many small blocks, and what reading several chunks per
block saves.

Writes the same float32 data twice as Zarr: in tiny chunks (20 000 by default) and in large
ones. On a LocalCluster of two single-threaded workers it times one full-data E-step pass
(``score`` of a diag model fitted on the large chunks) over

- the tiny chunks one Dask block each (``da.from_zarr``): every chunk is a read task, a kernel
  task and a share of the reduction;
- the tiny chunks as dgmm opens a Zarr array (``dgmm.io.zarr_to_dask``: several per block);
- the large chunks (the reference: little scheduling),

and a plain ``X.sum()`` read of each layout. The overhead is the time above the reference. The
one-block-each case takes minutes: that is what it measures.

Usage: python benchmarks/many_blocks.py [--n-samples 2000000] [--n-features 16]
       [--tiny-rows 100] [--large-rows 250000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from distributed import Client, LocalCluster

# scikit-learn (through dgmm's estimator) is imported inside the functions: spawned workers re-run
# this file's top-level imports and would hold it too.


def _write(path: Path, x: np.ndarray, rows: int) -> zarr.Array:
    z = zarr.create_array(str(path), shape=x.shape, chunks=(rows, x.shape[1]), dtype=x.dtype)
    z[:] = x
    return zarr.open_array(str(path), mode="r")


def _fit(x: da.Array, k: int):
    from sklearn.exceptions import ConvergenceWarning

    from dgmm import GaussianMixture

    gm = GaussianMixture(k, covariance_type="diag", init_params="random_from_data", max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(x)


def _score_pass(gm, x: da.Array) -> tuple[float, float]:
    """Seconds of one full-data E-step pass (`score`), and the score."""
    t = time.perf_counter()
    score = gm.score(x)
    return time.perf_counter() - t, score


def _read(x: da.Array) -> float:
    t = time.perf_counter()
    x.sum(dtype=np.float64).compute()
    return time.perf_counter() - t


def main() -> None:
    from dgmm.io import zarr_to_dask

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-samples", type=int, default=2_000_000)
    ap.add_argument("--n-features", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tiny-rows", type=int, default=100)
    ap.add_argument("--large-rows", type=int, default=250_000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n_samples, args.n_features)).astype(np.float32)
    x[: args.n_samples // 2] += 4.0
    out: dict = {"shape": list(x.shape), "dtype": "float32", "k": args.k, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        tiny = _write(Path(tmp) / "tiny.zarr", x, args.tiny_rows)
        large = _write(Path(tmp) / "large.zarr", x, args.large_rows)
        print(f"wrote both layouts in {time.perf_counter() - t:.0f} s", flush=True)
        del x
        cases = {
            f"{tiny.nchunks} chunks of {args.tiny_rows} rows, one block each": da.from_zarr(tiny),
            f"{tiny.nchunks} chunks of {args.tiny_rows} rows, as dgmm opens them": zarr_to_dask(
                tiny
            ),
            f"{large.nchunks} chunks of {args.large_rows} rows (reference)": zarr_to_dask(large),
        }
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, dashboard_address=None, host="127.0.0.1"
            ) as cluster,
            Client(cluster),
        ):
            gm = _fit(cases[list(cases)[-1]], args.k)
            for name, arr in cases.items():
                read = _read(arr)
                seconds, score = _score_pass(gm, arr)
                out["cases"].append(
                    {
                        "case": name,
                        "blocks": arr.numblocks[0],
                        "read_s": read,
                        "pass_s": seconds,
                        "score": score,
                    }
                )
                print(f"{name}: read {read:.1f} s, E-step pass {seconds:.1f} s", flush=True)
    ref = out["cases"][-1]
    print(f"{'case':<52} {'blocks':>7} {'read s':>8} {'pass s':>8} {'overhead':>9} {'ms/block':>9}")
    for c in out["cases"]:
        c["overhead_fraction"] = max(0.0, 1 - ref["pass_s"] / c["pass_s"])
        extra = c["blocks"] - ref["blocks"]
        c["ms_per_extra_block"] = 1e3 * (c["pass_s"] - ref["pass_s"]) / extra if extra else 0.0
        print(
            f"{c['case']:<52} {c['blocks']:>7} {c['read_s']:>8.2f} {c['pass_s']:>8.2f} "
            f"{c['overhead_fraction']:>8.0%} {c['ms_per_extra_block']:>9.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
