"""The Dask layer: map a block kernel over row blocks and tree-reduce the results.

This is the only module that builds Dask graphs. Per pass, the small per-pass inputs (candidate
parameters) enter the graph once as one key that every block task depends on; the per-block
results are combined in a tree of fan-in ``split_every``; nothing of size N reaches the client.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import dask
import dask.array as da
import numpy as np
from threadpoolctl import threadpool_limits

from ._malloc import trim_if_high, tune_allocator
from .validation import check_block_finite, check_weight_block

SPLIT_EVERY = 8
# How long a pass may make no progress while every worker is paused (memory) or gone before
# it fails; a Dask setting, so `dask.config.set({"dgmm.stall-timeout": "60s"})` changes it.
dask.config.update_defaults({"dgmm": {"stall-timeout": "300s"}})


class StalledError(RuntimeError):
    """A pass made no progress: every worker was paused (out of memory) or none was there."""


class RowBlocks:
    """A row-chunked Dask array (and optional row weights) that passes are run over.

    Parameters
    ----------
    x : dask.array.Array of shape (n_samples, n_features)
        Chunked along rows only.
    w : dask.array.Array of shape (n_samples,) or None
        Row weights, chunked like ``x``'s rows.
    scheduler : str or None
        Dask scheduler for the passes; None uses the current default (a distributed Client if
        one is active). The local schedulers pin BLAS to one thread per worker thread.
    """

    def __init__(self, x: da.Array, w: da.Array | None = None, scheduler: str | None = None):
        if len(x.chunks[1]) != 1:
            x = x.rechunk({1: -1})
        self.x = x
        # weights are checked as every block is read, the same check for every input type
        self.w = (
            None
            if w is None
            else w.rechunk((x.chunks[0],)).map_blocks(
                _check_weights_located, dtype=w.dtype, token="dgmm-check-weights"
            )
        )
        self.scheduler = scheduler
        self.offsets = np.concatenate([[0], np.cumsum(x.chunks[0])[:-1]]).astype(int)
        self._xb = list(x.to_delayed().ravel())
        self._wb = [None] * len(self._xb) if self.w is None else list(self.w.to_delayed().ravel())

    def checked(self) -> da.Array:
        """The data with a NaN/inf check in every block task, for a first pass made elsewhere."""
        return self.x.map_blocks(_check_located, dtype=self.x.dtype, token="dgmm-check")

    def map_reduce(
        self,
        kernel: Callable[..., Any],
        spec: Any,
        combine: Callable[[list[Any]], Any],
        name: str,
        split_every: int = SPLIT_EVERY,
    ) -> Any:
        """Compute ``combine`` over ``kernel(block, weights, row0, spec)`` of every block.

        Task keys are named ``{name}-<token>`` for the block tasks and ``dgmm-combine-<token>``
        for the reduction, so the dashboard shows what runs.
        """
        token = uuid.uuid4().hex[:12]
        spec_d = dask.delayed(spec, name=f"dgmm-params-{token}", traverse=False)
        parts = [
            dask.delayed(_run_kernel, pure=True)(
                kernel, xb, wb, int(r0), spec_d, dask_key_name=(f"{name}-{token}", i)
            )
            for i, (xb, wb, r0) in enumerate(zip(self._xb, self._wb, self.offsets, strict=True))
        ]
        level = 0
        while len(parts) > 1:
            parts = [
                dask.delayed(combine, pure=True)(
                    parts[j : j + split_every],
                    dask_key_name=(f"dgmm-combine-{token}", level, j // split_every),
                )
                for j in range(0, len(parts), split_every)
            ]
            level += 1
        client = _active_client() if self.scheduler is None else None
        if client is not None:
            return _watched(client, parts[0], name)
        with self._blas_pinned():
            (result,) = compute(parts[0], scheduler=self.scheduler)
        return result

    def _blas_pinned(self):
        local = self.scheduler in ("threads", "threading", "sync", "synchronous")
        if self.scheduler is None:
            local = dask.config.get("scheduler", None) in (None, "threads", "threading")
            local = local and _active_client() is None
        return threadpool_limits(limits=1) if local else nullcontext()


def _run_kernel(kernel: Callable[..., Any], xb, wb, row0: int, spec: Any) -> Any:
    tune_allocator()
    try:
        return kernel(xb, wb, row0, spec)
    finally:
        trim_if_high()


def _apply_rows(
    block: np.ndarray, fn: Callable[..., np.ndarray], spec: Any, block_info: dict | None = None
) -> np.ndarray:
    tune_allocator()
    return fn(block, spec, block_info=block_info)


def _check_located(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    row0 = block_info[0]["array-location"][0][0] if block_info else 0
    check_block_finite(block, row0)
    return block


def _check_weights_located(w: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    row0 = block_info[0]["array-location"][0][0] if block_info else 0
    check_weight_block(w, row0)
    return w


def _active_client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _stall(client) -> str | None:
    """Why no task can run now (every worker paused, or none), or None if some can."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    if not workers:
        return "no worker is connected"
    if all(w.get("status") == "paused" for w in workers.values()):
        limits = sorted({w.get("memory_limit") or 0 for w in workers.values()})
        shown = ", ".join(f"{m / 2**20:.0f} MiB" for m in limits if m) or "none"
        return f"every worker is paused for memory (worker memory limit {shown})"
    return None


