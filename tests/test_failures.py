"""One line on every failure, and no wait or allocation without a bound: YAML that expands
without end, data the disk cannot hold, SIGTERM, and values float64 cannot square."""

import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import yaml

import dgmm
from pipelines.cli import main
from pipelines.data import make_data
from pipelines.schema import ConfigError, load_config

from .conftest import write_zarr
from .helpers import INPROC_CLUSTER, corrupt_chunk_store


def _bomb(rng) -> str:
    """A YAML document whose aliases, nested, stand for width**depth values."""
    width, depth = int(rng.integers(3, 10)), int(rng.integers(6, 12))
    lines = ["a0: &a0 [x]"]
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    where = rng.integers(3)
    body = {0: f"model:\n  n_components: *a{depth}", 1: f"dask: *a{depth}", 2: f"extra: *a{depth}"}
    return "\n".join(lines) + "\n" + body[int(where)] + "\n"


@pytest.mark.parametrize("seed", range(6))
def test_yaml_that_expands_without_end_is_refused_at_once(tmp_path, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(rng))
    t = time.perf_counter()
    with pytest.raises(ConfigError, match=r"expands to more than 100000 values"):
        load_config(path)
    assert time.perf_counter() - t < 5


def test_an_override_that_expands_without_end_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {"data": {"path": "d"}, "model": {"n_components": [1]}, "output": {"path": "o"}}
        )
    )
    levels = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    deep = "[" + ", ".join(levels) + "]"  # the last level stands for 10**9 values
    with pytest.raises(ConfigError, match=r"override 'dask' expands to more than"):
        load_config(path, [f"dask={deep}"])


