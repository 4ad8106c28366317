"""No silent stall, and no false alarm: the rule that fails a pass whose cluster cannot work.

The rule (`Watch`) is checked on generated traces of what the scheduler reports once a second:
finished-task counts, worker states and addresses. The real paused-worker run is in
test_safety.py; here a long task on a healthy cluster must run to its end.
"""

from __future__ import annotations

import random
import time

import dask
import pytest
from distributed import Client, LocalCluster

from dgmm._reduce import Watch
from dgmm.em import compute


def _workers(addresses: list[str], status: str, seen: float | None = None) -> dict[str, dict]:
    """Worker reports; a worker's name is its address up to a '#' (a restart keeps the name),
    ``seen`` its last heartbeat at the scheduler (None: not reported)."""
    return {
        a: {
            "name": a.split("#")[0],
            "status": status,
            "memory_limit": 512 * 2**20,
            "metrics": {"memory": 400 * 2**20},
            **({} if seen is None else {"last_seen": seen}),
        }
        for a in addresses
    }


def _trace(rng: random.Random, kind: str, n: int = 60):
    """Polls of one kind of cluster: (time, finished count or None, workers)."""
    t, finished, gen = 0.0, 0, 0
    counted = kind != "no-counter"
    for _ in range(n):
        t += rng.uniform(0.05, 1.5)
        if kind == "progress":  # tasks finish, whatever the workers look like
            finished += rng.randint(1, 5)
            status = rng.choice(["running", "paused"])
            workers = _workers([f"w{gen}-{i}" for i in range(2)], status)
        elif kind in ("long-task", "no-counter"):  # healthy, nothing finishes (one slow task)
            workers = _workers(["a", "b"], "running", seen=1e9 + t)  # heartbeats go on
        elif kind == "one-restart":  # one worker restarted once, then a long task
            workers = _workers(["a", "b" if t < 3 else "b#2"], "running")
        elif kind == "scale-down":  # workers retire for good one after another (long task)
            gen += 1
            workers = _workers([f"w{gen}", f"w{gen + 1}"], "running")
        elif kind == "paused":
            workers = _workers(["a", "b"], "paused")
        elif kind == "one-paused":  # the other waits for the data the paused one holds
            workers = {**_workers(["a"], "paused"), **_workers(["b"], "running")}
        elif kind == "gone":
            workers = {}
        elif kind == "restart-loop":  # a nanny kills and restarts a worker at every poll
            gen += 1
            workers = _workers(["a", f"b#{gen}"], "running")
        elif kind == "silent":  # every worker stopped (SIGSTOP): no heartbeat, nothing finishes
            workers = _workers(["a", "b"], "running", seen=1e9)
        elif kind == "one-silent":  # one stopped, holding its tasks; the other's heartbeat goes on
            workers = {
                **_workers(["a"], "running", seen=1e9),
                **_workers(["b"], "running", 1e9 + t),
            }
        else:
            raise AssertionError(kind)
        yield t, (finished if counted else None), workers


STALLS = ("paused", "one-paused", "gone", "restart-loop")


@pytest.mark.parametrize("seed", range(40))
def test_stalled_cluster_fails_within_the_timeout_and_a_working_one_never(seed):
    rng = random.Random(seed)
    timeout = rng.uniform(0.5, 20)
    for kind in ("progress", "long-task", "no-counter", "one-restart", "scale-down", *STALLS):
        watch = Watch(timeout, need=rng.choice([None, 50 * 2**20]), since=0.0)
        failed_at, why = None, None
        for t, finished, workers in _trace(rng, kind, n=int(4 * timeout) + 40):
            why = watch.observe(workers, t, lambda f=finished: f)
            if why is not None:
                failed_at = t
                break
        if kind not in STALLS:
            assert failed_at is None, (kind, timeout, why)
            continue
        # nothing ever finished: the pass fails at the first report at or after the timeout
        # (a restart loop needs two workers gone first, its second report at the latest)
        assert failed_at is not None, (kind, timeout)
        # the clock runs from the first troubled report (a restart loop shows at the second)
        stalled_for = failed_at - watch.since
        assert watch.since <= 3.0 and stalled_for >= timeout
        assert why.startswith(f"made no progress for {stalled_for:.0f} s")
        assert stalled_for <= timeout + 3.0, (kind, timeout, failed_at)
        assert "dgmm.stall-timeout" in why and "memory" in why
        if kind == "paused":
            assert "paused for memory" in why and "memory limit 512 MiB" in why
            assert "workers hold 400, 400 MiB" in why
        if kind == "one-paused":
            assert "1 of 2 workers are paused for memory" in why
        if kind == "restart-loop":
            assert "restarted" in why


