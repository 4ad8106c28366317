"""A fit on a real LocalCluster (2 worker processes) equals the in-process fit."""

import os
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest

from dgmm import GaussianMixture

from .conftest import COV_TYPES, explicit_init, write_zarr

# a LocalCluster of worker processes per module: deselect with -m 'not slow'
pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.slow,
]


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_local_cluster_equals_in_process(cov_type, blobs, tmp_path, local_cluster):
    X, _ = blobs
    init = explicit_init(X, 4, cov_type)
    kw = dict(covariance_type=cov_type, tol=1e-6, max_iter=50, **init)
    ref = GaussianMixture(4, **kw).fit(X)
    z = write_zarr(tmp_path / "x.zarr", X, chunks=(256, 3))
    on_cluster = GaussianMixture(4, **kw).fit(str(tmp_path / "x.zarr"))
    assert on_cluster.n_iter_ == ref.n_iter_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(on_cluster, name), getattr(ref, name), rtol=1e-10, atol=1e-12
        )
    labels = on_cluster.predict(z)
    np.testing.assert_array_equal(labels.compute(), ref.predict(X))


@pytest.mark.long
def test_cluster_tasks_are_named_and_seeded_inits_reproduce(blobs, local_cluster):
    X, _ = blobs
    x = da.from_array(X, chunks=(300, 3))
    a = GaussianMixture(4, init_params="k-means||", random_state=1, max_iter=5).fit(x)
    b = GaussianMixture(4, init_params="k-means||", random_state=1, max_iter=5).fit(x)
    np.testing.assert_array_equal(a.means_, b.means_)
    names = local_cluster.run_on_scheduler(
        lambda dask_scheduler: sorted(dask_scheduler.task_prefixes)
    )
    assert {"dgmm-estep", "dgmm-init", "dgmm-combine"} <= set(names)


@pytest.mark.parametrize(
    "init", ["k-means++", "random_from_data", pytest.param("k-means||", marks=pytest.mark.long)]
)
def test_zarr_input_keys_are_consistent_across_passes(blobs, tmp_path, local_cluster, init):
    """Every pass reads a Zarr chunk through one task definition, so the scheduler never sees a
    key reused with a different graph (its "Detected different `run_spec`" warning)."""
    import logging

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("distributed.scheduler")  # the LocalCluster's, in this process
    logger.addHandler(handler)
    try:
        path = tmp_path / "x.zarr"
        write_zarr(path, blobs[0], chunks=(300, 3))
        GaussianMixture(3, init_params=init, random_state=0, max_iter=3).fit(str(path))
    finally:
        logger.removeHandler(handler)
    # dgmm's own keys: its reads ("from-zarr-…") and its passes ("dgmm-…"). dask-ml's k-means||
    # reductions ("sum-partial-…" of "pow-…") can reuse a key with new centres between its
    # calls, and the scheduler then warns about a key of dask-ml's, now and then.
    ours = [m for m in messages if "run_spec" in m and ("from-zarr" in m or "dgmm-" in m)]
    assert not ours


def _allocator_tuned() -> bool:
    from dgmm import _malloc

    return _malloc._done


def _allocator_thresholds() -> tuple[int, int] | None:
    from dgmm import _malloc

    return _malloc.thresholds