@pytest.mark.parametrize("rows", [10**14, 10**12, 3 * 10**11])
def test_make_data_refuses_what_the_disk_cannot_hold(tmp_path, capsys, rows):
    out = tmp_path / "big.zarr"
    args = ["make-data", str(out), "--n-samples", str(rows), "--n-features", "4"]
    assert main([*args, "--n-components", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GiB free; make fewer rows" in err[0], err
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("seed", range(8))
def test_values_float64_cannot_square_are_refused_by_name_never_fitted_silently(seed, tmp_path):
    rng = np.random.default_rng(seed)
    exponent = int(rng.choice([-320, -300, -200, -160, -100, 0, 100, 150, 200, 300]))
    x = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(9, 1, (200, 2))]) * 10.0**exponent
    # Zarr input is profiled by the pass that draws its sample (the default strategy)
    as_zarr = bool(rng.integers(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            data = write_zarr(tmp_path / "x.zarr", x, (100, 2)) if as_zarr else x
            found = dgmm.select(data, [1, 2], random_state=0)
        except dgmm.DataError as e:
            assert "too large" in str(e) or "too small" in str(e), e
            spread = np.ptp(x, axis=0)
            assert (spread > np.sqrt(np.finfo(float).max / len(x))).any() or (
                spread < np.sqrt(np.finfo(float).tiny)
            ).any()
            return
    assert np.isfinite(found.best_estimator_.means_).all()
    assert np.isfinite([r["bic"] for r in found.cells() if r["bic"] is not None]).all()


def _run_until_pass_4(config) -> subprocess.Popen:
    """`dgmm run config` in a child process, returned once it has reported its fourth pass
    (its stderr still open for the rest)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgmm", "run", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stderr:
        if line.startswith("dgmm: pass 4 "):
            break
    return proc


@pytest.mark.slow
def test_sigterm_ends_a_run_in_one_line_and_a_rerun_resumes(tmp_path):
    make_data(tmp_path / "d.zarr", 200_000, 4, 4, seed=1, chunk_rows=20_000, separation=2.0)
    cfg = {
        "data": {"path": str(tmp_path / "d.zarr"), "array": "X"},
        "model": {"n_components": [2, 3, 4, 5], "tol": 0, "max_iter": 60, "strategy": "exact"},
        "output": {"path": str(tmp_path / "out"), "progress_interval": 0},
        "cluster": dict(INPROC_CLUSTER),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    proc = _run_until_pass_4(tmp_path / "run.yaml")  # then end it as a batch system does
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 143
    last = rest.strip().splitlines()[-1]
    assert last == "dgmm: terminated (SIGTERM); rerun the same command to resume", rest
    assert "Traceback" not in rest
    assert not (tmp_path / "out").exists() and (tmp_path / "out.work" / "checkpoint.npz").exists()
    again = subprocess.run(
        [sys.executable, "-m", "dgmm", "run", str(tmp_path / "run.yaml")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    assert "dgmm: resumed from the checkpoint after" in again.stderr


def _tree_pids(pattern: str) -> list[int]:
    """The processes whose command line matches ``pattern``, with their children."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    pids = [int(p) for p in found.split()]
    for p in list(pids):
        kids = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout
        pids += [int(k) for k in kids.split()]
    return pids


@pytest.mark.long
@pytest.mark.parametrize("stopped", ["scheduler", "workers"])
def test_a_stopped_scheduler_or_worker_is_said_and_fails_the_run_within_its_bound(
    tmp_path, stopped
):
    """SIGSTOP leaves a peer connected and silent: the run says what it waits for, then fails
    in one line within the stall timeout (and the bounded clean-up), instead of waiting for
    the scheduler's worker-ttl or forever."""
    from .helpers import dask_processes

    make_data(tmp_path / "d.zarr", 200_000, 4, 4, seed=1, chunk_rows=20_000, separation=2.0)
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    with dask_processes(cluster_dir, workers=1) as address:
        cfg = {
            "data": {"path": str(tmp_path / "d.zarr"), "array": "X"},
            "model": {"n_components": [2, 3, 4, 5], "tol": 0, "max_iter": 500},
            "output": {"path": str(tmp_path / "out"), "progress_interval": 0},
            "cluster": {"type": "address", "address": address, "timeout": 10},
            "dask": {"dgmm.stall-timeout": "6s"},
        }
        cfg["model"]["strategy"] = "exact"
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
        proc = _run_until_pass_4(tmp_path / "run.yaml")
        pattern = f"dask {'scheduler' if stopped == 'scheduler' else 'worker'}.*{cluster_dir}"
        pids = _tree_pids(pattern)
        assert pids
        t0 = time.monotonic()
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            rest = proc.stderr.read()
            status = proc.wait(timeout=300)
            took = time.monotonic() - t0
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)
            proc.kill()
    lines = rest.strip().splitlines()
    assert status == 1 and "Traceback" not in rest, rest
    waiting = [i for i, line in enumerate(lines) if "WARNING" in line and "waiting on" in line]
    assert waiting and waiting[0] < len(lines) - 1, rest  # said before the end
    assert lines[-1].startswith("dgmm: error: StalledError: "), rest
    assert ("scheduler does not answer" if stopped == "scheduler" else "not heard from") in lines[
        -1
    ]
    assert took < 6 * 6, (took, rest)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Data and a finished run (model included), on the ordinary disk."""
    d = tmp_path_factory.mktemp("fitted")
    make_data(d / "d.zarr", 150_000, 3, 2, seed=4, chunk_rows=15_000)
    cfg = {
        "data": {"path": str(d / "d.zarr"), "array": "X"},
        "model": {"n_components": [2], "n_init": 1},
        "output": {"path": str(d / "done"), "probabilities": True},
        "cluster": dict(INPROC_CLUSTER),
    }
    (d / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(d / "run.yaml")]) == 0
    return d


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a size the test chooses (root only: skipped elsewhere)."""
    mounted = []

    def mount(kib: int):
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(point)])
        if r.returncode != 0:
            pytest.skip("mounting a small tmpfs needs root")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_a_full_disk_ends_in_one_line_and_keeps_the_earlier_output(
    fitted, small_disk, capsys, seed
):
    """Whatever fills up (labels, probabilities, checkpoint, log, model), the command ends in
    one line that says the disk is full, and an earlier output is left as it was."""
    rng = np.random.default_rng(seed)
    command = ["run", "predict"][seed % 2]
    disk = small_disk(int(rng.integers(64, 2048)))
    out = disk / "out"
    earlier = bool(rng.integers(2))
    if command == "run":
        cfg = yaml.safe_load((fitted / "run.yaml").read_text())
        cfg["output"].update(path=str(out), probabilities=bool(rng.integers(2)), overwrite=True)
        (disk.parent / f"run{seed}.yaml").write_text(yaml.safe_dump(cfg))
        args = ["run", str(disk.parent / f"run{seed}.yaml")]
    else:
        args = ["predict", str(fitted / "done" / "model"), str(fitted / "d.zarr" / "X"), str(out)]
        args += ["--overwrite"] + (["--probabilities"] if rng.integers(2) else [])
    if earlier:  # a small earlier output of the same kind, to be kept if the new one fails
        assert main(args[:1] + args[1:]) in (0, 1)
        capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else None
    status = main(args)
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("dgmm: pass ")]
    if status == 0:  # it fitted: nothing to say, and the output is complete
        assert err == [] and (out / ("dgmm.json" if command == "run" else "zarr.json")).exists()
        return
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith("dgmm: error: no space left on "), err
    if before is not None:
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def _cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dgmm", *args], capture_output=True, text=True, timeout=timeout
    )


