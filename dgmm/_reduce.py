"""The Dask layer: map a block kernel over row blocks and tree-reduce the results, or run
independent tasks on the cluster's workers.

This is the only module that builds Dask graphs or submits tasks. Per pass, the small per-pass
inputs (candidate parameters) enter the graph once as one key that every block task depends on;
the per-block results are combined in a tree of fan-in ``split_every``; nothing of size N
reaches the client.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import xxhash
from threadpoolctl import ThreadpoolController

from ._malloc import trim_if_high, tune_allocator
from .validation import check_block_finite, check_weight_block

logger = logging.getLogger(__name__)

SPLIT_EVERY = 8
# How long a pass may finish no task while a worker is paused (memory), none is connected or
# workers keep being restarted before it fails (see `Watch`); a Dask setting, so
# `dask.config.set({"dgmm.stall-timeout": "60s"})` changes it.
dask.config.update_defaults({"dgmm": {"stall-timeout": "300s"}})


class StalledError(RuntimeError):
    """A pass made no progress: a worker was paused (out of memory), or workers restarted or
    gone."""


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
    pin_blas : bool
        Whether local passes pin BLAS (False: leave it as the process has it).
    """

    def __init__(
        self,
        x: da.Array,
        w: da.Array | None = None,
        scheduler: str | None = None,
        pin_blas: bool = True,
    ):
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
        self.pin_blas = pin_blas
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
        need: int | None = None,
        accumulate: Callable[[Any, Any], Any] | None = None,
    ) -> Any:
        """Compute ``combine`` over ``kernel(block, weights, row0, spec)`` of every block.

        Task keys are named ``{name}-<token>`` for the block tasks and ``dgmm-combine-<token>``
        for the reduction, so the dashboard shows what runs. ``need`` (bytes a task holds, by
        dgmm's estimate) is named if the pass stalls. With ``accumulate(running, part)`` (equal to
        ``combine([running, part])``, and free to add into ``running`` in place), the blocks of
        each first-level group are folded one after another.
        """
        token = uuid.uuid4().hex[:12]
        spec_d = dask.delayed(spec, name=f"dgmm-params-{token}", traverse=False)
        blocks = list(zip(self._xb, self._wb, self.offsets, strict=True))
        if accumulate is not None and len(blocks) > 1:
            # The first level of the tree runs as chains: each group of ``split_every``
            # consecutive blocks is folded block after block into one running result, the same
            # left fold (and so the same bits) as ``combine`` over the group, but holding one
            # result per group in progress instead of every finished block of it.
            parts = []
            for g in range(0, len(blocks), split_every):
                running = None
                for i in range(g, min(g + split_every, len(blocks))):
                    xb, wb, r0 = blocks[i]
                    running = dask.delayed(_chain_step, pure=True)(
                        kernel,
                        accumulate,
                        running,
                        xb,
                        wb,
                        int(r0),
                        spec_d,
                        dask_key_name=(f"{name}-{token}", i),
                    )
                parts.append(running)
            level = 1
        else:
            parts = [
                dask.delayed(_run_kernel, pure=True)(
                    kernel, xb, wb, int(r0), spec_d, dask_key_name=(f"{name}-{token}", i)
                )
                for i, (xb, wb, r0) in enumerate(blocks)
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
            return _watched(client, parts[0], name, need)
        with self._blas_pinned():
            (result,) = compute(parts[0], scheduler=self.scheduler)
        return result

    def _blas_pinned(self):
        if not self.pin_blas:
            return nullcontext()
        local = self.scheduler in ("threads", "threading", "sync", "synchronous")
        if self.scheduler is None:
            local = dask.config.get("scheduler", None) in (None, "threads", "threading")
            local = local and _active_client() is None
        return one_blas_thread() if local else nullcontext()


# The process's thread pools, found once: a scan of its libraries costs ~4 ms, once per pass
# over rows in memory. Native thread pools arrive with imports, so a module count that moved
# means a new scan.
_POOLS: tuple[int, ThreadpoolController] | None = None


def one_blas_thread():
    """A context in which BLAS runs one thread (the scheduler's threads are the parallelism).

    threadpoolctl lets one thread at a time set OpenBLAS's process-wide pool; passes are
    pinned from the thread that runs them (EM tasks on workers are not pinned: see
    `dgmm.em.MemoryRows`)."""
    global _POOLS
    if _POOLS is None or _POOLS[0] != len(sys.modules):
        _POOLS = (len(sys.modules), ThreadpoolController())
    return _POOLS[1].limit(limits=1)


def _chain_step(kernel, accumulate, running, xb, wb, row0: int, spec: Any) -> Any:
    part = _run_kernel(kernel, xb, wb, row0, spec)
    return part if running is None else accumulate(running, part)


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


def _finished_tasks(dask_scheduler) -> int:
    """Tasks that have ever finished on this scheduler (runs there; a counter that only grows)."""
    return sum(p.state_counts["memory"] for p in dask_scheduler.task_prefixes.values())


@dataclass
class Watch:
    """Decides, from what the scheduler reports once a second, whether a pass is stalled.

    A pass is stalled when no task has finished on the cluster for ``timeout`` seconds and the
    cluster cannot work: a worker is paused for memory (the others may be waiting for the data
    it holds), none is connected, or workers keep being restarted (two or more came back under
    their name since the last finished task, as when a nanny kills a worker over its memory
    limit again and again; a worker that leaves for good is not a restart). A long task on a
    healthy cluster is never stalled.

    The count of finished tasks is asked for (``count``) only while the cluster looks troubled,
    so a healthy pass costs the scheduler nothing more than ``scheduler_info``. Without a count
    (``count`` returns None: the scheduler would not run it) a pass is stalled only when every
    worker is paused or none is connected.
    """

    timeout: float
    need: int | None = None  # dgmm's estimate of a task's bytes, for the message
    since: float = field(default_factory=time.monotonic)  # the last progress
    counted: bool = True
    finished: int | None = None
    names: dict[str, str] | None = None  # address -> worker name at the last report
    gone: set[str] = field(default_factory=set)  # names of workers that left
    restarts: int = 0
    # A worker whose heartbeat ('last_seen' at the scheduler) has not moved for this long is
    # silent: stopped (SIGSTOP), hung or cut off. The scheduler drops it only after its
    # worker-ttl (minutes), and meanwhile it holds its tasks.
    silent_after: float = 10.0
    heard: dict[str, tuple[float, float]] = field(default_factory=dict)  # last-seen, since
    silent: list[str] = field(default_factory=list)
    notice: str | None = None  # what the pass waits for, said once as trouble begins
    notice_scheduler: bool = False  # whether a silent scheduler has been said

    def __post_init__(self) -> None:
        self.silent_after = min(self.silent_after, self.timeout / 2)

    def _listen(self, workers: dict[str, dict], now: float) -> list[str]:
        """The workers whose heartbeat has not moved for ``silent_after`` seconds (measured
        on this clock: the scheduler's may be another host's)."""
        # Dask spaces heartbeats wider on large clusters (about 1 + n/200 s): three missed
        # ones, at the least, before a worker counts as silent
        after = max(self.silent_after, 3 * (1 + len(workers) / 200))
        silent = []
        for address, w in workers.items():
            seen = w.get("last_seen", w.get("last-seen"))
            if seen is None:
                continue
            before = self.heard.get(address)
            if before is None or before[0] != seen:
                self.heard[address] = (seen, now)
            elif now - before[1] >= after:
                silent.append(address)
        if silent and not self.silent:
            self.notice = (
                f"waiting on {len(silent)} of {len(workers)} worker(s) not heard from for "
                f"{self.silent_after:.0f} s or more (stopped, hung or cut off?): "
                f"{', '.join(silent[:3])}; failing if no task finishes for {self.timeout:.0f} s"
            )
        self.silent = silent
        return silent

    def observe(
        self, workers: dict[str, dict], now: float, count: Callable[[], int | None] = lambda: None
    ) -> str | None:
        """Take one report (``scheduler_info()['workers']``); why the pass is stalled, or None."""
        names = {a: str(w.get("name", a)) for a, w in workers.items()}
        if self.names is not None:
            self.gone |= {self.names[a] for a in self.names.keys() - names.keys()}
        back = self.gone & set(names.values())
        self.gone -= back
        self.restarts += len(back)
        self.names = names
        paused = sum(w.get("status") == "paused" for w in workers.values())
        silent = len(self._listen(workers, now))
        if self.counted:
            troubled = not workers or paused > 0 or self.restarts > 0 or silent > 0
        else:
            troubled = not workers or paused == len(workers) or silent == len(workers)
        if not troubled:
            self.since, self.restarts, self.finished = now, 0, None
            return None
        if self.counted:
            finished = count()
            if finished is None:  # no counter on this scheduler: the strict rule from now on
                self.counted = False
                return self.observe(workers, now)
            if self.finished is None:  # trouble begins: the clock starts with the count
                self.since = now
            elif finished > self.finished:
                self.since, self.restarts = now, 0
            self.finished = finished
        if now - self.since < self.timeout:
            return None
        if workers and not paused and self.restarts < 2 and not silent:
            return None
        return self._why(workers, paused, now)

    def _why(self, workers: dict[str, dict], paused: int, now: float) -> str:
        remedy = (
            "give workers more memory (the cluster's memory_limit) or use smaller chunks, or "
            "raise the Dask setting dgmm.stall-timeout"
        )
        if not workers:
            state = "no worker is connected"
        elif self.silent and not paused:
            state = (
                f"{len(self.silent)} of {len(workers)} worker(s) not heard from (stopped, hung "
                f"or cut off?): {', '.join(self.silent[:3])}"
            )
            remedy = "resume or restart them, or raise the Dask setting dgmm.stall-timeout"
        elif paused == len(workers):
            state = "every worker is paused for memory"
        elif paused:
            state = f"{paused} of {len(workers)} workers are paused for memory"
        else:
            state = "workers keep being restarted"
        if self.restarts:
            state += f" ({self.restarts} restarts)"
        limits = sorted({w.get("memory_limit") or 0 for w in workers.values()} - {0})
        used = sorted((w.get("metrics") or {}).get("memory", 0) for w in workers.values())
        facts = []
        if used:
            facts.append("workers hold " + ", ".join(f"{m / 2**20:.0f}" for m in used) + " MiB")
        if limits:
            facts.append("memory limit " + ", ".join(f"{m / 2**20:.0f}" for m in limits) + " MiB")
        if self.need:
            facts.append(f"a task needs ~{self.need / 2**20:.0f} MiB")
        detail = f" ({'; '.join(facts)})" if facts else ""
        return f"made no progress for {now - self.since:.0f} s: {state}{detail}; {remedy}"


class _Question:
    """One question to the scheduler at a time, waited for a bounded time.

    A stopped or hung scheduler never answers, and the Client's calls have no time limit of
    their own: the question runs in a daemon thread, and an unanswered one is left there while
    the watcher says how long it has waited.
    """

    def __init__(self, ask: Callable[[], Any]):
        self.ask, self.thread, self.box, self.started = ask, None, {}, 0.0

    def __call__(self, wait: float) -> tuple[bool, Any, float]:
        """(answered, answer, seconds waited so far)."""
        if self.thread is None:
            box: dict[str, Any] = {}

            def run() -> None:
                try:
                    box["answer"] = self.ask()
                except Exception as e:  # raised in the caller's thread
                    box["error"] = e

            self.box, self.started = box, time.monotonic()
            self.thread = threading.Thread(target=run, daemon=True, name="dgmm-question")
            self.thread.start()
        self.thread.join(wait)
        if self.thread.is_alive():
            return False, None, time.monotonic() - self.started
        self.thread = None
        if "error" in self.box:
            raise self.box["error"]
        return True, self.box["answer"], 0.0


def bounded(ask: Callable[[], Any], timeout: float, what: str) -> Any:
    """``ask()`` (a call to the scheduler), or a `StalledError` after ``timeout`` seconds."""
    answered, answer, waited = _Question(ask)(timeout)
    if not answered:
        about = f" {what}" if what else ""
        raise StalledError(
            f"the Dask cluster did not answer{about} within {waited:.0f} s; is its scheduler "
            "or a worker stopped or overloaded?"
        )
    return answer


def _count(client) -> int | None:
    try:
        return client.run_on_scheduler(_finished_tasks)
    except Exception:  # a scheduler that refuses or lacks the counter: fall back to states
        return None


def _watched(client, graph: Any, name: str, need: int | None = None) -> Any:
    """Compute ``graph`` on the cluster; fail if it is stalled for the configured time."""
    from dask.utils import parse_timedelta

    timeout = parse_timedelta(dask.config.get("dgmm.stall-timeout"))
    watch = Watch(timeout, need)  # the clock starts now; reports begin after a second
    submitted = client.compute(graph)  # a future, or a list of them for a list of graphs
    futures = list(submitted) if isinstance(submitted, (list, tuple)) else [submitted]
    results = _gather_watched(client, futures, watch, f"pass '{name}'")
    return results if isinstance(submitted, (list, tuple)) else results[0]


def _gather_watched(client, futures: list, watch: Watch, what: str) -> list:
    """The results of ``futures``, failing (and cancelling them) once ``watch`` says the
    cluster is stalled."""
    from distributed import wait

    info = _Question(lambda: client.scheduler_info(n_workers=-1)["workers"])
    count = _Question(lambda: _count(client))
    step = min(1.0, watch.timeout)
    try:
        while True:
            try:
                wait(futures, timeout=step)
                return _fetch(client, futures, watch)
            except TimeoutError:
                if any(f.status == "error" for f in futures):
                    return _fetch(client, futures, watch)  # raises the first task's error now
                answered, workers, waited = info(step)
                if not answered:
                    _scheduler_silent(watch, waited, what)
                    continue
                why = watch.observe(workers, time.monotonic(), lambda: _answer(count, step))
                if watch.notice is not None:
                    logger.warning("%s is %s", what, watch.notice)
                    watch.notice = None
                if why is not None:
                    raise StalledError(f"{what} {why}") from None
    finally:
        left = [f for f in futures if not f.done()]
        if left:  # a silent scheduler would hold the cancel forever: it is asked, not awaited
            _Question(lambda: client.cancel(left))(step)


def _fetch(client, futures: list, watch: Watch) -> list:
    """The futures' results (or the first error), fetched from the workers within the stall
    timeout: a worker that stops after finishing must not hold the run."""
    return bounded(lambda: client.gather(futures), watch.timeout, "with the results")


def _answer(question: _Question, wait: float) -> Any:
    answered, answer, _ = question(wait)
    return answer if answered else None


def _scheduler_silent(watch: Watch, waited: float, what: str) -> None:
    """Say once that the scheduler is silent; fail once it has been for the stall timeout."""
    if waited >= watch.timeout:
        raise StalledError(
            f"{what} made no progress for {waited:.0f} s: the Dask scheduler does not answer "
            "(stopped, hung or cut off?); restart it, or raise the Dask setting "
            "dgmm.stall-timeout"
        )
    if waited >= watch.silent_after and not watch.notice_scheduler:
        watch.notice_scheduler = True
        logger.warning(
            "%s is waiting on the Dask scheduler, which has not answered for %.0f s (stopped, "
            "hung or cut off?); failing after %.0f s",
            what,
            waited,
            watch.timeout,
        )


def cluster_workers() -> list[tuple[int, int | None]]:
    """Threads and memory limit (None: none) of each worker of the active distributed cluster
    (empty without a client)."""
    client = _active_client()
    if client is None:
        return []
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return [(int(w.get("nthreads") or 0), w.get("memory_limit") or None) for w in workers]


def run_tasks(
    fn: Callable[..., Any], shared: Any, items: list[Any], name: str, priorities: list[int]
) -> list[Any]:
    """``fn(shared, item)`` for every item, each one task on the active cluster's workers.

    ``shared`` (the data every task reads) is sent to every worker once. Tasks with a higher
    priority start first; the scheduler moves waiting tasks to idle workers, so long and short
    tasks even out. Watched like a pass: the run fails if the cluster stalls (`Watch`).
    """
    from dask.utils import parse_timedelta

    client = _active_client()
    if client is None:
        raise RuntimeError("run_tasks needs an active distributed Client")
    token = uuid.uuid4().hex[:12]
    watch = Watch(parse_timedelta(dask.config.get("dgmm.stall-timeout")))
    held: list[Any] = []
    try:
        held += client.scatter([shared], broadcast=True, hash=False)  # one object, not items
        futures = [
            client.submit(fn, held[0], item, key=f"{name}-{token}-{i}", priority=p, pure=False)
            for i, (item, p) in enumerate(zip(items, priorities, strict=True))
        ]
        held += futures
        return _gather_watched(client, futures, watch, f"'{name}'")
    finally:
        client.cancel(held)


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
    limited = [limit for _, limit in cluster_workers() if limit]
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


def _block_digest_hex(block: np.ndarray) -> str:
    return xxhash.xxh3_128_hexdigest(np.ascontiguousarray(block, dtype=np.float64).tobytes())


def weights_digest(w: da.Array | np.ndarray) -> str:
    """XXH3-128 of row weights (as float64), in memory or block by block on the cluster (one
    pass over the weights alone): what binds a stored fit to the weights it was fitted with."""
    if isinstance(w, np.ndarray):
        return _block_digest_hex(w)
    parts = dask.compute(*[dask.delayed(_block_digest_hex)(b) for b in w.to_delayed().ravel()])
    return xxhash.xxh3_128_hexdigest("".join(parts).encode())
