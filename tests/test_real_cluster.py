"""The docker/ topology with real processes: `dask scheduler`, two `dask worker`s, `dgmm run`."""

import json
import socket
import subprocess
import sys
import time

import pytest
import yaml
import zarr

from pipelines.data import make_data

from .test_pipeline import ROOT, dgmm_cli


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    """A scheduler and two workers (with nannies) as separate processes on 127.0.0.1."""
    from distributed import Client

    d = tmp_path_factory.mktemp("cluster")
    sched_file = d / "scheduler.json"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    deadline = time.time() + 60
    while not sched_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dask",
                    "worker",
                    "--scheduler-file",
                    str(sched_file),
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    "1GiB",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        with Client(scheduler_file=str(sched_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            yield client.scheduler.address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_job_command_against_real_scheduler(real_cluster, tmp_path):
    """What the compose `job` service runs: `dgmm run` on a config naming the scheduler."""
    data = tmp_path / "d.zarr"
    make_data(data, 4000, 2, 3, seed=4, chunk_rows=500)
    cfg = {
        "data": {"path": str(data), "array": "X"},
        "model": {"n_components": [2, 3, 4], "n_init": 2},
        "output": {"path": str(tmp_path / "out")},
        "cluster": {"type": "address", "address": real_cluster, "timeout": 20},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    proc = dgmm_cli("run", tmp_path / "run.yaml")
    assert "Best BIC values" in proc.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["selected"]["n_components"] == 3
    assert zarr.open_group(str(tmp_path / "out")).attrs["complete"] is True


def test_unreachable_scheduler_fails_fast(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "d.zarr"
    make_data(data, 100, 2, 2, chunk_rows=50)
    cfg = {
        "data": {"path": str(data), "array": "X"},
        "model": {"n_components": [2]},
        "output": {"path": str(tmp_path / "out")},
        "cluster": {"type": "address", "address": f"tcp://127.0.0.1:{port}", "timeout": 3},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dgmm", "run", str(tmp_path / "run.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 3 s" in proc.stderr
    assert time.perf_counter() - t < 60
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fit_survives_a_killed_worker(real_cluster, tmp_path):
    """SIGKILL one worker while chunks are being processed: the fit completes, identically."""
    import os
    import signal
    import threading

    import numpy as np
    from distributed import Client

    from dgmm import GaussianMixture

    data = tmp_path / "d.zarr"
    make_data(data, 200_000, 4, 4, seed=1, chunk_rows=10_000)
    path = f"{data}/X"
    kw = dict(n_components=4, init_params="random_from_data", random_state=0, tol=0, max_iter=15)
    with Client(real_cluster) as client:
        ref = GaussianMixture(**kw).fit(path)
        pids = list(client.run(os.getpid).values())
        victim = pids[0]
        timer = threading.Timer(1.5, os.kill, (victim, signal.SIGKILL))
        timer.start()
        t = time.perf_counter()
        disturbed = GaussianMixture(**kw).fit(path)
        took = time.perf_counter() - t
        timer.join()
        assert took > 1.5  # the worker was killed while the fit ran
        client.wait_for_workers(2, timeout=60)  # the nanny restarted it
        assert victim not in client.run(os.getpid).values()
    assert disturbed.n_iter_ == ref.n_iter_ == 15
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(disturbed, name), getattr(ref, name), rtol=1e-10, atol=1e-12
        )
