"""Where a run computes: a LocalCluster it starts, an existing scheduler, or dask-jobqueue.

Every wait is bounded by the configured timeout (a scheduler that accepts a connection and never
answers included), and every socket the run opens itself listens on ``cluster.host``
(127.0.0.1 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask
from distributed import Client, LocalCluster
from distributed.security import Security

from dgmm import em as dgmm_em
from dgmm.validation import block_digest

from .schema import AddressClusterConfig, ConfigError, JobqueueClusterConfig, LocalClusterConfig

logger = logging.getLogger(__name__)


@contextmanager
def connect(config) -> Iterator[Client]:
    """A Client for the configured cluster, closed (and the cluster stopped) on exit."""
    if isinstance(config, LocalClusterConfig):
        with _local(config) as client:
            yield client
    elif isinstance(config, AddressClusterConfig):
        with _address(config) as client:
            yield client
    elif isinstance(config, JobqueueClusterConfig):
        with _jobqueue(config) as client:
            yield client
    else:  # pragma: no cover - the schema admits only the types above
        raise ConfigError(f"unknown cluster type {config!r}")


def _on_host(address: str | None, host: str) -> str | None:
    """An HTTP address with no host (':8787') listens on the cluster's host, not everywhere."""
    if address is not None and address.startswith(":"):
        return f"{host}{address}"
    return address


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Worker processes started in here ignore Ctrl-C: the run stops them itself.

    A terminal sends SIGINT to the whole process group; workers that caught it would each print
    a traceback before the run's one-line message. An ignored signal stays ignored in children.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextmanager
def _local(config: LocalClusterConfig) -> Iterator[Client]:
    host = config.host
    dashboard = _on_host(config.dashboard_address, host)
    if config.processes:
        # Workers are processes talking TCP on the configured host. Their own log goes straight
        # to the terminal: warnings (a task cancelled on shutdown, after Ctrl-C) stay off it.
        # `dgmm.worker` keeps unused imports out of the workers (~58 MiB each).
        # Task errors reach the client and end in its one line: the workers' own reports of
        # them (a disk full: one traceback per task) are kept off the terminal.
        network = {"host": host, "silence_logs": logging.CRITICAL, "preload": ["dgmm.worker"]}
    else:
        # Workers are threads of this process talking inproc:// (no port); the scheduler's and
        # workers' HTTP servers still listen, so they are put on the configured host too.
        network = {"worker_dashboard_address": f"{host}:0"}
        if dashboard is None:
            network["scheduler_kwargs"] = {"dashboard_address": f"{host}:0"}
    with _sigint_ignored():
        cluster = LocalCluster(
            n_workers=config.n_workers,
            threads_per_worker=config.threads_per_worker,
            memory_limit=config.memory_limit,
            processes=config.processes,
            dashboard_address=dashboard,
            **network,
        )
    with cluster, Client(cluster) as client:
        yield client


def _security(config: AddressClusterConfig) -> Security | None:
    if config.tls is None:
        return None
    return Security(
        tls_ca_file=config.tls.ca_file,
        tls_client_cert=config.tls.cert,
        tls_client_key=config.tls.key,
        require_encryption=True,
    )


async def _identity(address: str, timeout: float, connection_args: dict) -> dict:
    from distributed.comm import connect as comm_connect

    comm = await comm_connect(address, timeout=timeout, **connection_args)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def probe_scheduler(address: str, timeout: float, security: Security | None = None) -> dict:
    """Connect, handshake and ask a scheduler who it is, all within ``timeout`` seconds.

    Raises
    ------
    ConfigError
        When any step does not finish in time or fails, with the real elapsed time.
    """
    args = (security or Security()).get_connection_args("client")
    t0 = time.monotonic()
    try:
        return asyncio.run(asyncio.wait_for(_identity(address, timeout, args), timeout))
    except TimeoutError as e:
        what, name = "no answer", type(e).__name__
    except OSError as e:
        what, name = str(e) or "connection failed", type(e).__name__
    except Exception as e:  # a peer that is not a Dask scheduler can fail the protocol anyhow
        what, name = "the peer does not speak Dask's protocol", type(e).__name__
    elapsed = time.monotonic() - t0
    raise ConfigError(
        f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({what} after "
        f"{elapsed:.1f} s, {name}); is it running and reachable?"
    )


def _wait_for_workers(client: Client, where: str, timeout: float) -> None:
    t0 = time.monotonic()
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ConfigError(
            f"no Dask worker joined {where} within {timeout:g} s (waited "
            f"{time.monotonic() - t0:.1f} s); start workers or raise cluster.timeout"
        ) from None


@contextmanager
def _address(config: AddressClusterConfig) -> Iterator[Client]:
    security = _security(config)
    t0 = time.monotonic()
    probe_scheduler(config.address, config.timeout, security)
    left = max(1.0, config.timeout - (time.monotonic() - t0))
    try:
        client = Client(config.address, timeout=left, security=security)
    except (OSError, TimeoutError) as e:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {config.address} within {config.timeout:g} s "
            f"({type(e).__name__} after {time.monotonic() - t0:.1f} s); is it running and "
            "reachable?"
        ) from None
    with client:
        _wait_for_workers(client, f"the scheduler at {config.address}", config.timeout)
        yield client