def _problems(stderr: str) -> list[str]:
    """What stderr says besides progress lines."""
    return [x for x in stderr.strip().splitlines() if not x.startswith("dgmm: pass ")]


@pytest.mark.slow
def test_a_corrupt_chunk_read_by_worker_processes_is_one_line(tmp_path):
    """Worker processes report a failing task themselves: none of that reaches the terminal,
    only the run's line naming the chunk."""
    rng = np.random.default_rng(0)
    data = corrupt_chunk_store(tmp_path / "c.zarr", rng.normal(size=(600, 4)), 200)
    cfg = {
        "data": {"path": str(data)},
        "model": {"n_components": [2]},
        "output": {"path": str(tmp_path / "out")},
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "processes": True},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    proc = _cli(["run", str(tmp_path / "run.yaml")])
    said = _problems(proc.stderr)
    assert proc.returncode == 1 and len(said) == 1, proc.stderr
    assert said[0].startswith("dgmm: error: ZarrChunkError: cannot read rows 200 to 399")


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_standardize_refuses_a_spread_it_cannot_compute(tmp_path, scale):
    x = np.random.default_rng(0).normal(size=(600, 3)) * scale
    np.save(tmp_path / "x.npy", x)
    cfg = {
        "data": {"path": str(tmp_path / "x.npy"), "standardize": True},
        "model": {"n_components": [1, 2]},
        "output": {"path": str(tmp_path / "out")},
        "cluster": dict(INPROC_CLUSTER),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    proc = _cli(["run", str(tmp_path / "run.yaml")])
    said = _problems(proc.stderr)
    assert proc.returncode == 1 and len(said) == 1, proc.stderr
    what = "too small" if scale < 1 else "too large"
    assert f"the spread of 3 column(s) is {what} for float64 arithmetic" in said[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_working_folder_on_another_file_system_is_refused_up_front(tmp_path):
    """Publishing renames the staging folder into place: from another file system it would
    fail at the very end (EXDEV). A working folder that is a mount is refused before any pass."""
    import json

    from dgmm.files import write_own

    make_data(tmp_path / "d.zarr", 1000, 2, 2, seed=1, chunk_rows=500)
    out, work = tmp_path / "out", tmp_path / "out.work"
    work.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(work)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        body = json.dumps({"role": "work", "output": str(out)}).encode()
        write_own(work / ".dgmm-owner", "companion", body)  # as if dgmm had made it there
        cfg = {
            "data": {"path": str(tmp_path / "d.zarr"), "array": "X"},
            "model": {"n_components": [2]},
            "output": {"path": str(out)},
            "cluster": dict(INPROC_CLUSTER),
        }
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
        proc = _cli(["run", str(tmp_path / "run.yaml")])
        assert proc.returncode == 2, proc.stderr
        assert "is on another file system than" in _problems(proc.stderr)[-1]
        assert not out.exists()
    finally:
        subprocess.run(["umount", "-l", str(work)], check=False)