def test_workers_run_kernels_with_the_tuned_allocator(blobs, local_cluster):
    """The nanny's MALLOC_TRIM_THRESHOLD_ makes every sub-block temporary a fresh mmap; the
    block tasks set glibc's thresholds in each worker that runs them (see dgmm._malloc)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc allocator settings")
    env = local_cluster.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert set(env.values()) == {"65536"}  # what distributed's nanny gives its workers
    X, _ = blobs
    GaussianMixture(2, max_iter=2, random_state=0).fit(da.from_array(X, chunks=(100, 3)))
    tuned = local_cluster.run(_allocator_tuned)
    assert len(tuned) == 2 and all(tuned.values())
    # 1 GiB workers: 1/16 of the limit is the full 64 MiB
    assert set(local_cluster.run(_allocator_thresholds).values()) == {(2**26, 2**26)}


def test_small_workers_retain_at_most_a_sixteenth_of_their_limit(blobs):
    """On 800 MiB workers the allocator keeps at most 50 MiB blocks and free heap (a worker
    spawned by the test process starts near 470 MiB, too close to a 512 MiB worker's pause)."""
    from distributed import Client, LocalCluster

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc allocator settings")
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            memory_limit="800MiB",
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        GaussianMixture(2, max_iter=2, random_state=0).fit(da.from_array(blobs[0], chunks=100))
        assert list(client.run(_allocator_thresholds).values()) == [(50 * 2**20, 50 * 2**20)]


def test_allocator_tuning_can_be_turned_off():
    code = "from dgmm._malloc import tune_allocator; print(tune_allocator())"
    out = {
        flag: subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "DGMM_MALLOC_TUNE": flag},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for flag in ("0", "1")
    }
    assert out == {"0": "False", "1": "True" if sys.platform.startswith("linux") else "False"}


def _finished(client, prefix: str) -> int:
    return client.run_on_scheduler(
        lambda dask_scheduler: (
            dask_scheduler.task_prefixes[prefix].state_counts["memory"]
            if prefix in dask_scheduler.task_prefixes
            else 0
        )
    )


@pytest.mark.parametrize("seed", [0, *(pytest.param(s, marks=pytest.mark.long) for s in (1, 2))])
def test_em_on_the_sample_on_worker_processes_gives_the_lockstep_bits(
    seed, local_cluster, monkeypatch
):
    """On a cluster, EM on the sample runs each candidate as its own task on the worker
    processes. On generated variants (dtype, row weights, method, types, K, restarts,
    initialisation) every candidate ends with exactly the bits, iterations and decisions of the
    same run with EM on the sample in lockstep in one process."""
    import dgmm
    import dgmm.em

    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 6))
    centres = rng.normal(scale=4.0, size=(3, d))
    X = centres[rng.integers(3, size=20_000)] + rng.normal(size=(20_000, d))
    X = X.astype(rng.choice(["float32", "float64"]))
    w = rng.uniform(0.2, 3.0, size=X.shape[0]) if rng.random() < 0.5 else None
    types = list(rng.choice(COV_TYPES, size=int(rng.integers(2, 5)), replace=False))
    variational = seed == 1  # one variant of each method, the third drawn
    if seed == 2:
        variational = bool(rng.random() < 0.5)
    kw = dict(
        n_init=int(rng.integers(1, 3)),
        init_params=str(rng.choice(["kmeans", "k-means++", "random_from_data"])),
        random_state=int(rng.integers(1000)),
        strategy="sample",
        sample_size=9000,  # over 4096 rows: the sample is several blocks in memory
        sample_weight=w,
    )
    if variational:
        grid, kw["method"], kw["max_iter"] = int(rng.integers(3, 6)), "variational", 30
    else:
        grid = sorted(rng.choice(np.arange(1, 6), size=int(rng.integers(2, 4)), replace=False))
        grid = [int(k) for k in grid]
    x = da.from_array(X, chunks=int(rng.integers(5000, 10_000)))

    before = _finished(local_cluster, "dgmm-em-in-memory")
    spread = dgmm.select(x, grid, types, **kw)
    tasks = _finished(local_cluster, "dgmm-em-in-memory") - before
    live = sum(r["sample_iter"] > 0 for r in spread.results)
    assert live >= 2 and tasks >= live, (tasks, live)  # each ran as a task on the workers

    monkeypatch.setattr(dgmm._em_workers, "cluster_workers", list)  # no cluster: lockstep
    lockstep = dgmm.select(x, grid, types, **kw)
    assert _finished(local_cluster, "dgmm-em-in-memory") - before == tasks
    assert spread.n_passes_ == lockstep.n_passes_
    for a, b in zip(spread.results, lockstep.results, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            same = a[key] == b[key] or (a[key] != a[key] and b[key] != b[key])  # NaN == NaN
            assert same, (key, a, b)
    assert spread.best_params_ == lockstep.best_params_
    best_a, best_b = spread.best_estimator_, lockstep.best_estimator_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(best_a, name), getattr(best_b, name))


