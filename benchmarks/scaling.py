"""Seconds per EM iteration against N, K and D, beside the flop model's prediction.

Data are float32 Zarr arrays written chunk by chunk by ``dgmm make-data`` (so N = 1e8 fits in
the page cache or streams from disk, never in one array), fitted from their path with the
threaded scheduler. Time per iteration is ``(t(1 + m iterations) − t(1 iteration)) / m`` with
``tol=0`` and an explicit init, so reading set-up and the init pass cancel out.

The prediction is the flop model of ``run.py`` (full ``4·N·K·D²``) divided by the float32
matrix-product rate measured in the same run on all cores: the time the arithmetic alone would
take at the machine's ceiling. Growth in N must be linear: the script fits the exponent of
``t ∝ N^a`` over the N sweep and prints it.

    python benchmarks/scaling.py [--max-n 1e8] [--out benchmarks/scaling.png]
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import flops, gemm_ceiling

from dgmm import GaussianMixture
from pipelines.data import make_data

warnings.simplefilter("ignore")
COV = "full"


def per_iteration(path: str, k: int, d: int, m: int) -> float:
    """(t(1 + m) − t(1)) / m for a fit from an explicit init (rows of the data's first chunk)."""
    import zarr

    head = np.asarray(zarr.open_array(path, mode="r")[: 10 * k], dtype=np.float64)
    var = float(head.var(axis=0).mean())
    init = dict(
        weights_init=np.full(k, 1 / k),
        means_init=head[::10][:k],
        precisions_init=np.stack([np.eye(d) / var] * k),
    )

    def fit(iters: int) -> float:
        gm = GaussianMixture(k, covariance_type=COV, tol=0, max_iter=iters, **init)
        t = time.perf_counter()
        gm.fit(path)
        return time.perf_counter() - t

    return (fit(1 + m) - fit(1)) / m


def point(tmp: Path, n: int, k: int, d: int, m: int, rate: float) -> dict:
    path = tmp / f"n{n}-d{d}-k{k}.zarr"
    if not path.exists():
        make_data(path, n, d, k, seed=0, chunk_rows=min(n, 500_000), dtype="float32")
    t = per_iteration(f"{path}/X", k, d, m)
    pred = flops(COV, n, k, d) / (rate * 1e9)
    row = {"n": n, "k": k, "d": d, "seconds": t, "predicted": pred}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-n", type=float, default=1e8)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("scaling.png"))
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("scaling.json"))
    ap.add_argument("--tmp", type=Path, default=None, help="where the Zarr data go")
    ap.add_argument("--replot", action="store_true", help="redraw from --json, measure nothing")
    args = ap.parse_args()
    if args.replot:
        finish(json.loads(args.json.read_text()), args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="dgmm-scaling-", dir=args.tmp))
    rate = gemm_ceiling(100_000, 8, 8 * 8, np.float32)
    print(f"float32 matrix-product ceiling: {rate:.1f} GFLOP/s", flush=True)
    ns = [
        n for n in (10**5, 3 * 10**5, 10**6, 3 * 10**6, 10**7, 3 * 10**7, 10**8) if n <= args.max_n
    ]
    try:
        by_n = [point(tmp, n, 8, 8, args.iters, rate) for n in ns]
        by_k = [point(tmp, 1_000_000, k, 8, args.iters, rate) for k in (2, 4, 8, 16, 32)]
        by_d = [point(tmp, 1_000_000, 8, d, args.iters, rate) for d in (2, 4, 8, 16, 32, 64)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {"ceiling_gflops_f32": rate, "n": by_n, "k": by_k, "d": by_d}
    finish(result, args)


def linearity(by_n: list[dict]) -> dict:
    """``t = a + b·N`` fitted with relative weights, and the exponent of ``t ∝ N^e`` above 1e6."""
    n = np.array([r["n"] for r in by_n], dtype=float)
    t = np.array([r["seconds"] for r in by_n])
    (a, b), *_ = np.linalg.lstsq(np.stack([1 / t, n / t], axis=1), np.ones_like(t), rcond=None)
    big = n >= 1e6
    e = np.polyfit(np.log(n[big]), np.log(t[big]), 1)[0] if big.sum() > 1 else float("nan")
    dev = np.abs((a + b * n) / t - 1).max()
    return {"fixed_seconds": a, "seconds_per_row": b, "max_rel_deviation": dev, "exponent": e}


def finish(result: dict, args) -> None:
    result["linearity"] = lin = linearity(result["n"])
    print(
        f"t = {lin['fixed_seconds']:.3f} s + N × {lin['seconds_per_row'] * 1e9:.1f} ns "
        f"(max deviation {lin['max_rel_deviation']:.0%}); t ∝ N^{lin['exponent']:.3f} for N ≥ 1e6"
    )
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out)
    print(f"wrote {args.out} and {args.json}")


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [
        ("n", "N (rows)", "D=8, K=8"),
        ("k", "K (components)", "N=1e6, D=8"),
        ("d", "D (features)", "N=1e6, K=8"),
    ]
    for ax, (key, label, fixed) in zip(axes, panels, strict=True):
        rows = result[key]
        x = [r[key] for r in rows]
        ax.loglog(x, [r["seconds"] for r in rows], "o-", label="dgmm, measured")
        ax.loglog(x, [r["predicted"] for r in rows], "s--", label="flop model at the ceiling")
        if key != "n":
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [str(v) for v in x])
            ax.minorticks_off()
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per EM iteration")
        ax.set_title(f"full covariance, float32, {fixed}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    lin = result["linearity"]
    n = np.array([r["n"] for r in result["n"]], dtype=float)
    axes[0].loglog(
        n,
        lin["fixed_seconds"] + lin["seconds_per_row"] * n,
        ":",
        color="gray",
        label=f"{lin['fixed_seconds']:.2f} s + N × {lin['seconds_per_row'] * 1e9:.0f} ns",
    )
    axes[0].legend()
    fig.suptitle(
        f"dgmm EM iteration time (ceiling {result['ceiling_gflops_f32']:.0f} GFLOP/s float32, "
        "all cores)"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
