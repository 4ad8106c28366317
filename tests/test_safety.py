"""Guarantees of every command, each checked over many generated variants.

* No command writes to, replaces or deletes a path that overlaps one of its inputs.
* A checkpoint resumes only on the same config and the same data.
* Every wait for a scheduler is bounded by the configured timeout.
* One output has one writer; every socket listens on loopback; every failure is one line.

The commands run in this process through ``pipelines.cli.main`` (the same code as the
``dgmm`` executable without the interpreter start) except where a separate process is the point.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import psutil
import pytest
import yaml
import zarr

from pipelines.cli import main
from pipelines.data import make_data
from pipelines.paths import claim, lock_path

from .conftest import run_output
from .helpers import ROOT, dask_processes, write_cfg

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def cli(capsys, *args) -> tuple[int, str, str]:
    """``dgmm ARGS`` in this process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def tree(path: Path) -> dict[str, str]:
    """Every file below ``path`` (links not followed) with the hash of its bytes."""
    out = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_one_line_error(status: int, err: str, expected_status: int) -> str:
    assert status == expected_status, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("dgmm: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def mixture(tmp_path_factory) -> Path:
    """A small make-data group (X and labels), copied by the tests that change files."""
    p = tmp_path_factory.mktemp("mixture") / "d.zarr"
    make_data(p, 600, 2, 3, seed=1, chunk_rows=200)
    return p


# --------------------------------------------------------------------- outputs vs inputs
def _run_layouts() -> list[tuple[str, dict, bool]]:
    """(name, paths relative to the test folder, overlaps?) for `dgmm run`.

    ``data`` is a Zarr group holding ``X``; ``link`` is a symbolic link to the data folder's
    parent; ``conf`` the config file. Each layout says by construction whether it overlaps.
    """
    layouts = [
        ("output is the data group", {"out": "in/d.zarr"}, True),
        ("output is the array", {"out": "in/d.zarr/X"}, True),
        ("output inside the array", {"out": "in/d.zarr/X/o"}, True),
        ("output inside the group", {"out": "in/d.zarr/labels2"}, True),
        ("output contains the data", {"out": "in"}, True),
        ("output via a link", {"out": "link/d.zarr"}, True),
        ("output inside via a link", {"out": "link/d.zarr/o"}, True),
        ("output via dot-dot", {"out": "in/d.zarr/../d.zarr"}, True),
        ("output is the config", {"out": "conf/run.yaml"}, True),
        ("output contains the config", {"out": "conf"}, True),
        ("work folder is the data", {"out": "in/d", "data": "in/d.work"}, True),
        ("lock file is the data", {"out": "in/x", "data": "in/.x.lock"}, True),
        ("sibling of the data", {"out": "in/o"}, False),
        ("elsewhere", {"out": "results/o"}, False),
        ("nested new folders", {"out": "results/a/b/c"}, False),
        ("sibling via a link", {"out": "link/o2"}, False),
        ("prefix of the data's name", {"out": "in/d.za"}, False),
    ]
    return layouts


@pytest.mark.parametrize(("name", "paths", "overlaps"), _run_layouts())
def test_run_never_writes_over_its_inputs(
    name, paths, overlaps, mixture, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    data = paths.get("data", "in/d.zarr")
    Path(data).parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(mixture, data)
    (tmp_path / "link").symlink_to(tmp_path / "in")
    cfg = write_cfg(tmp_path / "conf" / "run.yaml", data, paths["out"])
    before = tree(tmp_path)
    for command in ("validate", "run") if overlaps else ("validate",):
        status, _, err = cli(capsys, command, cfg)
        if overlaps:
            line = assert_one_line_error(status, err, 2)
            assert "never writes over its own input" in line
        else:
            assert status == 0, err
        assert tree(tmp_path) == before  # nothing created (not even a lock), nothing changed


@pytest.mark.parametrize(
    ("out", "overlaps"),
    [
        ("model", True),
        ("model/o", True),
        ("d.zarr", True),
        ("d.zarr/X", True),
        ("d.zarr/new", True),  # a sibling of the array inside the input's group
        (".", True),
        ("o", False),
    ],
)
def test_predict_never_writes_over_its_inputs(
    out, overlaps, mixture, tmp_path, capsys, monkeypatch
):
    import dgmm

    monkeypatch.chdir(tmp_path)
    shutil.copytree(mixture, "d.zarr")
    gm = dgmm.GaussianMixture(2, random_state=0).fit(zarr.open_array("d.zarr/X")[:])
    gm.save("model")
    before = tree(tmp_path)
    status, _, err = cli(capsys, "predict", "model", "d.zarr/X", out, "--overwrite")
    if overlaps:
        assert_one_line_error(status, err, 2)
        assert tree(tmp_path) == before
    else:
        assert status == 0, err
        assert zarr.open_group(out).attrs["complete"] is True
        assert {k: v for k, v in tree(tmp_path).items() if not k.startswith(out)} == before


@pytest.mark.parametrize(
    ("target", "why"),
    [
        (".", "does not name a folder"),
        ("..", "does not name a folder"),
        ("sub/..", "does not name a folder"),
        ("{cwd}", "working directory"),
        ("{parent}", "working directory"),
        ("notes", "not a dgmm make-data output"),
        ("file.txt", "is not a folder"),
        ("run-output", "not a dgmm make-data output"),
    ],
)
def test_make_data_replaces_only_its_own_output(
    target, why, tmp_path, capsys, mixture, monkeypatch
):
    """--overwrite replaces earlier make-data output and nothing else."""
    work = tmp_path / "w"
    (work / "notes").mkdir(parents=True)
    (work / "notes" / "n.txt").write_text("keep me")
    (work / "file.txt").write_text("keep me too")
    zarr.open_group(str(work / "run-output"), mode="w").attrs.update({"something": 1})
    monkeypatch.chdir(work)
    target = target.format(cwd=work, parent=tmp_path)
    before = tree(tmp_path)
    args = ("make-data", target, "--n-samples", 50, "--n-features", 2, "--n-components", 2)
    status, _, err = cli(capsys, *args, "--overwrite")
    assert why in assert_one_line_error(status, err, 2)
    assert tree(tmp_path) == before
    # an earlier make-data output is replaced, and only with --overwrite
    shutil.copytree(mixture, work / "old.zarr")
    status, _, err = cli(capsys, "make-data", "old.zarr", *args[2:])
    assert "already exists" in assert_one_line_error(status, err, 2)
    assert cli(capsys, "make-data", "old.zarr", *args[2:], "--overwrite")[0] == 0
    assert zarr.open_array(str(work / "old.zarr" / "X")).shape == (50, 2)


@pytest.mark.parametrize(
    ("flag", "value"), [("--n-samples", 0), ("--n-samples", -3), ("--chunk-rows", 0)]
)
def test_make_data_bad_sizes_leave_nothing(flag, value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = {"--n-samples": 100, "--n-features": 2, "--n-components": 2, "--chunk-rows": 10}
    args[flag] = value
    flat = [str(a) for kv in args.items() for a in kv]
    status, _, err = cli(capsys, "make-data", "x.zarr", *flat)
    assert flag in assert_one_line_error(status, err, 2)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- checkpoints and data
class _Stop(Exception):
    pass


def _interrupted_run(cfg_path: Path, passes: int = 2) -> None:
    """Leave the checkpoint of a run of ``cfg_path`` stopped after ``passes`` EM passes."""
    from pipelines.data import open_data
    from pipelines.outputs import RunDirs
    from pipelines.paths import claim_companion
    from pipelines.run import select_model
    from pipelines.schema import load_config

    cfg = load_config(cfg_path)
    seen = []

    def stop(report):
        seen.append(report.phase)
        if seen.count("em") >= passes:
            raise _Stop

    dirs = RunDirs(cfg.output.path)
    claim_companion(dirs.work, cfg.output.path, "work", fresh=False)  # as a run does
    checkpoint = dirs.checkpoint
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pipelines.run._Progress.__call__", lambda self, report: stop(report))
        with pytest.raises(_Stop):
            select_model(cfg, open_data(cfg.data).x, checkpoint)
    assert checkpoint.exists()


def _rewrite(store: Path, x: np.ndarray, chunks=(200, 2)) -> None:
    shutil.rmtree(store / "X")
    arr = zarr.open_group(str(store)).create_array("X", shape=x.shape, chunks=chunks, dtype=x.dtype)
    arr[...] = x


def _same(store: Path, x: np.ndarray) -> None:
    _rewrite(store, x)


def _one_value(store: Path, x: np.ndarray) -> None:
    x = x.copy()
    x[555, 1] += 1e-9
    _rewrite(store, x)


def _regenerated(store: Path, x: np.ndarray) -> None:
    make_data(store, 600, 2, 3, seed=7, chunk_rows=200, overwrite=True)


def _appended(store: Path, x: np.ndarray) -> None:
    _rewrite(store, np.vstack([x, x[:10]]))


def _rechunked(store: Path, x: np.ndarray) -> None:
    _rewrite(store, x, chunks=(150, 2))


def _as_float32(store: Path, x: np.ndarray) -> None:
    _rewrite(store, x.astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "same"),
    [
        (_same, True),
        (_one_value, False),
        (_regenerated, False),
        (_appended, False),
        (_rechunked, False),
        (_as_float32, False),
    ],
)
def test_checkpoint_resumes_only_on_the_same_data(
    change, same, mixture, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(mixture, "d.zarr")
    model = {"n_components": [1, 2, 3], "covariance_types": ["full", "diag"], "max_iter": 30}
    cfg = write_cfg(tmp_path / "run.yaml", "d.zarr", "out", model=model)
    _interrupted_run(cfg)
    change(tmp_path / "d.zarr", zarr.open_array("d.zarr/X")[:].astype(np.float64))

    status, _, err = cli(capsys, "run", cfg)
    assert status == 0, err
    log = (tmp_path / "out" / "run.log").read_text()
    assert ("resuming from checkpoint" in log) is same
    assert ("dgmm: resumed from the checkpoint after" in err) is same, err  # said on stderr
    assert ("the data changed" in err) is (not same), err
    if change in (_one_value, _regenerated):  # the result is a fresh run's on the new data
        ref = write_cfg(tmp_path / "ref.yaml", "d.zarr", "ref", model=model)
        assert cli(capsys, "run", ref)[0] == 0
        a, b = run_output("out"), run_output("ref")
        np.testing.assert_array_equal(a["labels"][:], b["labels"][:])
        ra, rb = (json.loads(Path(p, "report.json").read_text()) for p in ("out", "ref"))
        assert ra["selected"]["log_likelihood"] == rb["selected"]["log_likelihood"]


# --------------------------------------------------------------------------- bounded waits
def _peer(kind: str) -> tuple[str, threading.Event]:
    """A TCP peer on 127.0.0.1 that misbehaves as ``kind`` says; returns (address, stop)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()
    if kind == "closed port":
        srv.close()
        return f"tcp://127.0.0.1:{port}", stop
    srv.listen(8)
    srv.settimeout(0.2)
    held = []

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            if kind == "accepts, never answers":
                held.append(conn)
            elif kind == "accepts, then closes":
                conn.close()
            elif kind == "answers garbage":
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + os.urandom(64))
                held.append(conn)
            elif kind == "answers very slowly":
                held.append(conn)
                conn.sendall(b"\x00")
        for c in held:
            c.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"tcp://127.0.0.1:{port}", stop


@pytest.mark.parametrize(
    "kind",
    [
        "closed port",
        "accepts, never answers",
        "accepts, then closes",
        "answers garbage",
        "answers very slowly",
    ],
)
def test_waiting_for_a_scheduler_is_bounded(kind, tmp_path, capsys, mixture, monkeypatch):
    monkeypatch.chdir(tmp_path)
    address, stop = _peer(kind)
    timeout = 2
    cfg = write_cfg(tmp_path / "run.yaml", str(mixture), "out")
    data = yaml.safe_load(cfg.read_text())
    data["cluster"] = {"type": "address", "address": address, "timeout": timeout}
    cfg.write_text(yaml.safe_dump(data))
    t0 = time.monotonic()
    try:
        status, _, err = cli(capsys, "run", cfg)
    finally:
        stop.set()
    elapsed = time.monotonic() - t0
    line = assert_one_line_error(status, err, 2)
    assert "cannot reach the Dask scheduler" in line and f"within {timeout} s" in line
    assert elapsed < timeout + 10
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_scheduler_without_workers_is_a_bounded_wait(tmp_path, capsys, mixture, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with dask_processes(tmp_path, workers=0) as address:
        cfg = write_cfg(tmp_path / "run.yaml", str(mixture), "out")
        data = yaml.safe_load(cfg.read_text())
        data["cluster"] = {"type": "address", "address": address, "timeout": 3}
        cfg.write_text(yaml.safe_dump(data))
        t0 = time.monotonic()
        status, _, err = cli(capsys, "run", cfg)
        elapsed = time.monotonic() - t0
    line = assert_one_line_error(status, err, 2)
    assert "no Dask worker joined" in line and "within 3 s" in line
    assert 3 <= elapsed < 20


# ----------------------------------------------------------------------- one writer
@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_dead_one_does_not_block(
    tmp_path, capsys, mixture, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cfg = write_cfg(tmp_path / "run.yaml", str(mixture), "out")
    with claim(tmp_path / "out"):
        status, _, err = cli(capsys, "run", cfg)
        line = assert_one_line_error(status, err, 2)
        assert "being written by another dgmm command" in line
        assert not (tmp_path / "out.work").exists()
    # a holder killed without cleaning up: the operating system releases its lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pipelines.paths import claim\n"
            "with claim(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert lock_path(tmp_path / "out").exists()  # left behind by the killed holder
    status, _, err = cli(capsys, "run", cfg)
    assert status == 0, err
    assert not lock_path(tmp_path / "out").exists()


@pytest.mark.long
@pytest.mark.slow
def test_two_runs_of_one_config_at_once(tmp_path, mixture):
    """The second of two concurrent runs refuses in one line; the first completes."""
    cfg = write_cfg(tmp_path / "run.yaml", str(mixture), str(tmp_path / "out"))
    data = yaml.safe_load(cfg.read_text())
    data["model"].update({"n_components": [1, 2, 3, 4], "tol": 0, "max_iter": 60})
    cfg.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-m", "dgmm", "run", str(cfg)]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not lock_path(tmp_path / "out").exists() and time.time() < deadline:
        time.sleep(0.01)
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    line = assert_one_line_error(second.returncode, second.stderr, 2)
    assert "being written by another dgmm command" in line
    assert run_output(tmp_path / "out").attrs["complete"] is True


# ----------------------------------------------------------------------- sockets
def _listening(pid: int) -> list[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sorted(
        {
            c.laddr.ip
            for p in procs
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("processes", [False, True])
@pytest.mark.parametrize("dashboard", [None, ":0", "127.0.0.1:0"])
def test_every_listening_socket_is_on_loopback(processes, dashboard):
    from pipelines.cluster import connect
    from pipelines.schema import LocalClusterConfig

    before = set(_listening(os.getpid()))
    cfg = LocalClusterConfig(
        # an in-process worker shares the test process's memory: no limit it could reach
        n_workers=1,
        processes=processes,
        dashboard_address=dashboard,
        memory_limit=None,
    )
    with connect(cfg) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        ips = set(_listening(os.getpid())) - before
        assert ips, "the cluster listens somewhere"
        assert all(ip.startswith("127.") or ip == "::1" for ip in ips), ips


# ------------------------------------------------------------------------ Ctrl-C
@pytest.mark.long
@pytest.mark.slow
def test_ctrl_c_shows_one_line(tmp_path):
    """SIGINT to the whole process group (what a terminal sends) ends with one line only."""
    data = tmp_path / "d.zarr"
    make_data(data, 100_000, 4, 5, seed=3, chunk_rows=10_000, separation=2.0)
    cfg = write_cfg(tmp_path / "run.yaml", str(data), str(tmp_path / "out"))
    raw = yaml.safe_load(cfg.read_text())
    raw["model"].update({"n_components": [3, 5, 7], "tol": 0, "max_iter": 500})
    raw["cluster"] = {"n_workers": 2, "processes": True, "dashboard_address": None}
    cfg.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgmm", "run", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    ckpt = tmp_path / "out.work" / "checkpoint.npz"
    deadline = time.time() + 180
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["dgmm: interrupted; rerun the same command to resume"], err
    assert ckpt.exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------- random configs, one guarantee
_POOLS = {
    ("model", "n_components"): [
        [2],
        [1, 3],
        {"start": 1, "stop": 3},
        0,
        -1,
        "x",
        True,
        [],
        [2, 2],
        {"start": 1, "stop": 10**9},
        {"start": 1, "stop": 3, "step": 0},
        {"stop": 4},
        1.5,
        [600],
        [601],
    ],
    ("model", "covariance_types"): [
        ["full"],
        ["diag", "spherical"],
        ["tied"],
        ["bogus"],
        [],
        "full",
    ],
    ("model", "n_init"): [1, 2, 0, -1, "a", 1.5, None],
    ("model", "max_iter"): [5, 0, -1, 1.5, "ten", 10**6],
    ("model", "tol"): [1e-3, 0, -1, float("inf"), float("nan"), "small"],
    ("model", "reg_covar"): [1e-6, 0, -1, float("inf"), 1e300],
    ("model", "init"): ["k-means++", "random", "random_from_data", "kmeans", "nope", 3],
    ("model", "random_state"): [0, 7, -1, 2**32, 2**32 - 1, "seed", 1.5],
    ("model", "retry"): [None, {"factor": 10}, {"factor": 1}, {"factor": float("inf")}, {"x": 1}],
    ("selection", "criterion"): ["bic", "aic", "icl?", 1],
    ("output", "probabilities"): [True, False, "yes please"],
    ("output", "path"): ["OUT", "OUT", "OUT", ".", "", "DATA", "DATA/X", "FILE", "FILE/o", "CONF"],
    ("data", "array"): ["X", "X", "labels", "nope", None],
    ("data", "chunk_rows"): [None, 100, 0, -5, "many"],
    # in-process workers: a limit the test process could reach would pause them
    ("cluster", "memory_limit"): [None, "16GiB", "lots", 0.75, -1, "1 KB"],
    ("cluster", "n_workers"): [1, 0, "two"],
    ("dask", "distributed.comm.timeouts.connect"): ["5s", "5 sex", 3],
    ("dask", "no.such.key"): [1],
}


def _random_config(rng: random.Random, tmp: Path) -> dict:
    """A good config with a few fields (often the output path) set from the pools."""
    cfg = yaml.safe_load(write_cfg(tmp / "base.yaml", "DATA", "OUT").read_text())
    fields = [f for f in _POOLS if f != ("output", "path")]
    chosen = rng.sample(fields, rng.choice([0, 1, 1, 2, 3]))
    if rng.random() < 0.5:
        chosen.append(("output", "path"))
    for section, key in chosen:
        value = rng.choice(_POOLS[(section, key)])
        cfg.setdefault(section, {})
        if value is None:
            cfg[section].pop(key, None)
        else:
            cfg[section][key] = value
    if rng.random() < 0.05:
        cfg["modle"] = {}
    subs = {"OUT": tmp / "out", "DATA": tmp / "d.zarr", "FILE": tmp / "f.txt"}
    subs["CONF"] = tmp / "run.yaml"
    p = cfg["output"]["path"]
    for k, v in subs.items():
        p = p.replace(k, str(v))
    cfg["output"]["path"] = p
    cfg["data"]["path"] = str(subs["DATA"])
    return cfg


@pytest.fixture(scope="module")
def earlier_output(tmp_path_factory, mixture) -> Path:
    """A complete output of a good run, copied to where each random run writes."""
    d = tmp_path_factory.mktemp("earlier")
    cfg = write_cfg(d / "good.yaml", str(mixture), str(d / "out"))
    assert main(["run", str(cfg)]) == 0
    return d / "out"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(45))
def test_random_configs_end_in_success_or_one_line(
    seed, tmp_path, capsys, mixture, earlier_output, monkeypatch
):
    """Whatever the values: exit 0, or exit 1/2 with one line and no traceback; the data and
    the earlier output keep every byte unless a run succeeded in replacing that output."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(mixture, tmp_path / "d.zarr")
    (tmp_path / "f.txt").write_text("a file")
    shutil.copytree(earlier_output, tmp_path / "out")
    cfg = _random_config(random.Random(seed), tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    before_data, before_out = tree(tmp_path / "d.zarr"), tree(tmp_path / "out")

    status, _, err = cli(capsys, "run", tmp_path / "run.yaml")

    assert status in (0, 1, 2), err
    assert "Traceback" not in err
    if status:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith("dgmm: error: "), err
        if status == 2:
            assert len(lines) == 1, err
    assert tree(tmp_path / "d.zarr") == before_data
    if status or cfg["output"]["path"] != str(tmp_path / "out"):
        assert tree(tmp_path / "out") == before_out
    else:
        assert run_output(tmp_path / "out").attrs["complete"] is True
    assert (tmp_path / "f.txt").read_text() == "a file"
    assert not list(tmp_path.glob(".*.lock"))


# ----------------------------------------------------------------- odd dtypes, big stats
@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", ">f8", "int16", "uint8", "bool"])
def test_odd_dtypes_run_to_the_end(dtype, tmp_path, capsys, monkeypatch):
    """Data of any numeric dtype is cast as it is read: the run, plots included, completes."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))])
    x = (x > 3) ^ (rng.random(x.shape) < 0.1) if dtype == "bool" else (x * 10).astype(dtype)
    g = zarr.open_group("d.zarr", mode="w")
    g.create_array("X", shape=x.shape, chunks=(100, 2), dtype=x.dtype)[...] = x
    cfg = write_cfg(tmp_path / "run.yaml", "d.zarr", "out", model={"n_components": [1, 2]})
    status, _, err = cli(capsys, "run", cfg)
    assert status == 0, err
    out = run_output("out")
    assert out.attrs["complete"] is True
    assert (tmp_path / "out" / "clusters.png").stat().st_size > 0
    assert out["labels"][:].min() >= 0


def test_statistics_too_large_for_a_worker_are_refused_before_start(tmp_path, capsys):
    """D=1024, full covariance, K=16: one candidate's statistics (128 MiB, held four times while
    combined at the smallest fan-in) cannot fit a 1 GiB worker even alone in a pass."""
    rng = np.random.default_rng(0)
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    g.create_array("X", shape=(64, 1024), chunks=(32, 1024), dtype="f8")[...] = rng.normal(
        size=(64, 1024)
    )
    cfg = write_cfg(
        tmp_path / "run.yaml",
        tmp_path / "d.zarr",
        tmp_path / "out",
        model={"n_components": [2, 16]},
        cluster={"memory_limit": "1GiB"},
    )
    t0 = time.monotonic()
    status, _, err = cli(capsys, "run", cfg)
    line = assert_one_line_error(status, err, 2)
    need = (16 * 1024 * 1024 + 16 * 1024 + 16 + 2) * 8  # K·D² + K·D + K + 2 floats
    assert f"one full K=16 candidate at 1024 features ({need / 2**20:.0f} MiB" in line, line
    assert "1024 MiB a worker may use" in line and "raise cluster.memory_limit" in line
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "out.work").exists()


@pytest.mark.long
@pytest.mark.slow
def test_a_sweep_larger_than_a_worker_runs_in_batches(tmp_path):
    """D=256, full, K=1..16 x 2 restarts: 143 MB of statistics per block, ~1.3 GB held by a
    combine of fan-in 8, on 1 GiB workers. The passes are split so that none is restarted."""
    from distributed import Client, LocalCluster

    import dgmm
    from dgmm.memory import plan_for

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 256)) + np.repeat(rng.normal(scale=4, size=(4, 256)), 250, 0)
    cands = [("full", k) for k in range(1, 17)] * 2
    plan = plan_for(cands, 256, 250, 8, 2**30)
    assert len(plan.batches) == 2 and plan.task_bytes < 0.8 * 2**30
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="1GiB",
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        x = da.from_array(X, chunks=(250, 256))
        found = dgmm.select(
            x,
            range(1, 17),
            "full",
            n_init=2,
            max_iter=1,
            tol=0,
            init_params="random_from_data",
            random_state=0,
            screen_degenerate=False,  # one iteration from single rows: all would be NA
        )
        assert client.run(os.getpid) == pids  # no worker was restarted
    # init, one EM iteration and scoring, each as two passes
    assert found.n_passes_ == 3 * 2
    assert all(r["error"] is None for r in found.results)


@pytest.mark.slow
def test_paused_workers_fail_the_run_in_bounded_time(tmp_path, capsys, mixture, monkeypatch):
    """Workers paused for memory make no progress: one line within the stall timeout, naming
    the memory limit and the setting; the earlier output is untouched and a rerun completes."""
    monkeypatch.chdir(tmp_path)
    cfg = write_cfg(tmp_path / "run.yaml", str(mixture), "out")
    raw = yaml.safe_load(cfg.read_text())
    raw["cluster"]["memory_limit"] = "1GiB"
    raw["dask"] = {"distributed.worker.memory.pause": 0.01, "dgmm.stall-timeout": "3s"}
    cfg.write_text(yaml.safe_dump(raw))
    t0 = time.monotonic()
    status, _, err = cli(capsys, "run", cfg)
    elapsed = time.monotonic() - t0
    assert status == 1 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]  # Dask's own warning that it paused may come before
    assert line.startswith("dgmm: error: StalledError: ") and "rerun to resume" in line, err
    assert "made no progress for 3 s: every worker is paused for memory" in line, line
    assert "memory limit 1024 MiB" in line and "dgmm.stall-timeout" in line
    assert elapsed < 3 + 30
    assert not (tmp_path / "out").exists()
    del raw["dask"]
    raw["cluster"]["memory_limit"] = None  # the worker shares this process's memory
    cfg.write_text(yaml.safe_dump(raw))
    status, _, err = cli(capsys, "run", cfg)
    assert status == 0, err


def test_a_sample_too_large_for_a_worker_is_refused_before_start(tmp_path, capsys):
    """model.sample_size beyond what a 512 MiB worker can gather (the sampling pass's last
    combine holds the sample twice) is refused by name before anything starts; the largest
    size that fits is accepted by `dgmm validate`, which prints it."""
    from dgmm.memory import max_sample_rows

    rng = np.random.default_rng(0)
    n, d = 2500, 4096
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    g.create_array("X", shape=(n, d), chunks=(250, d), dtype="f8")[...] = rng.normal(size=(n, d))
    cap = max_sample_rows(512 * 2**20, d, 250, np.dtype("f8"), False)
    assert cap < n
    for size, ok in ((n, False), (cap + 1, False), (cap, True)):
        cfg = write_cfg(
            tmp_path / "run.yaml",
            tmp_path / "d.zarr",
            tmp_path / "out",
            model={"n_components": [2], "covariance_types": ["diag"], "sample_size": size},
            cluster={"memory_limit": "512MiB"},
        )
        status, out, err = cli(capsys, "validate", cfg)
        if ok:
            assert status == 0, err
            assert f"a sample of at most {cap} rows fits a worker" in out, out
            continue
        line = assert_one_line_error(status, err, 2)
        assert f"model.sample_size: {size} rows of {d} features do not fit" in line, line
        assert f"model.sample_size <= {cap}" in line and "cluster.memory_limit" in line, line
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()
