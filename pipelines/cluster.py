"""Where a run computes: a LocalCluster it starts, an existing scheduler, or dask-jobqueue."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster
from distributed.security import Security

from .schema import AddressClusterConfig, ConfigError, JobqueueClusterConfig, LocalClusterConfig

logger = logging.getLogger(__name__)


@contextmanager
def connect(config) -> Iterator[Client]:
    """A Client for the configured cluster, closed (and the cluster stopped) on exit."""
    if isinstance(config, LocalClusterConfig):
        # Worker threads in this process talk over inproc:// (no port at all); processes use TCP
        # on the configured host, 127.0.0.1 by default.
        network = {"host": config.host} if config.processes else {}
        with (
            LocalCluster(
                n_workers=config.n_workers,
                threads_per_worker=config.threads_per_worker,
                memory_limit=config.memory_limit,
                processes=config.processes,
                dashboard_address=config.dashboard_address,
                **network,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    elif isinstance(config, AddressClusterConfig):
        security = None
        if config.tls is not None:
            security = Security(
                tls_ca_file=config.tls.ca_file,
                tls_client_cert=config.tls.cert,
                tls_client_key=config.tls.key,
                require_encryption=True,
            )
        try:
            client = Client(config.address, timeout=config.timeout, security=security)
        except (OSError, TimeoutError) as e:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {config.address} within "
                f"{config.timeout:g} s ({type(e).__name__}); is it running and reachable?"
            ) from None
        with client:
            yield client
    elif isinstance(config, JobqueueClusterConfig):
        try:
            import dask_jobqueue
        except ImportError:
            raise ConfigError(
                f"cluster type '{config.type}' needs dask-jobqueue: pip install 'dgmm[jobqueue]'"
            ) from None
        cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[config.type]
        with cls(**config.options) as cluster:
            logger.info("job script:\n%s", cluster.job_script())
            cluster.scale(jobs=config.jobs)
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=config.timeout)
                yield client
    else:  # pragma: no cover - the schema admits only the types above
        raise ConfigError(f"unknown cluster type {config!r}")
