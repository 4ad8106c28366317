"""Out-of-core fit: data many times the workers' memory, fitted chunk by chunk at bounded memory.

Makes (once) a float32 Zarr dataset with ``dgmm make-data``'s generator, starts a LocalCluster of
two single-threaded workers with a memory limit, times one plain read pass of the array and an
EM fit per covariance type, and samples the resident memory of the whole process tree.

Usage: python benchmarks/out_of_core.py --path /big/disk/ooc.zarr [--n-samples 125000000]
       [--n-features 32] [--k 8] [--memory-limit 2GiB] [--iterations 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil

# Worker processes are spawned: they re-run this file's top-level imports. Everything heavier
# than numpy is imported inside the functions, so that the workers hold what a `dgmm run`'s
# workers hold (~60 MiB at start instead of ~280 MiB with scikit-learn and friends).


class PeakRSS:
    """Samples the summed RSS of this process and all its children, and each one's peak."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.per_pid: dict[int, int] = {}  # the peak of each process seen
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.per_pid[p.pid] = max(self.per_pid.get(p.pid, 0), rss)
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _cluster(memory_limit: str):
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        memory_limit=memory_limit,
        host="127.0.0.1",
        dashboard_address=None,
        preload=["dgmm.worker"],  # as the run's own cluster
    )


def _read_pass(x) -> float:
    t = time.perf_counter()
    x.sum(dtype=np.float64).compute()
    return time.perf_counter() - t


def _fit(x, k: int, cov: str, max_iter: int) -> tuple:
    from sklearn.exceptions import ConvergenceWarning

    from dgmm import GaussianMixture

    gm = GaussianMixture(
        k,
        covariance_type=cov,
        init_params="random_from_data",
        tol=0,
        max_iter=max_iter,
        random_state=0,
    )
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0 never converges
        gm.fit(x)
    return gm, time.perf_counter() - t, float(gm.lower_bound_)


def main() -> None:
    import zarr
    from distributed import Client

    from dgmm.io import zarr_to_dask
    from pipelines.data import make_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default="ooc-data/ooc.zarr")
    ap.add_argument("--n-samples", type=int, default=125_000_000)
    ap.add_argument("--n-features", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--chunk-rows", type=int, default=250_000)
    ap.add_argument("--memory-limit", default="2GiB")
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--types", default="diag,full")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    path = Path(args.path)
    t = time.perf_counter()
    if not path.exists():
        with _cluster(args.memory_limit) as cluster, Client(cluster):
            make_data(
                path,
                args.n_samples,
                args.n_features,
                args.k,
                seed=0,
                chunk_rows=args.chunk_rows,
                dtype="float32",
            )
        print(f"made {path} in {time.perf_counter() - t:.0f} s")
    arr = zarr.open_group(str(path), mode="r")["X"]
    nbytes = arr.nbytes
    out = {
        "path": str(path),
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "chunks": list(arr.chunks),
        "bytes": nbytes,
        "memory_limit": args.memory_limit,
        "fits": [],
    }
    print(f"data {arr.shape} {arr.dtype}: {nbytes / 2**30:.1f} GiB in chunks of {arr.chunks}")

    with (
        PeakRSS() as rss,
        _cluster(args.memory_limit) as cluster,
        Client(cluster) as client,
    ):
        x = zarr_to_dask(arr)  # as dgmm opens a Zarr array
        read_before = _read_pass(x)
        print(f"plain read pass: {read_before:.1f} s ({nbytes / read_before / 1e9:.2f} GB/s)")
        for cov in args.types.split(","):
            # The init pass (rows picked by random_from_data) reads the data but computes little;
            # it is timed on its own (max_iter=0) so that an EM iteration is measured alone.
            init_only, t_init, _ = _fit(x, args.k, cov, 0)
            gm, total, lb = _fit(x, args.k, cov, args.iterations)
            iters = gm.n_passes_ - init_only.n_passes_
            out["fits"].append(
                {
                    "covariance_type": cov,
                    "passes": gm.n_passes_,
                    "seconds": total,
                    "init_pass_seconds": t_init,
                    "seconds_per_iteration": (total - t_init) / iters,
                    "lower_bound": lb,
                }
            )
            print(
                f"{cov}: init pass {t_init:.1f} s, {iters} EM iteration(s) {total - t_init:.1f} s"
            )
        # The page cache holds part of the data, differently before and after the fits: the
        # ratios are taken against the faster of the two reads.
        read_after = _read_pass(x)
        read = min(read_before, read_after)
        out.update(read_pass_seconds_before=read_before, read_pass_seconds_after=read_after)
        out["read_pass_seconds"] = read
        print(f"plain read pass after the fits: {read_after:.1f} s")
        for rec in out["fits"]:
            rec["ratio_to_read"] = rec["seconds_per_iteration"] / read
            print(
                f"{rec['covariance_type']}: {rec['seconds_per_iteration']:.1f} s per EM iteration "
                f"= {rec['ratio_to_read']:.2f}x the faster plain read"
            )
        logs = client.get_worker_logs()
        words = ("pause", "Memory use is high", "restart", "killed", "Worker exceeded")
        out["worker_memory_events"] = sorted(
            {
                line
                for lines in logs.values()
                for _, line in lines
                if any(w.lower() in line.lower() for w in words)
            }
        )
        restarted = [
            w for w, info in client.scheduler_info()["workers"].items() if info.get("nanny") is None
        ]
        out["workers_without_nanny"] = restarted
    out["peak_rss_process_tree_bytes"] = rss.peak
    print(f"peak RSS of the process tree: {rss.peak / 2**30:.2f} GiB")
    print(f"worker memory events: {out['worker_memory_events'] or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
