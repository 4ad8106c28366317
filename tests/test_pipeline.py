"""The pipeline end to end through the real command line, and its lockstep sweep."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray
import yaml
import zarr
from dask.callbacks import Callback
from sklearn.metrics import adjusted_rand_score

import dgmm
from dgmm.io import open_zarr_array, zarr_to_dask
from pipelines.data import make_data

from .conftest import run_output
from .helpers import INPROC_CLUSTER, ROOT, dgmm_cli

# real processes, command-line runs or whole pipelines: deselect with -m 'not slow'
pytestmark = pytest.mark.slow


def write_config(tmp_path, data_path, out_path, name="run.yaml", **sections):
    cfg = {
        "data": {"path": str(data_path), "array": "X"},
        "model": {
            "n_components": [1, 2, 3, 4],
            "covariance_types": ["full", "diag"],
            "n_init": 2,
            "random_state": 0,
        },
        "output": {"path": str(out_path), "probabilities": True},
        "cluster": dict(INPROC_CLUSTER),
    }
    for key, value in sections.items():
        cfg[key] = {k: v for k, v in {**cfg.get(key, {}), **value}.items() if v is not None}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "d.zarr"
    make_data(path, 6000, 3, 3, seed=2, chunk_rows=1000)
    return path


def test_end_to_end_outputs(tmp_path, small_data, capsys):
    out = tmp_path / "out"
    cfg = write_config(
        tmp_path,
        small_data,
        out,
        cluster={"processes": True, "n_workers": 2, "threads_per_worker": 1},
    )
    proc = dgmm_cli("run", cfg)
    assert "Dask dashboard:" in proc.stdout and "Best BIC values" in proc.stdout
    assert "BIC diff" in proc.stdout and "cluster sizes:" in proc.stdout
    assert not (tmp_path / "out.work").exists()

    group = run_output(out)
    assert group.attrs["complete"] is True
    labels = group["labels"]
    assert labels.dtype == np.int32 and labels.fill_value == -1
    assert labels.chunks == (1000,) and labels.metadata.dimension_names == ("sample",)
    probs, unc = group["probabilities"], group["uncertainty"]
    assert probs.dtype == np.float32 and probs.shape == (6000, 3)
    assert probs.metadata.dimension_names == ("sample", "component")
    p = probs[:]
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels[:], p.argmax(axis=1))
    np.testing.assert_allclose(unc[:], 1 - p.max(axis=1), atol=1e-6)

    report = json.loads((out / "report.json").read_text())
    attrs = group.attrs
    assert (attrs["covariance_type"], attrs["n_components"]) == ("full", 3)
    assert attrs["bic"] == report["selected"]["bic"] and attrs["n_samples"] == 6000
    assert labels.attrs["n_components"] == 3 and "long_name" in labels.attrs
    assert "long_name" in probs.attrs and "long_name" in unc.attrs
    assert len(report["candidates"]) == 16  # every restart: 4 K x 2 covariance types x 2
    assert len(report["cells"]) == 8  # the best restart of each cell
    for row in report["candidates"]:
        assert {
            "n_components",
            "covariance_type",
            "restart",
            "log_likelihood",
            "n_parameters",
            "bic",
            "aic",
            "icl",
            "n_iter",
            "converged",
            "reg_covar",
            "error",
        } <= set(row)
        assert "seconds" not in row  # passes are shared: there is no per-candidate time
    assert sum(r["best_in_cell"] for r in report["candidates"]) == 8
    sel = report["selected"]
    assert (sel["covariance_type"], sel["n_components"]) == ("full", 3)
    assert sel["bic"] == min(r["bic"] for r in report["cells"])
    assert sum(report["cluster_sizes"]) == 6000
    assert report["versions"]["dgmm"] == dgmm.__version__
    assert report["config_hash"] == group.attrs["config_hash"]
    # the Zarr group holds only Zarr arrays: zarr and xarray open it without a warning

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        members = dict(zarr.open_group(str(out / "assignments.zarr"), mode="r").members())
        ds = xarray.open_zarr(out / "assignments.zarr")  # consolidated metadata: no warning
    assert set(members) == {"labels", "probabilities", "uncertainty"}
    assert ds["probabilities"].dims == ("sample", "component") and ds.sizes["sample"] == 6000
    np.testing.assert_array_equal(ds["labels"].values, labels[:])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "assignments.zarr",
            "clusters.png",
            "config.original.yaml",
            "config.yaml",
            "criteria.png",
            "dask-report.html",
            "dgmm.json",
            "model",
            "report.json",
            "run.log",
            "table.txt",
            "uncertainty.png",
        ]
    )

    model = dgmm.load(out / "model")
    x = zarr.open_group(str(small_data), mode="r")["X"][:]
    np.testing.assert_array_equal(model.predict(x), labels[:])
    truth = zarr.open_group(str(small_data), mode="r")["labels"][:]
    assert adjusted_rand_score(truth, labels[:]) > 0.95
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["n_init"] == 2
    for png in ("criteria.png", "clusters.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "dask-report.html").stat().st_size > 1000
    assert "resuming" not in (out / "run.log").read_text()

    # predict: apply the saved model to the data, written all-or-nothing too
    pred = tmp_path / "pred.zarr"
    dgmm_cli("predict", out / "model", f"{small_data}/X", pred)
    np.testing.assert_array_equal(zarr.open_group(str(pred))["labels"][:], labels[:])

    # summary: the run's table and selection again, a saved model's parameters, else one line
    from pipelines.cli import main

    assert main(["summary", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (out / "table.txt").read_text().strip()
    assert main(["summary", str(out / "model")]) == 0
    text = capsys.readouterr().out
    assert "full covariance, K = 3, 3 features" in text and "converged after" in text
    assert text.startswith("GaussianMixture:") and "(unnamed" in text
    for j in range(3):  # weight, mean, standard deviations and correlation per component
        assert f"component {j}: weight" in text and "strongest correlation" in text
    for other, why in ((pred, "dgmm's predict output"), (small_data, "dgmm's make-data output")):
        assert main(["summary", str(other)]) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and len(err.splitlines()) == 1, err


def test_seed_example_through_pipeline(tmp_path, seed_example):
    X, y = seed_example
    g = zarr.open_group(str(tmp_path / "seed.zarr"), mode="w")
    g.create_array("X", shape=X.shape, chunks=(300, 2), dtype="f8")[:] = X
    cfg = write_config(
        tmp_path,
        tmp_path / "seed.zarr",
        tmp_path / "out",
        model={
            "n_components": {"start": 1, "stop": 10},
            "n_init": 4,
            "covariance_types": ["full", "spherical"],
        },
        output={"probabilities": False, "performance_report": False},
    )
    dgmm_cli("run", cfg)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["selected"]["covariance_type"], report["selected"]["n_components"]) == (
        "full",
        4,
    )
    labels = run_output(tmp_path / "out")["labels"][:]
    assert adjusted_rand_score(y, labels) >= 0.95


def _checkpoint_passes(path: Path) -> int:
    from dgmm._checkpoint import read_checkpoint

    try:
        return read_checkpoint(path)[0]["n_passes"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.long
def test_killed_run_resumes_to_identical_labels(tmp_path):
    data = tmp_path / "d.zarr"
    make_data(data, 120_000, 4, 5, seed=3, chunk_rows=12_000, separation=2.0)
    model = {
        "n_components": [3, 5, 7],
        "covariance_types": ["full"],
        "n_init": 1,
        "tol": 0,
        "max_iter": 15,
        "init": "random_from_data",
    }
    # the reference keeps no fits: the killed run must fit, not read them back
    ref = write_config(
        tmp_path, data, tmp_path / "ref", "ref.yaml", model=model, store={"enabled": False}
    )
    dgmm_cli("run", ref)

    cfg = write_config(tmp_path, data, tmp_path / "out", model=model)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgmm", "run", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / "out.work" / "checkpoint.npz"
    deadline = time.time() + 300
    while _checkpoint_passes(ckpt) < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _checkpoint_passes(ckpt)
    assert 6 <= killed_at < 17
    assert not (tmp_path / "out").exists()  # nothing looks complete

    resumed = dgmm_cli("run", cfg)
    log = (tmp_path / "out" / "run.log").read_text()
    assert "resuming from checkpoint" in log
    # said on stderr, with the passes the checkpoint holds
    assert f"dgmm: resumed from the checkpoint after {killed_at} passes" in resumed.stderr
    a = run_output(tmp_path / "ref")["labels"][:]
    b = run_output(tmp_path / "out")["labels"][:]
    np.testing.assert_array_equal(a, b)
    pa = run_output(tmp_path / "ref")["probabilities"][:]
    pb = run_output(tmp_path / "out")["probabilities"][:]
    assert pa.tobytes() == pb.tobytes()
    ra = json.loads((tmp_path / "ref" / "report.json").read_text())
    rb = json.loads((tmp_path / "out" / "report.json").read_text())
    assert ra["n_passes"] == rb["n_passes"]
    assert [r["log_likelihood"] for r in ra["candidates"]] == [
        r["log_likelihood"] for r in rb["candidates"]
    ]


PROGRESS_LINE = re.compile(
    r"^dgmm: pass (\d+) (profile|sample|init|em|score|labels): iteration (\d+), (\d+)/(\d+) "
    r"candidates running, best bic (-|\S+), \S+ rows/s, [\d.]+ s, elapsed (\d+:\d\d:\d\d)$"
)


@pytest.mark.long
def test_progress_lines_in_a_redirected_log(tmp_path, small_data):
    """With stdout and stderr sent to a file (a batch job), every pass writes one progress line
    with its number, phase, iteration, candidates running, best criterion, rate and elapsed
    time; run.log has the same lines. ``progress_interval`` thins the console's, not the log's."""
    model = {"n_components": [1, 2, 3], "covariance_types": ["full"], "n_init": 1}
    cfg = write_config(tmp_path, small_data, tmp_path / "out", model=model)
    log = tmp_path / "job.log"
    with log.open("w") as f:
        subprocess.run(
            [sys.executable, "-m", "dgmm", "run", str(cfg)],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=True,
        )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    lines = [m for m in map(PROGRESS_LINE.match, log.read_text().splitlines()) if m]
    assert [int(m[1]) for m in lines] == list(range(1, report["n_passes"] + 1))
    phases = [m[2] for m in lines]
    # the first pass profiles (and draws the sample k-means seeds on)
    assert phases[0] == "sample" and phases[-2:] == ["score", "labels"]
    assert "init" in phases and phases.count("em") == max(r["n_iter"] for r in report["candidates"])
    assert all(int(m[5]) == 3 for m in lines) and int(lines[-1][4]) == 0
    ems = [m for m in lines if m[2] == "em"]
    assert [int(m[3]) for m in ems] == list(range(1, len(ems) + 1))
    assert float(lines[-1][6]) == pytest.approx(report["selected"]["bic"], rel=1e-5)
    run_log = (tmp_path / "out" / "run.log").read_text()
    assert sum(f"pass {n} " in run_log for n in range(1, report["n_passes"] + 1)) == len(lines)
    # one clock for the whole run, whoever reports the pass
    elapsed = [sum(int(v) * 60**i for i, v in enumerate(reversed(m[7].split(":")))) for m in lines]
    assert elapsed == sorted(elapsed), elapsed
    # run.log: dgmm's lines, and other libraries' only from WARNING up (output.library_log)
    for line in run_log.splitlines():
        parts = line.split(" ", 4)
        if len(parts) > 3 and parts[2] in ("INFO", "DEBUG"):
            assert parts[3].split(".")[0].rstrip(":") in ("dgmm", "pipelines"), line


@pytest.mark.parametrize("seed", range(5))
def test_progress_interval_thins_the_console_not_the_log(seed, caplog):
    """Lines on a non-terminal stream come at most once per interval (the first at once); a
    resume is always said; run.log (the logger) gets every report."""
    import io

    from pipelines.run import _Progress

    rng = np.random.default_rng(seed)
    stream = io.StringIO()
    progress = _Progress(enabled=bool(rng.integers(2)), interval=3600.0, stream=stream)
    phases = rng.choice(["profile", "init", "em", "score", "resume"], size=int(rng.integers(1, 30)))
    with caplog.at_level("INFO", logger="pipelines"):
        for i, phase in enumerate(phases):
            progress(dgmm.PassReport(i + 1, str(phase), 0, 0, 4, "bic", None, 10, 0.1, 1.0))
    shown = stream.getvalue().splitlines()
    resumes = [ln for ln in shown if "resumed from the checkpoint" in ln]
    assert len(resumes) == list(phases).count("resume")
    first_pass = next((i for i, p in enumerate(phases) if p != "resume"), None)
    expected = 0 if (first_pass is None or not progress.lines) else 1
    assert len(shown) - len(resumes) == expected
    assert len([r for r in caplog.records if r.name == "pipelines"]) == len(phases)


@pytest.mark.long
def test_changed_config_starts_afresh(tmp_path, small_data):
    out = tmp_path / "out"
    cfg = write_config(tmp_path, small_data, out)
    work = tmp_path / "out.work"
    # a checkpoint left by a run of another config, in the working folder that run made
    from dgmm._candidates import Candidate
    from dgmm._checkpoint import save_checkpoint
    from pipelines.paths import claim_companion

    claim_companion(work, out, "work", fresh=False)

    key = {"config_hash": "0123456789abcdef"}
    save_checkpoint(work / "checkpoint.npz", key, [Candidate("full", 1, 0, 1e-6)], 3)
    dgmm_cli("run", cfg)
    log = (out / "run.log").read_text()
    assert "the settings changed" in log and "config_hash 0123456789abcdef" in log
    assert "starting afresh" in log


def test_validate_command(tmp_path, small_data):
    cfg = write_config(tmp_path, small_data, tmp_path / "out")
    proc = dgmm_cli("validate", cfg)
    assert "config OK: 16 candidate(s)" in proc.stdout and "(6000, 3)" in proc.stdout


class _CountReads(Callback):
    """Counts executed tasks that read a chunk of the Zarr array (real reads, real store)."""

    def __init__(self, name):
        super().__init__()
        self.name, self.reads = name, 0

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(key, tuple) and key[0] == self.name:
            self.reads += 1


def _sweep_reads(data_path, ks, tmp_path, tag, **kw):
    x = zarr_to_dask(open_zarr_array(f"{data_path}/X"))
    with _CountReads(x.name) as counter, dask.config.set(scheduler="threads"):
        found = dgmm.select(
            x, ks, "full", tol=0, max_iter=5, init_params="random_from_data", random_state=0, **kw
        )
    return counter.reads, len(x.chunks[0]), found


@pytest.mark.parametrize("checkpoint", [False, True])
def test_lockstep_sweep_reads_each_chunk_once_per_pass(tmp_path, small_data, checkpoint):
    """The pass-count contract of `dgmm.select`: the passes it reports are the real reads."""
    kw = {"checkpoint": tmp_path / "c.npz"} if checkpoint else {}
    single, n_chunks, one = _sweep_reads(small_data, [10], tmp_path, "single", **kw)
    (tmp_path / "c.npz").unlink(missing_ok=True)
    sweep, _, found = _sweep_reads(small_data, list(range(1, 11)), tmp_path, "sweep", **kw)
    assert len(found.results) == 10 and all(r["error"] is None for r in found.results)
    # (profile pass with a checkpoint) + init pass + 5 EM passes + scoring pass
    assert found.n_passes_ == one.n_passes_ == checkpoint + 1 + 5 + 1
    assert single == sweep == n_chunks * found.n_passes_  # ten values of K read as one


@pytest.mark.long
def test_standardized_parquet_run_and_predict_agree(tmp_path, capsys):
    """A run on Parquet columns with data.standardize stores the transform with the model;
    `dgmm predict` on the same rows applies it and gives the run's labels."""
    import pandas as pd

    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 0.0], [3.0, 0.002], [-2.0, -0.003]])
    x = centres[rng.integers(3, size=1500)] + rng.normal(size=(1500, 2)) * [0.5, 0.001]
    x += [1e4, -50.0]  # columns on very different scales and far from 0
    frame = pd.DataFrame({"u": x[:, 0], "note": ["x"] * len(x), "v": x[:, 1]})
    frame.to_parquet(tmp_path / "d.parquet")
    cfg = write_config(
        tmp_path,
        tmp_path / "d.parquet",
        tmp_path / "out",
        data={"columns": ["u", "v"], "standardize": True, "array": None},
        model={"n_components": [2, 3, 4], "covariance_types": ["full"], "n_init": 1},
    )
    dgmm_cli("run", cfg)
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    transform = json.loads((out / "model" / "standardize.json").read_text())
    assert report["data"]["standardize"] == transform
    np.testing.assert_allclose(transform["center"], x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(transform["scale"], x.std(axis=0), rtol=1e-9)
    sel = report["selected"]
    assert sel["n_components"] == 3
    labels = run_output(out)["labels"][:]
    pred = tmp_path / "pred"
    dgmm_cli("predict", out / "model", tmp_path / "d.parquet", pred, "--columns", "u,v")
    np.testing.assert_array_equal(zarr.open_group(str(pred))["labels"][:], labels)
    # the model keeps the columns' names: another table order gets the same labels
    assert list(dgmm.load(out / "model").feature_names_in_) == ["u", "v"]
    frame[["v", "u"]].to_csv(tmp_path / "vu.csv", index=False, float_format="%.17g")
    dgmm_cli("predict", out / "model", tmp_path / "vu.csv", tmp_path / "pred-vu")
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "pred-vu"))["labels"][:], labels)
    from pipelines.cli import main

    assert main(["summary", str(out / "model")]) == 0
    assert "columns: u, v\n" in capsys.readouterr().out
