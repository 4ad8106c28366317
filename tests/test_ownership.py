"""dgmm owns only what it created: whatever a user left under a companion name of an output
(``<out>.work``, ``.<out>.partial``, ``.<out>.lock``, a log, a checkpoint) is refused, never
deleted, overwritten or written through."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import dgmm
from dgmm.files import NotOwnFile, write_own
from pipelines.cli import main
from pipelines.data import make_data
from pipelines.outputs import publish

from .helpers import INPROC_CLUSTER

pytestmark = pytest.mark.slow


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: links by target, files by bytes, folders by presence."""
    seen = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            seen[key] = ("link", os.readlink(p))
        elif p.is_file():
            seen[key] = ("file", p.read_bytes())
        elif p.is_dir():
            seen[key] = ("dir",)
    return seen


def _neighbour(rng, path: Path, victim: Path, other_run: Path) -> str:
    """Put one of the things a user may have at ``path``; returns what it is."""
    kind = ["folder", "file", "link to a file", "link to a folder", "another run"][rng.integers(5)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        path.mkdir()
        (path / "notes.txt").write_text(f"mine {rng.integers(1e9)}")
    elif kind == "file":
        path.write_bytes(rng.bytes(int(rng.integers(1, 64))))
    elif kind == "link to a file":
        path.symlink_to(victim)
    elif kind == "link to a folder":
        path.symlink_to(victim.parent, target_is_directory=True)
    else:
        shutil.copytree(other_run, path, symlinks=True)
    return kind


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """Data, a model fitted to it and a finished run output, made once."""
    d = tmp_path_factory.mktemp("own")
    make_data(d / "d.zarr", 2000, 2, 2, seed=3, chunk_rows=500)
    cfg = {
        "data": {"path": str(d / "d.zarr"), "array": "X"},
        "model": {"n_components": [2], "n_init": 1},
        "output": {"path": str(d / "done")},
        "cluster": dict(INPROC_CLUSTER),
    }
    (d / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(d / "run.yaml")]) == 0
    return d


def _companions(out: Path) -> dict[str, Path]:
    return {
        "work": out.with_name(out.name + ".work"),
        "lock": out.with_name(f".{out.name}.lock"),
        "partial": out.with_name(f".{out.name}.partial"),
        "log": out.with_name(out.name + ".work") / "run.log",
    }


@pytest.mark.parametrize("seed", range(12))
def test_what_a_user_left_beside_an_output_is_never_touched(setting, tmp_path, seed, capsys):
    rng = np.random.default_rng(seed)
    command = ["run", "predict", "make-data"][seed % 3]
    victim = tmp_path / "victim" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("years of work")
    out = tmp_path / "out"
    names = _companions(out)
    which = ["work", "lock"] if command == "run" else ["partial", "lock"]
    if command == "run":
        which.append("log")
    name = which[rng.integers(len(which))]
    if name == "log":  # a link planted in a working folder that is not dgmm's
        names["work"].mkdir()
    kind = _neighbour(rng, names[name], victim, setting / "done")
    if command == "run":
        cfg = yaml.safe_load((setting / "run.yaml").read_text())
        cfg["output"]["path"] = str(out)
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
        args = ["run", str(tmp_path / "run.yaml")]
    elif command == "predict":
        args = ["predict", str(setting / "done" / "model"), str(setting / "d.zarr" / "X")]
        args.append(str(out))
    else:
        args = ["make-data", str(out), "--n-samples", "100", "--n-features", "2"]
        args += ["--n-components", "2"]
    before = _snapshot(tmp_path)
    status = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, (command, name, kind, err)
    assert len(err) == 1 and err[0].startswith("dgmm: error: "), err
    assert _snapshot(tmp_path) == before, (command, name, kind)
    assert victim.read_text() == "years of work"


@pytest.mark.parametrize("seed", range(4))
def test_a_checkpoint_path_that_holds_a_users_file_is_refused(tmp_path, seed):
    rng = np.random.default_rng(seed)
    victim = tmp_path / "precious.txt"
    victim.write_text("years of work")
    path = tmp_path / "notes.txt"
    kind = _neighbour(rng, path, victim, tmp_path)
    if kind == "another run":  # a copy of this folder: just some folder here
        shutil.rmtree(path)
        path.mkdir()
    before = _snapshot(tmp_path)
    x = np.random.default_rng(0).normal(size=(300, 2))
    with pytest.raises(NotOwnFile, match="is not a dgmm checkpoint"):
        dgmm.select(x, [1, 2], checkpoint=path)
    assert _snapshot(tmp_path) == before


