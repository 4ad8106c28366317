"""Zarr codecs for the data (float32 rows) and the labels (int32): size against read speed.

Writes the same seeded arrays with each codec and times full reads with Dask (page-cached, the
best case for the codec's decode cost; cold reads add the disk time of the stored bytes).

Usage: python benchmarks/compression.py [--rows 4000000] [--dir /tmp/dgmm-codecs]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pipelines.data import _block, mixture_truth

CODECS = {
    "none": None,
    "zstd-1": [ZstdCodec(level=1)],
    "zstd-3 (zarr default)": [ZstdCodec(level=3)],
    "blosc-lz4-shuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
}


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(name: str, arr: np.ndarray, chunks: tuple, codecs, root: Path) -> dict:
    path = root / f"{name.split()[0]}-{arr.dtype}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    z = zarr.create_array(
        str(path), shape=arr.shape, chunks=chunks, dtype=arr.dtype, compressors=codecs
    )
    t = time.perf_counter()
    da.store(da.from_array(arr, chunks=chunks), z, lock=False)
    write = time.perf_counter() - t
    x = da.from_zarr(zarr.open_array(str(path), mode="r"))
    x.sum().compute()  # warm the page cache
    best = min(_timed(lambda: x.sum().compute()) for _ in range(3))
    return {
        "codec": name,
        "dtype": str(arr.dtype),
        "ratio": arr.nbytes / size_of(path),
        "read_GBps": arr.nbytes / best / 1e9,
        "write_GBps": arr.nbytes / write / 1e9,
    }


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--dir", default="/tmp/dgmm-codecs")
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    w, m, c = mixture_truth(args.features, 8, 0, 6.0)
    x, labels = _block(0, args.rows, 0, w, m, c, "float32")
    chunk = 250_000
    print(f"{'codec':>22} {'dtype':>8} {'ratio':>6} {'read GB/s':>9} {'write GB/s':>10}")
    for name, codecs in CODECS.items():
        for arr, chunks in ((x, (chunk, args.features)), (labels, (chunk,))):
            r = measure(name, arr, chunks, codecs, root)
            print(
                f"{r['codec']:>22} {r['dtype']:>8} {r['ratio']:6.2f} {r['read_GBps']:9.2f} "
                f"{r['write_GBps']:10.2f}"
            )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
