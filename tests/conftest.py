"""Shared fixtures: seeded data, real Zarr stores on disk, a real LocalCluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from sklearn.datasets import make_blobs

COV_TYPES = ["full", "tied", "diag", "spherical"]
# tied converges slowly at tight tolerances (hundreds of passes): long tests use this list
COV_TYPES_TIED_SLOW = [
    pytest.param(c, marks=pytest.mark.slow) if c == "tied" else c for c in COV_TYPES
]


@pytest.fixture(autouse=True)
def _own_store(tmp_path_factory, monkeypatch):
    """Every test's runs keep their fits in a store of their own (`DGMM_STORE`, which the
    command's subprocesses inherit), never in the user's shared one nor another test's."""
    monkeypatch.setenv("DGMM_STORE", str(tmp_path_factory.mktemp("store")))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def blobs():
    """1500 rows, 3 features, 4 well separated clusters."""
    X, y = make_blobs(n_samples=1500, n_features=3, centers=4, random_state=1)
    return X, y


@pytest.fixture(scope="session")
def seed_example():
    """The classic GMM-selection example: 4 stretched blobs in 2-D."""
    X, y = make_blobs(n_samples=1250, n_features=2, centers=4, cluster_std=0.60, random_state=0)
    X = X[:, ::-1]
    return X @ np.random.RandomState(15).randn(2, 2), y


def explicit_init(X: np.ndarray, k: int, cov_type: str, seed: int = 0) -> dict:
    """Deterministic weights/means/precisions init from k random rows."""
    r = np.random.default_rng(seed)
    d = X.shape[1]
    means = X[r.choice(len(X), k, replace=False)]
    var = X.var(axis=0).mean()
    precisions = {
        "full": np.stack([np.eye(d) / var] * k),
        "tied": np.eye(d) / var,
        "diag": np.full((k, d), 1 / var),
        "spherical": np.full(k, 1 / var),
    }[cov_type]
    return {"weights_init": np.full(k, 1.0 / k), "means_init": means, "precisions_init": precisions}


def write_zarr(path, X: np.ndarray, chunks) -> zarr.Array:
    arr = zarr.create_array(str(path), shape=X.shape, chunks=chunks, dtype=X.dtype)
    arr[:] = X
    return arr


@pytest.fixture(scope="module")
def local_cluster():
    """A real LocalCluster with 2 worker processes on 127.0.0.1, and a Client to it."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="1GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_output(path) -> zarr.Group:
    """The per-row results (``assignments.zarr``) of a finished run output folder, after
    checking that its marker file says it is complete."""
    path = Path(path)
    marker = json.loads((path / "dgmm.json").read_text())
    assert marker["complete"] is True and marker["dgmm_output"] == "run", marker
    return zarr.open_group(str(path / "assignments.zarr"), mode="r")
