"""EM on the workers: a whole fit of candidates that fit in one worker's memory runs there as
one task (the sample's EM), instead of one pass of tasks per iteration."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ._reduce import (
    SPLIT_EVERY,
    cluster_workers,
    run_tasks,
)
from .em import DataPasses, EMState, MemoryRows, judged_outputs, judged_rows, run_em
from .estep import (
    TEMPORARY_BYTES,
)
from .memory import WORKER_BASELINE_BYTES, WORKER_BUDGET_FRACTION, statistics_nbytes

if TYPE_CHECKING:
    pass

__all__ = ["em_task_bytes", "run_em_on_workers"]

logger = logging.getLogger(__name__)


def _em_task(
    rows: MemoryRows, job: tuple[EMState, float, int, bool]
) -> tuple[EMState, int, dict[str, np.ndarray]]:
    state, tol, max_iter, judged = job
    passes = rows.passes()
    run_em(passes, [state], tol=tol, max_iter=max_iter)
    values = {}
    if judged and not state.failed and state.n_iter:
        values = {o: judged_rows(state.params, rows.x, o) for o in judged_outputs(state.params)}
    return state, passes.n_passes, values


def em_task_bytes(stats_bytes: int) -> int:
    """What a worker holds for one EM task over rows in memory besides the rows (which its
    tasks share): the sub-block temporaries and up to ``SPLIT_EVERY + 2`` sets of the
    candidate's statistics (the pass's one reduction, with no memory limit)."""
    return TEMPORARY_BYTES + (SPLIT_EVERY + 2) * stats_bytes


def run_em_on_workers(
    passes: DataPasses,
    x: np.ndarray,
    w: np.ndarray | None,
    states: list[EMState],
    *,
    tol: float,
    max_iter: int,
    judged: bool = False,
) -> list[tuple[EMState, dict[str, np.ndarray]]] | None:
    """`run_em` of each state as its own task on the active cluster's workers, over the rows
    ``x`` (weights ``w``) in memory that ``passes`` runs over.

    Returns each state finished, in order, with (if ``judged`` and it ran without failing)
    its `judged_outputs` (`judged_rows` of ``x``) computed in its task, else an empty dict;
    or None, having run nothing, for fewer than two states, without a cluster of two or more
    worker threads, or when a worker's memory limit would not hold its tasks
    (the rows, and `em_task_bytes` per worker thread, within the budget a pass plans with).

    Candidates over rows in memory share no read, only the interpreter: in separate worker
    processes they run at once, where the local threaded scheduler scales little past one
    thread on these kernels. Each state gets the same arithmetic as in lockstep (its
    sub-blocks do not depend on the other candidates), so the same results. The most costly
    candidates per iteration start first. ``passes`` counts the passes the longest took.
    """
    workers = cluster_workers()
    if len(states) < 2 or sum(t for t, _ in workers) < 2:
        return None
    d = x.shape[1]
    cost = [statistics_nbytes(s.params.covariance_type, s.params.n_components, d) for s in states]
    rows_bytes = x.nbytes + (0 if w is None else w.nbytes)
    for threads, limit in workers:
        need = rows_bytes + threads * em_task_bytes(max(cost))
        if limit is not None and need > WORKER_BUDGET_FRACTION * limit - WORKER_BASELINE_BYTES:
            logger.info(
                "EM on the sample in this process: its tasks need ~%.0f MiB on a worker of "
                "%.0f MiB",
                need / 2**20,
                limit / 2**20,
            )
            return None
    rows = MemoryRows(x, w, tuple(passes.blocks.x.chunks[0]), passes.shift)
    done = run_tasks(
        _em_task, rows, [(s, tol, max_iter, judged) for s in states], "dgmm-em-in-memory", cost
    )
    passes.n_passes += max(n for _, n, _ in done)
    return [(s, values) for s, _, values in done]
