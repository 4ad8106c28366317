"""Extending a sweep through a result store against a fresh sweep, on a Zarr array.

On one LocalCluster (2 workers × 1 thread, 4 GiB each) and a float64 Zarr array of 1,000,000
rows × 8 features (8 seeded Gaussian clusters, chunks of 100,000 rows), for ``strategy='exact'``
and ``strategy='sample'``:

* fresh: `dgmm.select` over K = 1..15 × {full, diag} × ``n_init=2``, no store;
* new only: K = 11..15 alone, fresh, no store: the new candidates' own work, which no
  extension avoids (with exact EM their fits are the extension's);
* extended: K = 1..10 into a new empty `dgmm.store.ResultStore`, then K = 1..15 with the same
  store (the default ``sample_size``: the 1..15 grid draws a larger sample, and each cell is
  fitted on the rows its own default draws, whatever the grid), then K = 1..15 once more
  (``rerun``: everything stored, the store's own cost).

A short selection of each strategy (K = 1, 2; 2 iterations) runs first, untimed. All with
``tol=1e-3``, ``max_iter=100``, ``random_state=0`` and the default 'kmeans' init.
Each extension is checked against the fresh run: ``best_params_`` and every row of
``results`` (the key ``reused`` dropped), and the selected estimator's parameters. Printed per
strategy: candidates, reused, fitted, passes, wall seconds, and the ratio to the fresh run (the
aim: extending costs at most 0.5× a fresh 1..15 run; it cannot cost less than the new cells
alone); then where each run's seconds went: the
passes over the data by phase (from ``progress``: seconds, and passes in brackets) and the time
between passes (EM on the sample in memory, k-means on the sample, the store's reads and
writes). The raw output (``--json``) adds iteration counts, the store's size, dgmm's log lines
and, where an extension differs from the fresh run, the fields that differ.

    .venv/bin/python benchmarks/store.py [--n 1000000] [--d 8] [--clusters 8] [--dtype float64]
        [--types full,diag] [--strategies exact,sample]
        [--json benchmarks/store.json] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
SMALL_K = range(1, 11)
LARGE_K = range(1, 16)
NEW_K = range(11, 16)


class _Lines(logging.Handler):
    """Keeps dgmm's log lines of one run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def _without_reuse(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "reused"} for r in rows]


def _same_row(a: dict, b: dict) -> bool:
    # json text: NaN equals NaN, floats compared by their repr (bitwise but for NaN payloads)
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def compare(found, fresh) -> dict:
    """Whether ``found`` is ``fresh``: best_params_, the rows without ``reused``, and the
    selected estimator's parameters."""
    import numpy as np

    a, b = _without_reuse(found.results), _without_reuse(fresh.results)
    differing = [i for i, (ra, rb) in enumerate(zip(a, b, strict=False)) if not _same_row(ra, rb)]
    ga, gb = found.best_estimator_, fresh.best_estimator_
    names = ("weights_", "means_", "covariances_", "precisions_cholesky_")
    return {
        "best_params_equal": found.best_params_ == fresh.best_params_,
        "rows_equal": a == b,
        "rows_equal_as_json": len(a) == len(b) and not differing,
        "n_rows": [len(a), len(b)],
        "differing_rows": [
            {
                "row": i,
                "cell": [a[i]["covariance_type"], a[i]["n_components"], a[i]["restart"]],
                "fields": {
                    k: {"extended": a[i][k], "fresh": b[i].get(k)}
                    for k in a[i]
                    if not _same_row({"v": a[i][k]}, {"v": b[i].get(k)})
                },
            }
            for i in differing[:20]
        ],
        "best_estimator_equal": all(np.array_equal(getattr(ga, n), getattr(gb, n)) for n in names),
    }