def _watched(client, graph: Any, name: str) -> Any:
    """Compute ``graph`` on the cluster; fail if it is stalled for the configured time."""
    from dask.utils import parse_timedelta
    from distributed import wait

    timeout = parse_timedelta(dask.config.get("dgmm.stall-timeout"))
    submitted = client.compute(graph)  # a future, or a list of them for a list of graphs
    futures = list(submitted) if isinstance(submitted, (list, tuple)) else [submitted]
    stalled_since = None
    try:
        while True:
            try:
                wait(futures, timeout=min(1.0, timeout))
                results = client.gather(futures)
                return results if isinstance(submitted, (list, tuple)) else results[0]
            except TimeoutError:
                why = _stall(client)
                now = time.monotonic()
                if why is None:
                    stalled_since = None
                    continue
                stalled_since = stalled_since or now
                if now - stalled_since >= timeout:
                    raise StalledError(
                        f"pass '{name}' made no progress for {now - stalled_since:.0f} s: "
                        f"{why}; give workers more memory (or use smaller chunks), or raise "
                        "the Dask setting dgmm.stall-timeout"
                    ) from None
    finally:
        client.cancel([f for f in futures if not f.done()])


def compute(*graphs: Any, scheduler: str | None = None) -> tuple:
    """``dask.compute`` that, on a distributed cluster, fails instead of waiting forever on
    paused or missing workers (see `_watched`)."""
    client = _active_client() if scheduler is None else None
    if client is None:
        return dask.compute(*graphs, scheduler=scheduler)
    return tuple(_watched(client, g, "dgmm-compute") for g in graphs)


def cluster_memory_limit() -> int | None:
    """The smallest worker memory limit of the active distributed Client (None: none, or no
    limit)."""
    client = _active_client()
    if client is None:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    limits = [w.get("memory_limit") or 0 for w in workers]
    limited = [m for m in limits if m > 0]
    return min(limited) if limited else None


def map_rows(
    x: da.Array, fn: Callable[..., np.ndarray], spec: Any, dtype: Any, n_cols: int | None, name: str
) -> da.Array:
    """Lazy ``fn(block, spec, block_info=...)`` per row block: 1-D output if ``n_cols`` is None,
    else 2-D."""
    if len(x.chunks[1]) != 1:
        x = x.rechunk({1: -1})
    spec_d = dask.delayed(spec, traverse=False)
    if n_cols is None:
        return da.map_blocks(_apply_rows, x, fn, spec_d, dtype=dtype, drop_axis=1, token=name)
    return da.map_blocks(
        _apply_rows, x, fn, spec_d, dtype=dtype, chunks=(x.chunks[0], (n_cols,)), token=name
    )