def test_a_finished_task_restarts_the_clock():
    watch = Watch(10.0, since=0.0)
    paused = _workers(["a"], "paused")
    assert watch.observe(paused, 9.0, lambda: 0) is None
    assert watch.observe(paused, 9.5, lambda: 1) is None  # a task finished: progress
    assert watch.observe(paused, 19.0, lambda: 1) is None
    assert "paused" in watch.observe(paused, 19.5, lambda: 1)


def test_without_a_counter_one_paused_worker_is_not_a_stall():
    """A scheduler that will not count finished tasks: only every worker paused (or none) is a
    stall, since the running workers may be making progress."""
    watch = Watch(5.0, since=0.0)
    one = {**_workers(["a"], "paused"), **_workers(["b"], "running")}
    for t in range(1, 60):
        assert watch.observe(one, float(t), lambda: None) is None
    assert "every worker is paused" in watch.observe(_workers(["a", "b"], "paused"), 70.0)


def test_the_counter_is_asked_only_while_the_cluster_looks_troubled():
    asked = []
    watch = Watch(5.0, since=0.0)
    for t in range(1, 20):
        watch.observe(_workers(["a", "b"], "running"), float(t), lambda t=t: asked.append(t) or 0)
    assert asked == []
    watch.observe(_workers(["a"], "paused"), 21.0, lambda: asked.append(21) or 0)
    assert asked == [21]


@pytest.mark.slow
def test_a_task_longer_than_the_stall_timeout_on_a_healthy_cluster_completes():
    def slow(x):
        time.sleep(4)
        return x + 1

    with (
        dask.config.set({"dgmm.stall-timeout": "1s"}),
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        t0 = time.monotonic()
        (got,) = compute(dask.delayed(slow)(1))
        assert got == 2 and time.monotonic() - t0 >= 4


SILENT = ("silent", "one-silent")


@pytest.mark.parametrize("seed", range(20))
def test_workers_not_heard_from_are_said_then_fail_the_pass_within_its_bound(seed):
    """A stopped worker stays on the scheduler's list for minutes (its worker-ttl): the pass
    says what it waits for once the heartbeat has been still for ``silent_after``, and fails
    once nothing has finished for the timeout after that; workers whose heartbeat goes on are
    never called silent."""
    rng = random.Random(seed)
    timeout = rng.uniform(1.0, 30)
    for kind in ("long-task", *SILENT):
        watch = Watch(timeout, since=0.0)
        said, failed_at, why = None, None, None
        for t, finished, workers in _trace(rng, kind, n=int(6 * timeout) + 60):
            why = watch.observe(workers, t, lambda f=finished: f)
            if watch.notice is not None and said is None:
                said = t
            if why is not None:
                failed_at = t
                break
        if kind == "long-task":
            assert said is None and failed_at is None, (timeout, why)
            continue
        assert said is not None and failed_at is not None and said < failed_at, (kind, timeout)
        assert watch.silent_after <= said <= watch.silent_after + 3.1  # polls 0.05..1.5 s apart
        assert "not heard from" in watch.notice and "a" in watch.notice
        assert timeout <= failed_at - said <= timeout + 1.6, (kind, timeout, said, failed_at)
        assert "not heard from" in why and "resume or restart them" in why
        assert ("1 of 2" if kind == "one-silent" else "2 of 2") in why
