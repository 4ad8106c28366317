"""The docker/ topology with real processes: `dask scheduler`, two `dask worker`s, `dgmm run`."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from distributed import Client

from pipelines.data import make_data

from .conftest import run_output
from .helpers import ROOT, dask_processes, dgmm_cli

# real processes, command-line runs or whole pipelines: deselect with -m 'not slow'
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    """A scheduler and two workers (with nannies) as separate processes on 127.0.0.1."""
    with dask_processes(tmp_path_factory.mktemp("cluster")) as address:
        yield address


@pytest.mark.long
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
    assert run_output(tmp_path / "out").attrs["complete"] is True
    # `--preload dgmm.worker` (as in docker/): the workers ran the whole sweep without loading
    # sparse/numba, and set the allocator up for their 1 GiB limit
    with Client(real_cluster, timeout=20) as client:
        seen = client.run(_worker_state)
    assert len(seen) == 2
    for state in seen.values():
        assert state["dgmm.estep"], "the sweep did not run on this worker"
        assert not state["numba"] and not state["sparse"]
        assert state["thresholds"] is not None and max(state["thresholds"]) <= 2**30 // 16


def _worker_state() -> dict:
    from dgmm import _malloc

    loaded = {name: sys.modules.get(name) is not None for name in ("dgmm.estep", "numba", "sparse")}
    return {**loaded, "thresholds": _malloc.thresholds}


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


@pytest.mark.long
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


def _certificates(d: Path) -> dict[str, Path]:
    """A throwaway CA and a certificate it signs for 127.0.0.1 (PEM files)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject, pub, ca: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("dgmm test CA"))
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            import ipaddress

            b = b.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return b.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    files = {"ca_file": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem"}
    files["ca_file"].write_bytes(cert("dgmm test CA", ca_key.public_key(), True).public_bytes(pem))
    files["cert"].write_bytes(cert("127.0.0.1", key.public_key(), False).public_bytes(pem))
    files["key"].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


@pytest.mark.long
def test_run_against_a_tls_scheduler(tmp_path):
    """cluster.tls certificate paths become a distributed.Security; the run completes over TLS."""
    from distributed import Client
    from distributed.security import Security

    certs = _certificates(tmp_path)
    tls = ["--tls-ca-file", str(certs["ca_file"]), "--tls-cert", str(certs["cert"])]
    tls += ["--tls-key", str(certs["key"])]
    security = Security(
        tls_ca_file=str(certs["ca_file"]),
        tls_client_cert=str(certs["cert"]),
        tls_client_key=str(certs["key"]),
        require_encryption=True,
    )
    data = tmp_path / "d.zarr"
    make_data(data, 3000, 2, 2, seed=3, chunk_rows=500)
    with dask_processes(tmp_path, tls, security) as address:
        assert address.startswith("tls://127.0.0.1:")
        cluster = {"type": "address", "address": address, "timeout": 20}
        cfg = {
            "data": {"path": str(data), "array": "X"},
            "model": {"n_components": [1, 2, 3]},
            "output": {"path": str(tmp_path / "out")},
            "cluster": {**cluster, "tls": {k: str(v) for k, v in certs.items()}},
        }
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
        proc = dgmm_cli("run", tmp_path / "run.yaml")
        assert "Dask dashboard: " in proc.stdout
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["selected"]["n_components"] == 2
        with Client(address, security=security, timeout=20) as client:
            # the run's tasks ran on these TLS workers
            assert "dgmm-estep" in client.run_on_scheduler(
                lambda dask_scheduler: set(dask_scheduler.task_prefixes)
            )

        # without certificates the same address is refused before connecting
        cfg["cluster"] = cluster
        cfg["output"]["path"] = str(tmp_path / "out2")
        (tmp_path / "plain.yaml").write_text(yaml.safe_dump(cfg))
        proc = dgmm_cli("run", tmp_path / "plain.yaml", check=False)
        assert proc.returncode == 2
        assert f"address '{address}' is tls:// but no certificates are given" in proc.stderr


@pytest.mark.long
def test_worker_killed_while_labels_are_written(real_cluster, tmp_path):
    """SIGKILL a worker while the labels are written: the run ends complete and correct or with a
    clear error, a rerun completes, and the output never looks complete before it is."""
    import os
    import signal

    import numpy as np
    from distributed import Client

    data = tmp_path / "d.zarr"
    make_data(data, 500_000, 4, 4, seed=5, chunk_rows=5_000)
    cfg = {
        "data": {"path": str(data), "array": "X"},
        "model": {"n_components": [4], "max_iter": 8, "tol": 0, "init": "random_from_data"},
        "output": {"path": str(tmp_path / "ref"), "probabilities": True},
        "cluster": {"type": "address", "address": real_cluster, "timeout": 20},
    }
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(cfg))
    dgmm_cli("run", tmp_path / "ref.yaml")
    ref = run_output(tmp_path / "ref")

    out = tmp_path / "out"
    cfg["output"]["path"] = str(out)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    with Client(real_cluster) as client:
        victim = next(iter(client.run(os.getpid).values()))
        proc = subprocess.Popen(
            [sys.executable, "-m", "dgmm", "run", str(tmp_path / "run.yaml")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "stderr.txt").open("w"),
        )
        labels = tmp_path / "out.work" / "staging" / "assignments.zarr" / "labels" / "zarr.json"
        killed_at = None
        while proc.poll() is None:
            if out.exists():  # whenever the output exists, it is the complete one
                assert run_output(out).attrs["complete"] is True
            if killed_at is None and labels.exists():
                os.kill(victim, signal.SIGKILL)
                killed_at = time.perf_counter()
            time.sleep(0.005)
        stderr = (tmp_path / "stderr.txt").read_text()
        assert killed_at is not None, "the run ended before its labels were written"
        client.wait_for_workers(2, timeout=60)  # the nanny restarts the worker

    if proc.returncode != 0:  # a clear one-line error, then a rerun completes
        assert stderr.strip().splitlines()[-1].startswith("dgmm: error: ")
        assert not out.exists()
        dgmm_cli("run", tmp_path / "run.yaml")
    got = run_output(out)
    assert got.attrs["complete"] is True
    np.testing.assert_array_equal(got["labels"][:], ref["labels"][:])
    np.testing.assert_array_equal(got["probabilities"][:], ref["probabilities"][:])


def test_local_cluster_listens_on_loopback_by_default():
    """The embedded cluster's scheduler, workers and dashboard bind 127.0.0.1 unless configured."""
    from pipelines.cluster import connect
    from pipelines.schema import LocalClusterConfig

    cfg = LocalClusterConfig(
        type="local", n_workers=1, processes=True, dashboard_address="127.0.0.1:0"
    )
    with connect(cfg) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        workers = client.scheduler_info()["workers"]
        assert workers and all(a.startswith("tcp://127.0.0.1:") for a in workers)
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        # the run's own workers load the dgmm.worker preload
        assert all(client.run(lambda: "dgmm.worker" in sys.modules).values())
