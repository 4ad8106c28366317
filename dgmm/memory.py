"""Memory planning: what a pass's statistics take on a worker, how many candidates share
one pass under a worker's memory limit, and how large a sample a worker can gather."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._reduce import (
    SPLIT_EVERY,
)
from .covariance import get_covariance_type
from .estep import (
    TEMPORARY_BYTES,
    compute_dtype,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "PassPlan",
    "TaskMemoryError",
    "max_sample_rows",
    "plan_for",
    "plan_passes",
    "sample_row_bytes",
    "statistics_nbytes",
    "task_budget",
]


def statistics_nbytes(covariance_type: str, n_components: int, n_features: int) -> int:
    """Bytes of one candidate's statistics (float64 counts, sums and second moments)."""
    shape = get_covariance_type(covariance_type).moment_shape(n_components, n_features)
    return 8 * (2 + n_components + n_components * n_features + int(np.prod(shape)))


# What a worker holds besides the passes' data: the interpreter and its imports (measured
# ~104 MiB after dgmm's passes with the dgmm.worker preload, 161 MiB without, ~385 MiB once
# dask-ml's k-means ran there), plus the allocator's retained heap (<= limit/16)
WORKER_BASELINE_BYTES = 256 * 2**20
# Share of a worker's memory limit the passes plan to use (Dask pauses a worker at 80%)
WORKER_BUDGET_FRACTION = 0.75
# Statistics that small always go: a worker that cannot hold them cannot hold a chunk either
MIN_TASK_BUDGET = 16 * 2**20
FAN_INS = (SPLIT_EVERY, 4, 2)


# The sampling pass's last combine holds its inputs and their concatenation, twice the sample;
# a binomial draw can exceed its expected size by a few per cent.
SAMPLE_HELD = 2.2


def sample_row_bytes(n_features: int, dtype: np.dtype, weighted: bool) -> int:
    """Bytes one sampled row takes: its values in the data's dtype, its row number, its weight."""
    return n_features * np.dtype(dtype).itemsize + 8 + (8 if weighted else 0)


def max_sample_rows(
    memory_limit: int | None, n_features: int, chunk_rows: int, dtype: np.dtype, weighted: bool
) -> int | None:
    """The most rows a sampling pass can gather on a worker under ``memory_limit`` (None: no
    limit): held twice by the last combine, they get the budget a pass's statistics get."""
    if memory_limit is None:
        return None
    budget = task_budget(memory_limit, chunk_rows * n_features * compute_dtype(dtype).itemsize)
    return max(int(budget // (SAMPLE_HELD * sample_row_bytes(n_features, dtype, weighted))), 1)


class TaskMemoryError(ValueError):
    """One candidate's statistics cannot fit a worker, even alone in its pass."""


@dataclass(frozen=True)
class PassPlan:
    """How the candidates of one round of passes are grouped so that every task fits a worker.

    Attributes
    ----------
    batches : list of (list of int, int)
        Candidate indices of each pass, with the reduction fan-in of that pass.
    task_bytes : int
        The largest estimated bytes a worker holds for one pass of the plan.
    budget : int or None
        Bytes the plan keeps each worker under (None: no limit known, one pass).
    """

    batches: list[tuple[list[int], int]]
    task_bytes: int
    budget: int | None


def task_budget(memory_limit: int | None, chunk_bytes: int) -> int | None:
    """Bytes of statistics a worker may hold at once under ``memory_limit``."""
    if memory_limit is None:
        return None
    usable = WORKER_BUDGET_FRACTION * memory_limit - WORKER_BASELINE_BYTES
    return int(max(usable - chunk_bytes - TEMPORARY_BYTES, MIN_TASK_BUDGET))


def plan_passes(stats_bytes: list[int], chunk_bytes: int, memory_limit: int | None) -> PassPlan:
    """Group candidates into passes whose statistics fit a worker's memory.

    A worker holds, besides its chunk and sub-block temporaries, the statistics of the block
    results waiting to be combined: with fan-in ``s``, up to ``s`` inputs, the output and one
    more block result, ``(s + 2)`` sets of a pass's statistics. Candidates are packed in order
    into as few passes as fit, at the fan-in that needs the fewest (the largest among equals).
    With no memory limit everything is one pass at the default fan-in, so results do not
    depend on the plan there; under a limit a candidate's sums may be added in another order
    than alone (the same to rounding).

    Raises
    ------
    TaskMemoryError
        When one candidate alone does not fit at the smallest fan-in.
    """
    chunk = chunk_bytes + TEMPORARY_BYTES
    budget = task_budget(memory_limit, chunk_bytes)
    if budget is None:
        held = (SPLIT_EVERY + 2) * sum(stats_bytes)
        return PassPlan([(list(range(len(stats_bytes))), SPLIT_EVERY)], chunk + held, None)
    largest = max(stats_bytes, default=0)
    options = []
    for s in FAN_INS:
        cap = budget // (s + 2)
        if largest > cap:
            continue
        batches: list[list[int]] = []
        total = cap + 1
        for i, b in enumerate(stats_bytes):
            if total + b > cap:
                batches.append([])
                total = 0
            batches[-1].append(i)
            total += b
        options.append([(b, s) for b in batches])
    if not options:
        s = FAN_INS[-1]
        raise TaskMemoryError(
            f"a candidate's statistics ({largest / 2**20:.0f} MiB) need "
            f"{(s + 2) * largest / 2**20:.0f} MiB on a worker, more than the "
            f"{max(budget, 0) / 2**20:.0f} MiB its memory limit ({memory_limit / 2**20:.0f} "
            "MiB) leaves"
        )
    plan = min(options, key=len)  # min keeps the first (largest fan-in) among equals
    worst = max((s + 2) * sum(stats_bytes[i] for i in b) for b, s in plan)
    return PassPlan(plan, chunk + worst, budget)


def plan_for(
    candidates: list[tuple[str, int]],
    n_features: int,
    chunk_rows: int,
    itemsize: int,
    memory_limit: int | None,
) -> PassPlan:
    """`plan_passes` for (covariance type, K) candidates on chunks of ``chunk_rows`` rows."""
    stats = [statistics_nbytes(cov, k, n_features) for cov, k in candidates]
    return plan_passes(stats, chunk_rows * n_features * itemsize, memory_limit)
