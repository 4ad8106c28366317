"""What several test modules share: the repository root, the quickest cluster config, the
command line in a subprocess, a small run config, and real scheduler and worker processes."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml
import zarr

ROOT = Path(__file__).resolve().parents[1]
# One worker with two threads in the run's own process: the quickest cluster to start.
INPROC_CLUSTER = {
    "type": "local",
    "n_workers": 1,
    "threads_per_worker": 2,
    "processes": False,
    "dashboard_address": None,
}


def dgmm_cli(*args, check=True, **kw):
    proc = subprocess.run(
        [sys.executable, "-m", "dgmm", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_cfg(path: Path, data_path: str, out_path: str, **sections) -> Path:
    """A small run config for the array ``X`` of ``data_path``."""
    cfg = {
        "data": {"path": str(data_path), "array": "X"},
        "model": {"n_components": [1, 2], "max_iter": 10, "n_init": 1},
        "output": {
            "path": str(out_path),
            "overwrite": True,
            "performance_report": False,
            "progress": False,
        },
        "cluster": dict(INPROC_CLUSTER),
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextmanager
def dask_processes(
    d: Path,
    tls: list[str] | None = None,
    security=None,
    workers: int = 2,
    cwd: Path | None = None,
    env: dict | None = None,
) -> Iterator[str]:
    """`dask scheduler` and ``workers`` `dask worker`s (with nannies) on 127.0.0.1, started in
    the folder ``cwd`` (default: this process's); yields the scheduler's address."""
    from distributed import Client

    sched_file = d / "scheduler.json"
    tls_args = ["--protocol", "tls", *tls] if tls else []
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0"),
                *("--no-dashboard", "--scheduler-file", str(sched_file), *tls_args),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
        )
    ]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        for i in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "dask", "worker"),
                        *("--scheduler-file", str(sched_file), "--host", "127.0.0.1"),
                        *("--nthreads", "1", "--memory-limit", "1GiB", "--no-dashboard"),
                        *("--name", f"w{i}", "--preload", "dgmm.worker", *(tls or [])),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=cwd,
                    env=env,
                )
            )
        with Client(scheduler_file=str(sched_file), timeout=30, security=security) as client:
            if workers:
                client.wait_for_workers(workers, timeout=60)
            yield client.scheduler.address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def corrupt_chunk_store(path: Path, x: np.ndarray, chunk_rows: int) -> Path:
    """A Zarr array of ``x`` in chunks of ``chunk_rows`` rows whose second chunk is no longer
    a zstd frame (reading rows ``chunk_rows`` to ``2 * chunk_rows - 1`` fails)."""
    arr = zarr.create_array(
        str(path), shape=x.shape, chunks=(chunk_rows, x.shape[1]), dtype=x.dtype
    )
    arr[...] = x
    (path / "c" / "1" / "0").write_bytes(b"\x00not a zstd frame" * 8)
    return path


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of ``language`` in a Markdown text, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def claim(comment: str):
    """The literal a comment starts with (``# 4: the rest`` → 4), or None."""
    text = comment.lstrip("#").strip()
    for candidate in (text, text.split(":", 1)[0], text.split(" ", 1)[0]):
        try:
            return ast.literal_eval(candidate)
        except (ValueError, SyntaxError):
            continue
    return None


def run_checking_claims(source: str, namespace: dict, where: str = "README") -> int:
    """Execute ``source`` statement by statement; every expression statement whose line ends in
    a comment starting with a literal is a claim it must equal. Returns the claims checked."""
    lines = source.splitlines()
    checked = 0
    for node in ast.parse(source).body:
        code = ast.get_source_segment(source, node)
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), where, "eval"), namespace)
            tail = lines[node.end_lineno - 1]
            if "#" in tail:
                expected = claim(tail[tail.index("#") :])
                if expected is not None:
                    assert value == expected, f"{where}: {code!r} gives {value!r}, not {expected!r}"
                    checked += 1
        else:
            exec(compile(ast.Module([node], []), where, "exec"), namespace)
    return checked


def write_example_data() -> None:
    """The files the README's and the docs' examples name, in the working folder: 3000 rows of
    8 clusters in 3 columns as ``data.zarr`` and as ``data.parquet`` (columns a, b, c)."""
    import pandas as pd
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(3000, 3, centers=8, random_state=0)
    store = zarr.create_array("data.zarr", shape=x.shape, chunks=(500, 3), dtype="f8")
    store[...] = x
    pd.DataFrame(x, columns=["a", "b", "c"]).to_parquet("data.parquet")


@contextmanager
def small_default_samples(min_rows: int = 200) -> Iterator[None]:
    """dgmm's default sample sizes scaled down to small test data: 20 rows per free parameter
    of a cell, at least ``min_rows`` (for 2 features, full K = 1..5: 200 to 580 rows)."""
    import pytest

    import dgmm.sampling

    with pytest.MonkeyPatch.context() as m:
        m.setattr(dgmm.sampling, "MIN_SAMPLE_ROWS", min_rows)
        yield