def test_a_damaged_checkpoint_is_set_aside_and_the_fit_starts_afresh(tmp_path, caplog):
    x = np.random.default_rng(0).normal(size=(300, 2))
    path = tmp_path / "ck"
    first = dgmm.select(x, [1, 2], checkpoint=path, random_state=0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    again = dgmm.select(x, [1, 2], checkpoint=path, random_state=0)
    assert again.results == first.results
    aside = list(tmp_path.glob("ck.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == data[: len(data) // 2]
    assert "checkpoint damaged" in caplog.text


def test_own_files_are_written_through_no_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / "f"
    link.symlink_to(victim)
    with pytest.raises(NotOwnFile):
        write_own(link, "checkpoint", b"x")
    assert victim.read_text() == "keep" and link.is_symlink()


def test_a_failed_publish_leaves_the_earlier_output_where_it_was(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "a").write_text("earlier")
    with pytest.raises(FileNotFoundError):
        publish(tmp_path / "no-staging", final)
    assert (final / "a").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("seed", range(8))
def test_an_edited_checkpoint_with_a_fresh_digest_is_checked_and_set_aside(tmp_path, caplog, seed):
    """A checkpoint edited by hand and re-signed (its digest recomputed) is checked like a saved
    model: parameters that are not a mixture are never resumed."""
    import io
    import json

    from dgmm._checkpoint import CHECKPOINT_KIND, read_checkpoint

    rng = np.random.default_rng(seed)
    x = np.random.default_rng(1).normal(size=(400, 3))
    x[:200] += 6
    path = tmp_path / "ck"
    kw = {"covariance_types": ["full", "diag"], "random_state": 0, "max_iter": 3, "tol": 0}
    variational = seed % 2 == 1  # its posterior and priors are checked too
    if variational:
        kw |= {"method": "variational", "covariance_types": ["full", "tied", "spherical"]}
    first = dgmm.select(x, [1, 2], checkpoint=path, **kw)
    header, arrays = read_checkpoint(path)
    # the state EM resumes from; a start (raw initial statistics) is only checked for finite
    # values, which the non-finite edits below also cover
    names = sorted(k for k in arrays if k.startswith("cur"))
    name = names[rng.integers(len(names))]
    edit = arrays[name].astype(np.float64).copy()
    # a variational posterior admits any positive precision: there, values no fit can hold
    # and any finite mean is a mixture's: a mean gets values no fit can hold
    bad = [np.nan, np.inf] if variational else [np.nan, np.inf, -1.0, 1e300]
    if name.endswith("_means"):
        bad = [np.nan, np.inf, 1e300]
    edit.flat[rng.integers(edit.size)] = rng.choice(bad)
    arrays[name] = edit
    buf = io.BytesIO()
    np.savez(buf, header=np.array(json.dumps(header)), **arrays)
    write_own(path, CHECKPOINT_KIND, buf.getvalue())
    again = dgmm.select(x, [1, 2], checkpoint=path, **kw)
    assert [r["log_likelihood"] for r in again.results] == [
        r["log_likelihood"] for r in first.results
    ]
    assert "checkpoint damaged" in caplog.text and list(tmp_path.glob("ck.damaged-*"))


@pytest.mark.parametrize("name", ["run.log", "dask-report.html", "checkpoint.npz", "staging"])
def test_a_link_inside_dgmms_own_working_folder_is_never_written_through(
    setting, tmp_path, capsys, name
):
    from pipelines.paths import claim_companion

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "zarr.json").write_text("{}")
    out = tmp_path / "out"
    work = out.with_name("out.work")
    claim_companion(work, out, "work", fresh=False)  # as an interrupted run leaves it
    (work / name).symlink_to(victim / "zarr.json" if name != "staging" else victim)
    cfg = yaml.safe_load((setting / "run.yaml").read_text())
    cfg["output"]["path"] = str(out)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    before = _snapshot(victim)
    assert main(["run", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a symbolic link; dgmm never writes through links" in err[0]
    assert _snapshot(victim) == before and (work / name).is_symlink()


@pytest.mark.parametrize("damage", [b"", b"dgmm chec", b"PK\x03\x04 not a checkpoint"])
def test_a_checkpoint_cut_in_its_first_line_in_the_runs_folder_is_set_aside(
    setting, tmp_path, capsys, damage
):
    from pipelines.paths import claim_companion

    out = tmp_path / "out"
    work = out.with_name("out.work")
    claim_companion(work, out, "work", fresh=False)
    (work / "checkpoint.npz").write_bytes(damage)
    cfg = yaml.safe_load((setting / "run.yaml").read_text())
    cfg["output"]["path"] = str(out)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "run.yaml")]) == 0, capsys.readouterr().err
    assert "is not readable as dgmm's; set aside" in (out / "run.log").read_text()
