"""Demo job: make a seeded dataset in Zarr, start a LocalCluster, select K by BIC, print it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import zarr
from distributed import Client, LocalCluster

from dgmm import GaussianMixture

DATA = Path("demo-output/demo-data.zarr")


def make_data(path: Path, n: int = 200_000, seed: int = 0) -> zarr.Array:
    """Four Gaussian clusters in 3-D, written chunk by chunk (skipped if already there)."""
    if path.exists():
        return zarr.open_array(str(path), mode="r")
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6.0, size=(4, 3))
    arr = zarr.create_array(str(path), shape=(n, 3), chunks=(25_000, 3), dtype="float64")
    for s in range(0, n, 25_000):
        labels = rng.integers(4, size=min(25_000, n - s))
        arr[s : s + labels.size] = centers[labels] + rng.normal(size=(labels.size, 3))
    return arr


def main() -> None:
    data = make_data(DATA)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"Dask dashboard: {client.dashboard_link}")
        print(f"data: {DATA} shape={data.shape} chunks={data.chunks}")
        print(f"{'K':>3} {'BIC':>14} {'iters':>6} {'seconds':>8}")
        best = None
        for k in range(1, 7):
            t = time.perf_counter()
            gm = GaussianMixture(k, init_params="k-means||", random_state=0).fit(str(DATA))
            bic = gm.bic(str(DATA))
            print(f"{k:>3} {bic:>14.1f} {gm.n_iter_:>6} {time.perf_counter() - t:>8.2f}")
            if best is None or bic < best[0]:
                best = (bic, gm)
        gm = best[1]
        print(f"selected K={gm.n_components}; weights={np.round(gm.weights_, 3)}")


if __name__ == "__main__":
    main()
