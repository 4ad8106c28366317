"""One view of every path: a run against workers started in another folder reads and writes
where the client means, however the paths are spelled (relative, ``~``, variables, absolute)."""

import json
import os
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import yaml
import zarr
from distributed import Client

import dgmm
import dgmm.io
from dgmm.paths import absolute_path
from pipelines.cluster import check_worker_view
from pipelines.data import make_data
from pipelines.schema import ConfigError, load_config

from .conftest import run_output
from .helpers import dask_processes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """A scheduler and a worker started in a folder of their own that holds decoy data under
    the relative name the client's data has; yields (address, client folder, worker folder)."""
    root = tmp_path_factory.mktemp("paths")
    client_dir, worker_dir, sched = root / "client", root / "worker", root / "sched"
    for d in (client_dir, worker_dir, sched):
        d.mkdir()
    make_data(client_dir / "d.zarr", 3000, 2, 3, seed=1, chunk_rows=500)
    make_data(worker_dir / "d.zarr", 3000, 2, 3, seed=2, chunk_rows=500)  # the decoy
    env = {**os.environ, "HOME": str(worker_dir)}  # the workers' ~ is another folder too
    with dask_processes(sched, workers=1, cwd=worker_dir, env=env) as address:
        yield address, client_dir, worker_dir


def _spell(rng, name: str, home: str) -> str:
    """One of the ways a user may write ``<client folder>/name``."""
    forms = [
        name,
        f"./{name}",
        f"sub/../{name}",
        f"~/{name}",
        f"$DGMM_HERE/{name}",
        home + "/" + name,
    ]
    return forms[rng.integers(len(forms))]


@pytest.mark.parametrize("seed", range(3))
def test_relative_paths_mean_the_clients_folder_on_workers_elsewhere(elsewhere, seed):
    address, client_dir, worker_dir = elsewhere
    rng = np.random.default_rng(seed)
    (client_dir / "sub").mkdir(exist_ok=True)
    out_name = f"out-{seed}"
    cfg = {
        "data": {"path": _spell(rng, "d.zarr", str(client_dir)), "array": "X"},
        "model": {"n_components": [3], "random_state": seed},
        "output": {"path": _spell(rng, out_name, str(client_dir))},
        "cluster": {"type": "address", "address": address, "timeout": 30},
    }
    (client_dir / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HOME": str(client_dir), "DGMM_HERE": str(client_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "dgmm", "run", "run.yaml"],
        cwd=client_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (cfg, proc.stderr)
    out = client_dir / out_name
    labels = run_output(out)["labels"][:]
    rows = zarr.open_array(str(client_dir / "d.zarr/X"), mode="r")[:]
    # the labels are the model's on the client's rows, and the model was fitted to those rows
    np.testing.assert_array_equal(labels, dgmm.load(out / "model").predict(rows))
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["digest"] == f"{dgmm.profile(str(client_dir / 'd.zarr/X')).digest:032x}"
    # nothing was written in the workers' folder, nor under a literal '~' or '$' name
    assert sorted(p.name for p in worker_dir.iterdir() if not p.name.startswith("dask")) == [
        "d.zarr"
    ]
    assert not any(p.name.startswith(("~", "$")) for p in client_dir.rglob("*"))


def test_workers_that_read_other_rows_are_refused_before_the_first_pass(elsewhere, monkeypatch):
    """A Zarr array opened at a relative path (as a user's own Dask graph may hold it) reads
    the decoy on the worker: the check names the worker and the block."""
    address, client_dir, _ = elsewhere
    monkeypatch.chdir(client_dir)
    x = da.from_zarr(zarr.open_array("d.zarr/X", mode="r"))
    assert x.shape == (3000, 2)
    with Client(address, timeout=30) as client:
        with pytest.raises(ConfigError, match=r"reads other rows than this process"):
            check_worker_view(client, x, "d.zarr/X", client_dir, timeout=30)
        # the same data at its absolute path passes
        x = da.from_zarr(zarr.open_array(str(client_dir / "d.zarr/X"), mode="r"))
        check_worker_view(client, x, str(client_dir / "d.zarr/X"), client_dir, timeout=30)


@pytest.mark.parametrize(
    "spelling",
    ["rel/x", "./x", "a/../x", "~/x", "~", "$DGMM_P/x", "${DGMM_P}/x", "/abs/x", "x/"],
)
def test_every_path_setting_is_absolute_once_validated(tmp_path, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DGMM_P", str(tmp_path / "p"))
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {"path": spelling},
                "model": {"n_components": [2]},
                "output": {"path": os.path.join(spelling, "out")},
            }
        )
    )
    cfg = load_config(tmp_path / "c.yaml")
    for path in (cfg.data.path, cfg.output.path):
        assert os.path.isabs(path) and "~" not in path and "$" not in path and ".." not in path
    assert cfg.data.path == str(absolute_path(spelling))


def test_an_unset_variable_in_a_path_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.delenv("DGMM_UNSET", raising=False)
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {"path": "$DGMM_UNSET/d.zarr"},
                "model": {"n_components": [2]},
                "output": {"path": "out"},
            }
        )
    )
    with pytest.raises(ConfigError, match=r"data\.path: .*DGMM_UNSET, which is not set"):
        load_config(tmp_path / "c.yaml")


def test_a_worker_without_dgmm_is_named_before_the_first_pass(tmp_path):
    """A worker whose environment lacks dgmm fails dgmm's first task: the check says so,
    instead of a later pass reporting it as something else."""
    import subprocess
    import sys

    from .helpers import dask_processes

    make_data(tmp_path / "d.zarr", 2000, 2, 2, seed=1, chunk_rows=500)
    with dask_processes(tmp_path, workers=0) as address:
        code = (
            "import sys; sys.modules['dgmm'] = None; sys.modules['pipelines'] = None; "
            "from distributed.cli.dask_worker import main; "
            f"sys.argv = ['dask-worker', '{address}', '--no-nanny', '--nthreads', '1', "
            "'--no-dashboard', '--host', '127.0.0.1']; main()"
        )
        worker = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            with Client(address, timeout=30) as client:
                client.wait_for_workers(1, timeout=60)
                x = dgmm.io.zarr_to_dask(dgmm.io.open_zarr_array(tmp_path / "d.zarr" / "X"))
                with pytest.raises(ConfigError, match=r"cannot import dgmm .*install dgmm 0"):
                    check_worker_view(client, x, "d.zarr/X", tmp_path, timeout=30)
        finally:
            worker.terminate()
            worker.wait(timeout=20)
