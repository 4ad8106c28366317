"""The profile pass's per-block work with the old and the new data digest, in the same run.

The profile pass (NaN/inf rows, column ranges and moments, and the digest that binds a
checkpoint to its data) runs once per run. This times `block_profile` on the same blocks with
the digest it has now (XXH3-128 over every byte) and with the one it had (CRC-32 of the bytes,
spread to 128 bits by BLAKE2), alternated, best of several repeats.

Usage: python benchmarks/digest.py [--rows 100000] [--features 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import hashlib
import time
import zlib

import numpy as np

from dgmm import validation


def crc_digest(x: np.ndarray, row0: int) -> int:
    """The digest before XXH3-128: CRC-32 of the bytes, keyed and spread by BLAKE2."""
    crc = zlib.crc32(np.ascontiguousarray(x).view(np.uint8).reshape(-1))
    key = f"{row0}/{x.shape}/{x.dtype.str}/{crc}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "little")


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    new_digest = validation.block_digest
    for dtype in (np.float32, np.float64):
        x = np.random.default_rng(0).normal(size=(args.rows, args.features)).astype(dtype)
        mb = x.nbytes / 2**20
        t_hash_new = best(lambda x=x: new_digest(x, 0), args.repeats)
        t_hash_old = best(lambda x=x: crc_digest(x, 0), args.repeats)
        validation.block_digest = crc_digest
        t_old = best(lambda x=x: validation.block_profile(x, 0), args.repeats)
        validation.block_digest = new_digest
        t_new = best(lambda x=x: validation.block_profile(x, 0), args.repeats)
        print(
            f"{np.dtype(dtype).name} block {args.rows} x {args.features} ({mb:.1f} MiB): "
            f"digest alone XXH3-128 {mb / 1024 / t_hash_new:.1f} GB/s, CRC-32 "
            f"{mb / 1024 / t_hash_old:.1f} GB/s; block_profile {t_new * 1e3:.2f} ms with "
            f"XXH3-128, {t_old * 1e3:.2f} ms with CRC-32 (new/old {t_new / t_old:.2f})"
        )


if __name__ == "__main__":
    main()