def one_run(x, ks, types, strategy: str, store, common: dict) -> tuple:
    """One timed `dgmm.select`; returns the result and its record."""
    import dgmm

    reports = []
    lines = _Lines()
    log = logging.getLogger("dgmm")
    log.addHandler(lines)
    t = time.perf_counter()
    try:
        found = dgmm.select(
            x,
            list(ks),
            types,
            strategy=strategy,
            store=store,
            progress=reports.append,
            **common,
        )
    finally:
        seconds = time.perf_counter() - t
        log.removeHandler(lines)
    phases: dict[str, dict] = {}
    for r in reports:
        p = phases.setdefault(r.phase, {"passes": 0, "seconds": 0.0})
        p["passes"] += 1
        p["seconds"] += r.seconds
    in_passes = sum(p["seconds"] for p in phases.values())
    rows = found.results
    reuse = found.reuse
    record = {
        "grid": f"K={ks.start}..{ks.stop - 1} x {','.join(types)}",
        "sample_rows": None if found.sample is None else int(found.sample.x.shape[0]),
        "candidates": len(rows),
        "reused": None if reuse is None else reuse["reused"],
        "fitted": len(rows) if reuse is None else reuse["fitted"],
        "reuse": reuse,
        "passes": found.n_passes_,
        "seconds": seconds,
        "seconds_in_passes": in_passes,
        "seconds_between_passes": seconds - in_passes,
        "phases": phases,
        "selected": found.best_params_,
        "stopped": sum((r["error"] or "").startswith("stopped") for r in rows),
        "failed": sum(r["error"] is not None for r in rows),
        "full_data_iterations": sum(r["n_iter"] or 0 for r in rows if r["reused"] is None),
        "sample_iterations": sum(r["sample_iter"] for r in rows if r["reused"] is None),
        "log": lines.lines,
    }
    return found, record


def bench_strategy(x, strategy: str, types, tmp, common) -> dict:
    from dgmm.store import ResultStore

    out: dict = {}
    fresh, out["fresh"] = one_run(x, LARGE_K, types, strategy, None, common)
    print(f"{strategy} fresh: {out['fresh']['seconds']:.1f} s", flush=True)
    # the new cells alone, fresh: what an extension cannot avoid (its new candidates' work)
    _, out["new_only"] = one_run(x, NEW_K, types, strategy, None, common)
    store = ResultStore(tempfile.mkdtemp(prefix=f"store-{strategy}-", dir=tmp))
    _, out["k10"] = one_run(x, SMALL_K, types, strategy, store, common)
    found, ext = one_run(x, LARGE_K, types, strategy, store, common)
    ext["equal_to_fresh"] = compare(found, fresh)
    ext["store_entries"] = len(store.entries())
    ext["store_bytes"] = store.nbytes()
    out["extend"] = ext
    _, out["rerun"] = one_run(x, LARGE_K, types, strategy, store, common)
    for r in out.values():
        r["ratio_to_fresh"] = r["seconds"] / out["fresh"]["seconds"]
    print(
        f"{strategy}: K={NEW_K.start}..{NEW_K.stop - 1} alone {out['new_only']['seconds']:.1f} s, "
        f"1..10 {out['k10']['seconds']:.1f} s, extend {ext['seconds']:.1f} s "
        f"(ratio {ext['ratio_to_fresh']:.2f}), rerun {out['rerun']['seconds']:.1f} s, "
        f"equal: {ext['equal_to_fresh']}",
        flush=True,
    )
    return out


def _format(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*row) for row in [head, *body]]


def warm_up(x, types, strategies) -> float:
    """A few passes before any timed run: the workers import what EM needs, the chunks are in
    the page cache (the first selection on a new cluster is seconds slower otherwise)."""
    import dgmm

    t = time.perf_counter()
    x.sum().compute()
    for strategy in strategies:
        dgmm.select(x, [1, 2], types, max_iter=2, random_state=1, strategy=strategy)
    return time.perf_counter() - t


