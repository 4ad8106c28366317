"""Bad input through `dgmm run`, one table: the exact message, a non-zero exit, outputs untouched.

Every case starts from a real, complete output of an earlier run at the configured output path
(and ``overwrite: true``, except where the case is the refusal to overwrite): a failed run must
leave every byte of it as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from pipelines.cli import main

from .conftest import run_output
from .helpers import INPROC_CLUSTER, corrupt_chunk_store, dgmm_cli

# real processes, command-line runs or whole pipelines: deselect with -m 'not slow'
pytestmark = pytest.mark.slow

ROWS, COLS, CHUNK = 600, 4, 200


def _good() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = np.repeat([[0, 0, 0, 0], [8, 8, 0, 0], [0, 8, 8, 8]], ROWS // 3, axis=0)
    return centres + rng.normal(size=(ROWS, COLS))


def _store(path: Path, x: np.ndarray, chunks=None, **kw) -> Path:
    kw.setdefault("dtype", x.dtype)
    arr = zarr.create_array(str(path), shape=x.shape, chunks=chunks or (CHUNK, *x.shape[1:]), **kw)
    arr[...] = x
    return path


def _with(row: int, col: int, value: float) -> np.ndarray:
    x = _good()
    x[row, col] = value
    return x


def _data(make: Callable[[Path], Path]) -> Callable[[Path, dict], None]:
    """A case whose data store is made by ``make(path)``; the config points at it."""

    def setup(tmp: Path, cfg: dict) -> None:
        cfg["data"] = {"path": str(make(tmp / "bad.zarr"))}

    return setup


def _const_column(p: Path) -> Path:
    x = _good()
    x[:, 2] = 5.0
    return _store(p, x)


def _const_named_column(tmp: Path, cfg: dict) -> None:
    """A Parquet table with a constant column: named by its name."""
    import pandas as pd

    x = _good()
    x[:, 1] = -2.5
    frame = pd.DataFrame(x, columns=[f"feature {j}" for j in range(x.shape[1])])
    frame.to_parquet(tmp / "bad.parquet")
    cfg["data"] = {"path": str(tmp / "bad.parquet")}


def _corrupt_chunk(p: Path) -> Path:
    return corrupt_chunk_store(p, _good(), CHUNK)


def _not_zarr(p: Path) -> Path:
    p.mkdir()
    (p / "rows.csv").write_text("1,2\n3,4\n")
    return p


def _model(**model) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, cfg: dict) -> None:
        cfg["model"].update(model)

    return setup


def _raw_yaml(text: str) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, cfg: dict) -> None:
        cfg["__raw__"] = text.replace("TMP", str(tmp))

    return setup


def _no_overwrite(tmp: Path, cfg: dict) -> None:
    cfg["output"]["overwrite"] = False


def _output(make: Callable[[Path, dict], str]) -> Callable[[Path, dict], None]:
    """A case whose output path is ``make(tmp, cfg)`` (overwrite stays on)."""

    def setup(tmp: Path, cfg: dict) -> None:
        cfg["output"]["path"] = make(tmp, cfg)

    return setup


def _a_file(tmp: Path, cfg: dict) -> str:
    (tmp / "notes.txt").write_text("not an output")
    return str(tmp / "notes.txt")


def _a_folder(tmp: Path, cfg: dict) -> str:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("years of work")
    return str(tmp / "mine")


def _section(name: str, **values) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, cfg: dict) -> None:
        cfg.setdefault(name, {}).update(values)

    return setup


def _not_utf8(tmp: Path, cfg: dict) -> None:
    cfg["__raw__"] = b"data: {path: \xff\xfe}\n".decode("latin-1")
    cfg["__encoding__"] = "latin-1"


@dataclass
class Case:
    id: str
    setup: Callable[[Path, dict], None]
    exit: int
    message: str  # the whole last line of stderr; {data}, {out}, {config} are filled in


BAD = "{data}"
LOG = "(details in {out}.work/run.log)"
RESHAPE = (
    "Reshape your data either using array.reshape(-1, 1) if your data has a single feature or "
    "array.reshape(1, -1) if it contains a single sample."
)
CASES = [
    # -- data
    Case(
        "nan",
        _data(lambda p: _store(p, _with(123, 1, np.nan))),
        1,
        f"Input data '{BAD}' contains NaN: 1 row(s) with NaN or infinite values among rows 0 to "
        f"599, the first at row 123. Remove or impute those rows before fitting. {LOG}",
    ),
    Case(
        "inf",
        _data(lambda p: _store(p, _with(5, 0, -np.inf))),
        1,
        f"Input data '{BAD}' contains infinity or a value too large for dtype('float64'): 1 "
        "row(s) with NaN or infinite values among rows 0 to 599, the first at row 5. Remove or "
        f"impute those rows before fitting. {LOG}",
    ),
    Case(
        "1-D",
        _data(lambda p: _store(p, _good()[:, 0])),
        2,
        f"data: Expected 2D array, got 1D array instead (shape=(600,)). {RESHAPE}",
    ),
    Case(
        "3-D",
        _data(lambda p: _store(p, _good().reshape(ROWS, 2, 2))),
        2,
        f"data: Expected 2D array, got 3D array instead (shape=(600, 2, 2)). {RESHAPE}",
    ),
    Case(
        "string dtype",
        _data(lambda p: _store(p, _good().astype(str), dtype=str)),
        2,
        "data: Input data has a non-numeric dtype (StringDType()); expected an array of numbers.",
    ),
    Case(
        "empty",
        _data(lambda p: _store(p, _good()[:0])),
        2,
        "data: Found array with 0 sample(s) (shape=(0, 4)) while a minimum of 1 is required.",
    ),
    Case(
        "fewer rows than K",
        _data(lambda p: _store(p, _good()[:2])),
        2,
        "model.n_components: K = 3 exceeds the 2 rows of the data; use K <= the number of rows",
    ),
    Case(
        "all rows identical",
        _data(lambda p: _store(p, np.tile(_good()[:1], (ROWS, 1)))),
        1,
        f"Input data '{BAD}': all 600 rows are identical (every column is constant); there is "
        f"nothing to cluster. {LOG}",
    ),
    Case(
        "constant column",
        _data(_const_column),
        1,
        f"Input data '{BAD}' has 1 constant column(s): 2 (always 5) (0-based). A constant column "
        f"carries no information and makes every covariance singular; drop it from the data. "
        f"{LOG}",
    ),
    Case(
        "constant named column",
        _const_named_column,
        1,
        "Input data '{data}' has 1 constant column(s): 'feature 1' (always -2.5). A constant "
        "column carries no information and makes every covariance singular; drop it from the "
        f"data. {LOG}",
    ),
    Case(
        "missing path",
        _data(lambda p: p.with_name("nowhere.zarr")),
        2,
        "data path '{data}' does not exist",
    ),
    Case(
        "not a Zarr array",
        _data(_not_zarr),
        2,
        "data: '{data}' is not a Zarr array: the folder holds no Zarr metadata (zarr.json, .zarray "
        "or .zgroup).",
    ),
    Case(
        "chunks split columns",
        _data(lambda p: _store(p, _good(), chunks=(CHUNK, 2))),
        2,
        "data: the chunks of '{data}' (200, 2) split its 4 columns; every pass reads whole rows, "
        "so store it with chunks spanning all columns, e.g. (200, 4)",
    ),
    Case(
        "corrupt chunk",
        _data(_corrupt_chunk),
        1,
        "ZarrChunkError: cannot read rows 200 to 399 of the Zarr array '{data}': chunk c/1/0 is "
        "corrupt or unreadable (RuntimeError: Zstd decompression error: invalid input data) "
        "(details in {out}.work/run.log; rerun to resume)",
    ),
    # -- config
    Case(
        "unknown key",
        _model(n_componets=[2]),
        2,
        "invalid config '{config}': model: unknown key 'n_componets'; did you mean 'n_components'?",
    ),
    Case(
        "wrong type",
        _model(max_iter="ten"),
        2,
        "invalid config '{config}': model.max_iter: Input should be a valid integer, unable to "
        "parse string as an integer (got 'ten')",
    ),
    Case(
        "K <= 0",
        _model(n_components=[0, 2]),
        2,
        "invalid config '{config}': model.n_components: every K must be >= 1, got 0",
    ),
    Case(
        "tol < 0",
        _model(tol=-1e-3),
        2,
        "invalid config '{config}': model.tol: Input should be greater than or equal to 0 "
        "(got -0.001)",
    ),
    Case(
        "output exists",
        _no_overwrite,
        2,
        "output '{out}' already exists; set output.overwrite: true (or --set "
        "output.overwrite=true) to replace it, or choose another output.path",
    ),
    # -- outputs that overlap inputs or are not dgmm's
    Case(
        "output is the data",
        _output(lambda tmp, cfg: cfg["data"]["path"]),
        2,
        "output.path '{data}' is data.path '{data}'; a command never writes over its own input: "
        "choose an output path outside every input",
    ),
    Case(
        "output inside the data",
        _output(lambda tmp, cfg: cfg["data"]["path"] + "/labels"),
        2,
        "output.path '{data}/labels' is inside data.path '{data}'; a command never writes over "
        "its own input: choose an output path outside every input",
    ),
    Case(
        "output is a file",
        _output(_a_file),
        2,
        "output path '{tmp}/notes.txt' exists and is not a folder; it is never replaced: remove "
        "it yourself or choose another path",
    ),
    Case(
        "output is someone's folder",
        _output(_a_folder),
        2,
        "output path '{tmp}/mine' exists and is not a dgmm run output; it is never replaced: "
        "choose another path",
    ),
    Case(
        "output is '.'",
        _output(lambda tmp, cfg: "."),
        2,
        # paths are absolute once read: '.' is the working directory
        "output path '{cwd}' is the working directory or one of its parents; give a new folder "
        "inside it, e.g. 'results/run1'",
    ),
    Case(
        "output under a file",
        _output(lambda tmp, cfg: _a_file(tmp, cfg) + "/out"),
        2,
        "output path '{tmp}/notes.txt/out': '{tmp}/notes.txt' is not a folder, so nothing can be "
        "created in it",
    ),
    # -- values checked before any cluster starts
    Case(
        "random_state too large",
        _model(random_state=2**32),
        2,
        "invalid config '{config}': model.random_state: Input should be less than 4294967296 "
        "(got 4294967296)",
    ),
    Case(
        "reg_covar infinite",
        _model(reg_covar=float("inf")),
        2,
        "invalid config '{config}': model.reg_covar: Input should be a finite number (got inf)",
    ),
    Case(
        "K is a boolean",
        _model(n_components=True),
        2,
        "invalid config '{config}': model.n_components: Input should be a valid list (got True)",
    ),
    Case(
        "K range step 0",
        _model(n_components={"start": 1, "stop": 3, "step": 0}),
        2,
        "invalid config '{config}': model.n_components: the range's step must be >= 1, got 0",
    ),
    Case(
        "K range of a billion",
        _model(n_components={"start": 1, "stop": 10**9}),
        2,
        "invalid config '{config}': model.n_components: the range holds 1000000000 values of K; "
        "a sweep takes at most 1000: use a larger step",
    ),
    Case(
        "bad memory_limit",
        _section("cluster", memory_limit="lots"),
        2,
        "invalid config '{config}': cluster.local.memory_limit: 'lots' is not a memory size; use "
        "e.g. '2GiB', '512MiB', a number of bytes, a fraction of the machine's memory (0.25), "
        "'auto', or null (no limit) (got 'lots')",
    ),
    Case(
        "bad Dask time",
        _section("dask", **{"distributed.comm.timeouts.connect": "5 sex"}),
        2,
        "invalid config '{config}': dask: Dask setting 'distributed.comm.timeouts.connect' takes "
        "a time such as '30s', got '5 sex'",
    ),
    Case(
        "unknown Dask key",
        _section("dask", **{"distributed.comm.timeout.connect": "5s"}),
        2,
        "invalid config '{config}': dask: unknown Dask setting 'distributed.comm.timeout.connect'"
        "; did you mean 'distributed.comm.timeouts.connect'?",
    ),
    Case(
        "config not UTF-8",
        _not_utf8,
        2,
        "config file '{config}' is not UTF-8 text (byte 13); save it as UTF-8",
    ),
    Case(
        "invalid YAML",
        _raw_yaml("model: {n_components: [2, 3]\noutput: x\n"),
        2,
        "'{config}' is not valid YAML at line 2: expected ',' or '}', but got '<scalar>'",
    ),
    Case(
        "python tag",
        _raw_yaml("model: !!python/object/apply:os.system ['touch TMP/pwned']\n"),
        2,
        "'{config}' uses the Python tag '!!python/object/apply:os.system' at line 1; the config "
        "is read with a safe loader that builds no Python objects: use plain values, lists and "
        "mappings",
    ),
]


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def previous_output(tmp_path_factory):
    """A complete output of a good run, copied into each case's output path."""
    d = tmp_path_factory.mktemp("good")
    cfg = _config(d, _store(d / "good.zarr", _good()), d / "out")
    (d / "run.yaml").write_text(yaml.safe_dump(cfg))
    dgmm_cli("run", d / "run.yaml")
    assert run_output(d / "out").attrs["complete"] is True
    return d / "out"


