"""The pass-count contract of a whole run: profile, initialisation, EM, scoring, labels.

``report.json`` states the run's passes over the data; here they are predicted from the config
and counted as real chunk reads of the same steps on the threaded scheduler.
"""

from __future__ import annotations

import json

import dask
import pytest
import zarr
from dask.callbacks import Callback

from pipelines.cli import main
from pipelines.data import make_data, open_data
from pipelines.run import select_model, write_labels
from pipelines.schema import StoreConfig, load_config

from .conftest import run_output
from .helpers import write_cfg

# real processes, command-line runs or whole pipelines: deselect with -m 'not slow'
pytestmark = pytest.mark.slow


class _ChunkReads(Callback):
    """Executed tasks that read a whole chunk of a Zarr array (real reads of the real store).

    Slices of the head rows (which a fit centres its moments on) are ``from-zarr-getitem``
    tasks: fetches, not passes, counted apart.
    """

    def __init__(self):
        super().__init__()
        self.reads = self.fetches = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        name = key[0] if isinstance(key, tuple) else str(key)
        if name.startswith("from-zarr-getitem"):
            self.fetches += 1
        elif name.startswith("from-zarr-"):
            self.reads += 1


@pytest.mark.parametrize(
    ("init", "init_passes"),
    # k-means and k-means++ seed on a uniform sample of rows, whose pass is also the profile
    [("random_from_data", 1), ("random", 1), ("k-means++", 0 + 1), ("kmeans", 0 + 1)],
)
def test_run_passes_are_predicted_and_counted(init, init_passes, tmp_path):
    data = tmp_path / "d.zarr"
    make_data(data, 3000, 2, 3, seed=1, chunk_rows=500)
    max_iter = 5
    model = {
        "n_components": [2, 3, 4],
        "covariance_types": ["full", "diag"],
        "n_init": 2,
        "init": init,
        "tol": 0,
        "max_iter": max_iter,
    }
    cfg = write_cfg(tmp_path / "run.yaml", data, tmp_path / "out", model=model)
    # profile + init + EM iterations + scoring + labels
    expected = 1 + init_passes + max_iter + 1 + 1

    assert main(["run", str(cfg)]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_passes"] == expected

    # a rerun finds every fit in the store: one pass (the data's digest), then the labels'
    conf = load_config(cfg)
    x = open_data(conf.data).x
    again = select_model(conf, x, tmp_path / "again.npz")
    assert again.n_passes_ == 1 and again.reuse["reused"] == len(again.results)
    # the same steps afresh (no store) on the threaded scheduler, every chunk read counted
    conf = conf.model_copy(update={"store": StoreConfig(enabled=False)})
    n_chunks = len(x.chunks[0])
    with _ChunkReads() as counter, dask.config.set(scheduler="threads"):
        found = select_model(conf, x, tmp_path / "ckpt.npz")
        write_labels(tmp_path / "labels.zarr", x, found, probabilities=True)
    assert found.n_passes_ + 1 == expected and found.reuse is None
    assert counter.fetches <= n_chunks  # the head rows the moments are centred on
    assert counter.reads == expected * n_chunks
    got = zarr.open_group(str(tmp_path / "labels.zarr"))["labels"][:]
    assert (got == run_output(tmp_path / "out")["labels"][:]).all()