def test_em_tasks_end_as_lockstep_with_the_judged_rows_of_their_fits(local_cluster):
    """`run_em_on_workers` on rows in memory: every state ends, bit for bit, where `run_em` in
    lockstep in this process ends it (Gaussian and variational, every covariance type, row
    weights, several blocks), each with the judged rows of its own final fit."""
    from copy import deepcopy

    import dgmm
    from dgmm._em_workers import run_em_on_workers
    from dgmm.em import DataPasses, EMState, judged_outputs, judged_rows, run_em
    from dgmm.inputs import load_input

    rng = np.random.default_rng(3)
    centres = rng.normal(scale=4.0, size=(3, 4))
    X = (centres[rng.integers(3, size=20_000)] + rng.normal(size=(20_000, 4))).astype("float32")
    w = rng.uniform(0.5, 2.0, size=X.shape[0])
    states = []
    for i, cov in enumerate(COV_TYPES):
        for cls in (dgmm.GaussianMixture, dgmm.BayesianGaussianMixture):
            fit = cls(3 + i % 2, covariance_type=cov, max_iter=2, random_state=i)
            states.append(EMState(fit.fit(X, sample_weight=w)._params(), 1e-6))
    kw = dict(tol=1e-4, max_iter=40)
    lockstep = deepcopy(states)
    passes = DataPasses.over(load_input(X, w))
    assert passes.blocks.x.numblocks[0] > 1
    run_em(passes, lockstep, **kw)
    spread = run_em_on_workers(
        DataPasses.over(load_input(X, w)), X, w, deepcopy(states), judged=True, **kw
    )
    assert spread is not None and len(spread) == len(states)
    for a, (b, values) in zip(lockstep, spread, strict=True):
        assert (a.n_iter, a.converged, a.error) == (b.n_iter, b.converged, b.error)
        assert a.lower_bounds == b.lower_bounds
        for name in ("weights", "means", "covariances", "precisions_cholesky"):
            np.testing.assert_array_equal(getattr(a.params, name), getattr(b.params, name))
        assert set(values) == set(judged_outputs(a.params))
        for output, v in values.items():
            np.testing.assert_array_equal(v, judged_rows(a.params, X, output))


def test_em_tasks_go_to_the_workers_only_when_their_memory_holds_them(local_cluster):
    """Candidates whose EM tasks a worker's memory limit (1 GiB here) would not hold stay in
    this process: nothing is sent; candidates that fit go to the workers."""
    from dgmm._em_workers import em_task_bytes, run_em_on_workers
    from dgmm.em import DataPasses, EMState
    from dgmm.inputs import load_input
    from dgmm.memory import statistics_nbytes
    from dgmm.params import GaussianParams

    rng = np.random.default_rng(0)
    d = 1000
    x = rng.normal(size=(60, d)).astype("float32")

    def states(cov: str, k: int) -> list[EMState]:
        eye = np.broadcast_to(np.eye(d), (k, d, d)) if cov == "full" else np.ones((k, d))
        p = GaussianParams(cov, np.full(k, 1.0 / k), x[:k].astype(float), eye, eye)
        return [EMState(p, 1e-6), EMState(p, 1e-6)]

    budget = 0.75 * 2**30 - 256 * 2**20  # what a pass plans with on these workers
    assert em_task_bytes(statistics_nbytes("full", 10, d)) > budget
    before = _finished(local_cluster, "dgmm-em-in-memory")
    kw = dict(tol=1e-3, max_iter=2)
    passes = DataPasses.over(load_input(x))
    assert run_em_on_workers(passes, x, None, states("full", 10), **kw) is None
    assert _finished(local_cluster, "dgmm-em-in-memory") == before
    assert em_task_bytes(statistics_nbytes("diag", 2, d)) + x.nbytes < budget
    done = run_em_on_workers(passes, x, None, states("diag", 2), **kw)
    assert done is not None and all(s.n_iter == 2 for s, _ in done)
    assert _finished(local_cluster, "dgmm-em-in-memory") == before + 2