def _config(tmp: Path, data: Path, out: Path) -> dict:
    return {
        "data": {"path": str(data)},
        "model": {"n_components": [1, 3], "max_iter": 20},
        "output": {"path": str(out), "overwrite": True, "performance_report": False},
        "cluster": dict(INPROC_CLUSTER),
    }


# These also run as the real executable in a new interpreter; the rest run `pipelines.cli.main`
# in this process (the same code without the interpreter's start, ~4 s a case).
IN_A_SUBPROCESS = {"nan", "unknown key", "output is the data", "config not UTF-8"}


def _run_cli(config: Path, subprocess: bool, capsys) -> tuple[int, str]:
    if subprocess:
        proc = dgmm_cli("run", config, check=False)
        return proc.returncode, proc.stderr
    status = main(["run", str(config)])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, previous_output, capsys):
    out = tmp_path / "out"
    shutil.copytree(previous_output, out)
    before = _tree(out)
    cfg = _config(tmp_path, _store(tmp_path / "good.zarr", _good()), out)
    case.setup(tmp_path, cfg)
    config = tmp_path / "run.yaml"
    encoding = cfg.pop("__encoding__", "utf-8")
    config.write_text(cfg.pop("__raw__", None) or yaml.safe_dump(cfg), encoding=encoding)
    data = Path(cfg["data"]["path"])
    data_before = _tree(data) if data.is_dir() else None

    returncode, stderr = _run_cli(config, case.id in IN_A_SUBPROCESS, capsys)

    expected = "dgmm: error: " + (
        case.message.replace("{data}", str(data))
        .replace("{out}", str(out))
        .replace("{config}", str(config))
        .replace("{tmp}", str(tmp_path))
        .replace("{cwd}", os.getcwd())
    )
    assert returncode == case.exit, stderr
    assert stderr.strip().splitlines()[-1] == expected, stderr
    assert "Traceback" not in stderr.replace("Traceback: ", "")  # the log keeps them
    if case.exit == 2:  # refused before any cluster starts or any data is read: one line only
        assert len(stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out.work").exists()
    else:  # found while reading the data: the traceback is kept in the run's log
        assert "Traceback" in (tmp_path / "out.work" / "run.log").read_text()
    assert _tree(out) == before  # the earlier output: every file, every byte
    if data_before is not None:
        assert _tree(data) == data_before  # and the data
    assert not (tmp_path / "pwned").exists()
    assert not list(tmp_path.glob("out.work/staging"))


def test_absent_chunks_are_the_fill_value_as_zarr_defines(tmp_path, capsys):
    """Zarr stores no chunk equal to the fill value: an array with an all-zero block (or a
    deleted chunk of a 0-filled array) is valid data whose rows are the fill value."""
    x = _good()
    x[CHUNK : 2 * CHUNK] = 0.0  # zarr leaves this block unwritten
    data = _store(tmp_path / "z.zarr", x)
    assert not (data / "c" / "1" / "0").exists()
    cfg = _config(tmp_path, data, tmp_path / "out")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(tmp_path / "run.yaml")]) == 0
    said = capsys.readouterr().out
    assert "1 chunk(s) are absent from the store and read as the fill value 0.0: c/1/0" in said
    assert main(["run", str(tmp_path / "run.yaml")]) == 0
    capsys.readouterr()
    import dgmm

    model = dgmm.load(tmp_path / "out" / "model")
    np.testing.assert_array_equal(run_output(tmp_path / "out")["labels"][:], model.predict(x))
    # the same rows from memory give the same fit

    np.save(tmp_path / "x.npy", x)
    cfg["data"] = {"path": str(tmp_path / "x.npy")}
    cfg["output"]["path"] = str(tmp_path / "out2")
    (tmp_path / "run2.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "run2.yaml")]) == 0
    again = dgmm.load(tmp_path / "out2" / "model")
    np.testing.assert_allclose(again.means_, model.means_, rtol=1e-10, atol=1e-12)