def table(strategy: str, runs: dict) -> str:
    """The runs of one strategy, and where their seconds went."""
    head = ["run", "candidates", "reused", "fitted", "passes", "seconds", "ratio to fresh"]
    body = [
        [
            name,
            str(r["candidates"]),
            "-" if r["reused"] is None else str(r["reused"]),
            str(r["fitted"]),
            str(r["passes"]),
            f"{r['seconds']:.1f}",
            f"{r.get('ratio_to_fresh', 1.0):.2f}",
        ]
        for name, r in runs.items()
    ]
    phases = ["sample", "profile", "init", "em", "score"]
    time_head = ["seconds in", *(f"{p} passes" for p in phases), "between passes"]
    time_body = [
        [
            name,
            *(
                f"{r['phases'][p]['seconds']:.1f} ({r['phases'][p]['passes']})"
                if p in r["phases"]
                else "-"
                for p in phases
            ),
            f"{r['seconds_between_passes']:.1f}",
        ]
        for name, r in runs.items()
    ]
    lines = [f"strategy={strategy!r}", *_format(head, body), ""]
    return "\n".join(lines + _format(time_head, time_body))


def machine() -> dict:
    import dask
    import distributed
    import numpy
    import sklearn
    import zarr

    import dgmm

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": sys.version.split()[0],
        "versions": {
            "dgmm": getattr(dgmm, "__version__", None),
            "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__,
            "dask": dask.__version__,
            "distributed": distributed.__version__,
            "zarr": zarr.__version__,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--clusters", type=int, default=8)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--types", default="full,diag")
    ap.add_argument("--strategies", default="exact,sample")
    ap.add_argument("--json", type=Path, default=HERE / "store.json")
    ap.add_argument("--tmp", type=Path)
    args = ap.parse_args()
    types = args.types.split(",")
    warnings.simplefilter("ignore")
    logging.getLogger("dgmm").setLevel(logging.INFO)

    from distributed import Client, LocalCluster

    from dgmm.io import open_zarr_array, zarr_to_dask
    from dgmm.sampling import default_sample_size
    from pipelines.data import make_data

    sizes = {
        f"K={ks.start}..{ks.stop - 1}": default_sample_size(
            [(t, k) for t in types for k in ks], args.d
        )
        for ks in (SMALL_K, LARGE_K)
    }
    common = dict(n_init=2, tol=1e-3, max_iter=100, random_state=0)
    out: dict = {
        "rows": args.n,
        "features": args.d,
        "clusters": args.clusters,
        "dtype": args.dtype,
        "covariance_types": types,
        "settings": {**common, "init_params": "kmeans"},
        "cluster": "LocalCluster(n_workers=2, threads_per_worker=1, memory_limit='4GiB')",
        "default_sample_size": sizes,  # drawn; each cell is fitted on its own share
        "machine": machine(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="dgmm-store-bench-", dir=args.tmp))
    started = time.perf_counter()
    try:
        make_data(tmp / "d.zarr", args.n, args.d, args.clusters, seed=0, dtype=args.dtype)
        x = zarr_to_dask(open_zarr_array(tmp / "d.zarr" / "X"))
        out["block_rows"] = int(x.chunks[0][0])
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, memory_limit="4GiB", dashboard_address=":0"
            ) as cluster,
            Client(cluster),
        ):
            out["warm_up_seconds"] = warm_up(x, types, args.strategies.split(","))
            for strategy in args.strategies.split(","):
                runs = bench_strategy(x, strategy, types, tmp, common)
                out[strategy] = runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["total_seconds"] = time.perf_counter() - started
    print()
    for strategy in args.strategies.split(","):
        print(table(strategy, out[strategy]))
        eq = out[strategy]["extend"]["equal_to_fresh"]
        same = eq["best_params_equal"] and eq["rows_equal"] and eq["best_estimator_equal"]
        print(f"  extend equals fresh: {same}")
        print()
    print(f"total {out['total_seconds']:.0f} s")
    text = json.dumps(out, indent=2, default=str)
    args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