def jobqueue_cluster(config: JobqueueClusterConfig):
    """The dask-jobqueue cluster of the config, not yet scaled (no job submitted).

    Its workers get ``--preload dgmm.worker`` (see `dgmm.worker`) unless the options name it.
    """
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(
            f"cluster type '{config.type}' needs dask-jobqueue: pip install 'dgmm[jobqueue]'"
        ) from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[config.type]
    options = dict(config.options)
    if "extra" not in options:  # the deprecated spelling is left as it is
        extra = options.get("worker_extra_args")
        if extra is None:  # the site's jobqueue settings, as dask-jobqueue would take them
            extra = dask.config.get(f"jobqueue.{config.type}.worker-extra-args", None) or []
        extra = list(extra)
        if "dgmm.worker" not in extra:
            extra += ["--preload", "dgmm.worker"]
        options["worker_extra_args"] = extra
    return cls(**options)


@contextmanager
def _jobqueue(config: JobqueueClusterConfig) -> Iterator[Client]:
    with jobqueue_cluster(config) as cluster:
        logger.info("job script:\n%s", cluster.job_script())
        cluster.scale(jobs=config.jobs)
        with Client(cluster) as client:
            _wait_for_workers(client, f"the {config.type} cluster", config.timeout)
            yield client


def _worker_view(block, folder: str) -> dict:
    """On a worker: the digest of a block it read, and whether it can write in ``folder``."""
    import os
    import socket
    import uuid

    probe = os.path.join(folder, f".probe-{uuid.uuid4().hex}")
    try:
        with open(probe, "x") as f:
            f.write("dgmm")
        os.unlink(probe)
        wrote = None
    except OSError as e:
        wrote = f"{type(e).__name__}: {e.strerror or e}"
    return {
        "digest": block_digest(block, 0),
        "wrote": wrote,
        "host": socket.gethostname(),
        "cwd": os.getcwd(),
    }


def check_worker_dgmm(client: Client, timeout: float) -> None:
    """Refuse workers that cannot import dgmm, or run another version of it.

    Asked with builtins only (``eval``), which any worker can unpickle: a task of dgmm's own
    would never start on such a worker, and the run would wait on it instead.
    """
    from importlib.metadata import version

    here = version("dgmm")
    # dgmm imported (a worker without it fails here), then its installed version
    ask = "(__import__('dgmm'), __import__('importlib.metadata', fromlist=['x']).version('dgmm'))"
    answers = dgmm_em.bounded(
        lambda: client.run(eval, ask + "[1]", on_error="return"),
        timeout,
        "when asked which dgmm the workers have",
    )
    for worker, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            raise ConfigError(
                f"worker {worker} cannot import dgmm ({type(answer).__name__}: {answer}); "
                f"install dgmm {here} in every worker's environment"
            )
        if answer != here:
            raise ConfigError(
                f"worker {worker} runs dgmm {answer}, this process {here}; install the "
                "same version everywhere"
            )


def check_worker_view(client: Client, x, data: str, folder: Path, timeout: float) -> None:
    """Prove, before the first pass, that every worker reads the rows the client reads and can
    write in ``folder`` (the run's working folder, where the labels are staged).

    Each worker reads one of a few row blocks (the first, a middle and the last) and digests
    it; the client reads the same blocks itself. Paths are absolute by then, so a worker that
    differs sees another file system at that path (another host, another mount).

    Raises
    ------
    ConfigError
        One line naming the worker, the path and what differed; or the workers that did not
        answer within ``timeout`` seconds.
    """
    from distributed import wait

    workers = sorted(
        dgmm_em.bounded(lambda: client.scheduler_info(n_workers=-1)["workers"], timeout, "")
    )
    check_worker_dgmm(client, timeout)
    n = x.numblocks[0]
    picks = sorted({0, n // 2, n - 1})
    futures = {
        w: client.compute(
            dask.delayed(_worker_view)(x.blocks[picks[i % len(picks)]], str(folder)),
            workers=[w],
            allow_other_workers=False,
        )
        for i, w in enumerate(workers)
    }
    expected = {i: block_digest(dask.compute(x.blocks[i], scheduler="sync")[0], 0) for i in picks}
    try:
        wait(list(futures.values()), timeout=timeout)
    except TimeoutError:
        late = [w for w, f in futures.items() if not f.done()]
        with contextlib.suppress(dgmm_em.StalledError):
            dgmm_em.bounded(lambda: client.cancel([futures[w] for w in late]), 5.0, "")
        raise ConfigError(
            f"{len(late)} worker(s) did not answer within {timeout:g} s when asked to read the "
            f"data: {', '.join(late[:3])}; are they stopped or overloaded?"
        ) from None
    for i, (w, fut) in enumerate(futures.items()):
        block = picks[i % len(picks)]
        try:
            seen = dgmm_em.bounded(fut.result, timeout, f"with worker {w}'s view of the data")
        except dgmm_em.StalledError as e:
            raise ConfigError(str(e)) from None
        except Exception as e:
            raise ConfigError(
                f"worker {w} cannot read the data '{data}' ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:300]}); every worker must see it at this absolute path"
            ) from None
        where = f"worker {w} (host {seen['host']}, folder {seen['cwd']})"
        if seen["digest"] != expected[block]:
            raise ConfigError(
                f"{where} reads other rows than this process at '{data}' (block {block} "
                "differs); every worker must see the same data at this absolute path"
            )
        if seen["wrote"] is not None:
            raise ConfigError(
                f"{where} cannot write in '{folder}' ({seen['wrote']}), where the run stages "
                "its labels; give every worker write access to the output's folder"
            )
