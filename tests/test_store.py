"""Reruns reuse finished work (`dgmm.store.ResultStore`), and reuse changes nothing.

- A selection with a store equals a fresh one of its own grid, row for row and label for label
  (bitwise), over generated sequences of grids and settings: supersets, subsets, changed
  settings, both strategies; with exact EM it fits exactly the candidates not stored before.
- A damaged entry is ignored with one warning; two selections at once share a store; the store
  keeps within its size; a changed setting is named.
- The command: a rerun over a larger grid reuses, `dgmm store ls/prune`, `dgmm diff`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import dask.array as da
import numpy as np
import pytest
import yaml
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dgmm
from dgmm.files import write_own
from dgmm.store import ResultStore

from .helpers import INPROC_CLUSTER, dgmm_cli, small_default_samples

SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _data(seed: int = 0) -> da.Array:
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(m, [1.0, 0.5], (1500, 2)) for m in (0.0, 4.0, 9.0)])
    return da.from_array(x[rng.permutation(len(x))], chunks=1000)


def _without_reuse(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "reused"} for r in rows]


def _same(a: dgmm.SelectionResult, b: dgmm.SelectionResult, x) -> None:
    assert _without_reuse(a.results) == _without_reuse(b.results)
    assert a.best_params_ == b.best_params_
    ga, gb = a.best_estimator_, b.best_estimator_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.array_equal(getattr(ga, name), getattr(gb, name)), name
    assert ga.lower_bound_ == gb.lower_bound_ and ga.n_iter_ == gb.n_iter_
    assert np.array_equal(ga.predict(x).compute(), gb.predict(x).compute())


def _key(row: dict) -> tuple:
    return row["covariance_type"], row["n_components"], row["restart"]


_GRIDS = st.lists(
    st.tuples(
        st.lists(st.integers(1, 5), min_size=1, max_size=4, unique=True),
        st.lists(
            st.sampled_from(["full", "diag", "spherical"]), min_size=1, max_size=2, unique=True
        ),
        st.sampled_from([1e-3, 1e-2]),  # tol: a changed setting refits
        st.sampled_from([1, 2]),  # n_init: more restarts add candidates
    ),
    min_size=2,
    max_size=4,
)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@SETTINGS
@given(
    grids=_GRIDS,
    strategy=st.sampled_from(["exact", "sample"]),
    sample_size=st.sampled_from([1500, None]),
)
def test_a_selection_with_a_store_is_a_fresh_one_fitting_only_what_is_new(
    grids, strategy, sample_size, tmp_path_factory
):
    """With the default sample too, whose size each cell's own parameters set (scaled down
    here so that the cells of these small grids draw samples of 200 to 580 of 4,500 rows)."""
    x = _data()
    store = ResultStore(tmp_path_factory.mktemp("s"))
    fitted_before: set[tuple] = set()
    for ks, types, tol, n_init in grids:
        kw = dict(n_init=n_init, tol=tol, random_state=0, strategy=strategy)
        kw["sample_size"] = sample_size
        with small_default_samples():
            found = dgmm.select(x, ks, types, store=store, **kw)
            fresh = dgmm.select(x, ks, types, **kw)
        _same(found, fresh, x)
        assert found.reuse["reused"] + found.reuse["fitted"] == len(found.results)
        if strategy == "exact":  # every fit is finished on all rows: exactly the new ones run
            keys = {
                (r["covariance_type"], r["n_components"], r["restart"], tol) for r in found.results
            }
            assert found.reuse["reused"] == len(keys & fitted_before)
            fitted_before |= keys
        assert sum(r["reused"] is not None for r in found.results) == found.reuse["reused"]


@pytest.mark.parametrize("strategy", ["exact", "sample"])
def test_a_larger_grid_reuses_every_stored_cell_with_the_default_sample(strategy, tmp_path, caplog):
    """The default sample's size follows the largest candidate of a grid, but each cell is
    fitted on the rows its own size draws: adding larger cells refits nothing stored."""
    x = _data()
    store = ResultStore(tmp_path / "store")
    kw = dict(random_state=0, strategy=strategy, n_init=2)
    with small_default_samples(), caplog.at_level(logging.INFO, logger="dgmm"):
        first = dgmm.select(x, [1, 2, 3], ["full", "spherical"], store=store, **kw)
        caplog.clear()
        larger = dgmm.select(x, [1, 2, 3, 4, 5], ["full", "spherical"], store=store, **kw)
        fresh = dgmm.select(x, [1, 2, 3, 4, 5], ["full", "spherical"], **kw)
    assert first.sample.x.shape[0] < larger.sample.x.shape[0]  # a larger sample drawn
    _same(larger, fresh, x)
    assert larger.reuse["changed"] is None
    if strategy == "exact":
        assert larger.reuse["reused"] == 12 and larger.reuse["fitted"] == 8
    else:  # judged again over the larger grid, a stored cell stops there or goes on
        stopped = ("stopped", "cell stopped")
        went_on = {_key(r) for r in first.results if r["status"] not in stopped}
        for r in larger.results:
            if r["n_components"] <= 3 and (r["status"] in stopped or _key(r) in went_on):
                assert r["reused"] is not None, r  # its sample fit, or its finished fit, kept
            elif r["n_components"] > 3:
                assert r["reused"] is None


def test_a_changed_setting_is_named_and_refits(tmp_path, caplog):
    x = _data()
    store = ResultStore(tmp_path / "store", origin="first")
    kw = dict(random_state=0, strategy="exact")
    dgmm.select(x, [1, 2, 3], ["diag"], store=store, **kw)
    again = dgmm.select(x, [1, 2, 3, 4], ["diag"], store=store, **kw)
    assert again.reuse["reused"] == 3 and again.reuse["fitted"] == 1
    assert again.reuse["origins"] == {"first": 3} and again.reuse["changed"] is None
    with caplog.at_level(logging.INFO, logger="dgmm.store"):
        changed = dgmm.select(x, [1, 2, 3, 4], ["diag"], store=store, **{**kw, "tol": 1e-4})
    assert changed.reuse["reused"] == 0
    assert changed.reuse["changed"] == "tol changed 0.001 -> 0.0001"
    assert any(
        "tol changed 0.001 -> 0.0001 (4 candidates fitted)" in r.getMessage()
        for r in caplog.records
    )
    pinned = dgmm.select(x, [1, 2, 3, 4], ["diag"], store=store, tol=1e-4, sample_size=1000, **kw)
    assert pinned.reuse["changed"] == "sample size changed default -> 1000"
    assert pinned.reuse["reused"] == 0


def test_a_damaged_entry_is_ignored_with_one_warning(tmp_path, caplog):
    x = _data()
    store = ResultStore(tmp_path / "store")
    kw = dict(random_state=0, strategy="exact")
    first = dgmm.select(x, [1, 2], ["full"], store=store, **kw)
    entries = sorted((tmp_path / "store" / "entries").glob("*.npz"))
    assert len(entries) == 2
    damaged = bytearray(entries[0].read_bytes())
    damaged[-10] ^= 0xFF
    entries[0].write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="dgmm"):
        again = dgmm.select(x, [1, 2], ["full"], store=store, **kw)
    said = [r for r in caplog.records if "store entry ignored" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0].getMessage()
    assert again.reuse["reused"] == 1
    _same(first, again, x)


def test_two_selections_at_once_share_a_store(tmp_path):
    x = _data()
    store = ResultStore(tmp_path / "store")
    kw = dict(random_state=0, strategy="exact")
    out, errors = {}, []

    def one(i: int) -> None:
        try:
            out[i] = dgmm.select(x, [1, 2, 3], ["diag", "spherical"], store=store, **kw)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _same(out[0], out[1], x)
    third = dgmm.select(x, [1, 2, 3], ["diag", "spherical"], store=store, **kw)
    assert third.reuse["reused"] == 6
    _same(out[0], third, x)


def test_the_store_keeps_within_its_size(tmp_path):
    x = _data()
    big = ResultStore(tmp_path / "store")
    dgmm.select(x, [1, 2, 3, 4], ["full"], store=big, random_state=0, strategy="exact")
    sizes = [e.nbytes for e in big.entries()]
    cap = sum(sizes) // 2
    small = ResultStore(tmp_path / "store", max_bytes=cap)
    dgmm.select(x, [5], ["full"], store=small, random_state=0, strategy="exact")
    assert small.nbytes() <= cap
    assert any(e.cell == ("full", 5) for e in small.entries())  # the newest is kept


@SETTINGS
@given(
    sizes=st.lists(st.integers(1, 20_000), min_size=1, max_size=12),
    cap_share=st.floats(0.0, 1.2),
    foreign=st.lists(st.integers(1, 30_000), max_size=3),
)
def test_prune_keeps_the_most_recently_used_within_the_cap(
    sizes, cap_share, foreign, tmp_path_factory
):
    """Generated entries (sizes, last uses), caps and files of someone else's among them:
    after `prune` dgmm's entries fit the cap, the ones kept are the most recently used, and no
    file that is not dgmm's is touched."""
    store = ResultStore(tmp_path_factory.mktemp("s"))
    for i, n in enumerate(sizes):
        spec = {"stage": "final", "data": {"digest": "d"}, "cell": ["full", i + 1], "restart": 0}
        store.put(spec, b"x" * n, "test")
    for e in store.entries():  # distinct last uses, in the order written
        i = e.cell[1]
        os.utime(store.path / "entries" / f"{e.name}.npz", (1e9 + i, 1e9 + i))
    theirs = [store.path / "entries" / f"theirs{i}.npz" for i in range(len(foreign))]
    for path, n in zip(theirs, foreign, strict=True):
        path.write_bytes(b"y" * n)
    before = store.entries()
    cap = max(1, int(cap_share * sum(e.nbytes for e in before)))
    ResultStore(store.path, max_bytes=cap).prune()
    after = store.entries()
    assert sum(e.nbytes for e in after) <= cap
    kept = {e.name for e in after}
    newest = sorted(before, key=lambda e: e.last_used)[len(before) - len(after) :]
    assert kept == {e.name for e in newest}  # least recently used removed first
    for path, n in zip(theirs, foreign, strict=True):
        assert path.read_bytes() == b"y" * n


def test_no_integer_seed_no_store(tmp_path):
    x = _data()
    with pytest.warns(UserWarning, match="give an integer random_state"):
        found = dgmm.select(x, [1, 2], ["diag"], store=tmp_path / "store")
    assert found.reuse is None and not (tmp_path / "store" / "entries").exists()


def _config(tmp_path, out: str, ks: list[int]) -> str:
    cfg = {
        "data": {"path": str(tmp_path / "x.npy")},
        "model": {"n_components": ks, "covariance_types": ["full", "diag"], "n_init": 2},
        "output": {"path": str(tmp_path / out)},
        "cluster": INPROC_CLUSTER,
        "store": {"path": str(tmp_path / "store")},
    }
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.slow
def test_a_rerun_over_a_larger_grid_reuses_and_labels_alike(tmp_path):
    np.save(tmp_path / "x.npy", _data().compute())
    dgmm_cli("run", _config(tmp_path, "a", [1, 2, 3]))
    again = dgmm_cli("run", _config(tmp_path, "b", [1, 2, 3, 4]))
    assert "store: reused " in again.stdout, again.stdout
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["reuse"]["reused"] > 0
    # the same grid without the store: the same labels, bitwise
    cfg = yaml.safe_load(open(_config(tmp_path, "c", [1, 2, 3, 4])))
    cfg["store"] = {"enabled": False}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    dgmm_cli("run", str(tmp_path / "c.yaml"))
    b = zarr.open_group(str(tmp_path / "b" / "assignments.zarr"), mode="r")["labels"][:]
    c = zarr.open_group(str(tmp_path / "c" / "assignments.zarr"), mode="r")["labels"][:]
    assert np.array_equal(b, c)
    listed = dgmm_cli("store", "ls", "--store", str(tmp_path / "store")).stdout
    assert "fit(s)" in listed and "run '" in listed
    diff = dgmm_cli("diff", str(tmp_path / "a"), str(tmp_path / "b")).stdout
    assert "model.n_components: [1, 2, 3] -> [1, 2, 3, 4]" in diff
    assert "data: the same rows" in diff and "cells only in B: full K=4, diag K=4" in diff
    pruned = dgmm_cli("store", "prune", "--all", "--store", str(tmp_path / "store")).stdout
    assert pruned.startswith("removed ") and ResultStore(tmp_path / "store").entries() == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "give --max-size, --older-than or --all"),
        (["--older-than", "-1"], "give a number of days, 0 or more"),
        (["--older-than", "nan"], "give a number of days, 0 or more"),
        (["--max-size", "lots"], "is not a size"),
    ],
)
def test_store_prune_refuses_a_bad_rule_in_one_line(tmp_path, args, said):
    refused = dgmm_cli("store", "prune", "--store", str(tmp_path / "s"), *args, check=False)
    assert refused.returncode == 2 and said in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("report", ["[]", "{}", '{"selected": {}, "cells": [], "data": {}}'])
def test_diff_refuses_what_is_not_a_run_in_one_line(tmp_path, report):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("model: {}\n")
        (tmp_path / name / "report.json").write_text(report)
    refused = dgmm_cli("diff", str(tmp_path / "a"), str(tmp_path / "b"), check=False)
    assert refused.returncode == 2 and "is not a finished dgmm run" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "where", ["data", "inside data", "output", "inside output", "contains data"]
)
def test_a_store_overlapping_the_data_or_the_output_is_refused(tmp_path, where):
    """The store is written on every run: it may not be, hold or sit inside the data it reads
    or the output a run replaces. Refused before anything starts, nothing written."""
    data = tmp_path / "d" / "x.npy"
    data.parent.mkdir()
    np.save(data, _data().compute())
    out = tmp_path / "o" / "run"
    store = {
        "data": data,
        "inside data": data / "store",
        "output": out,
        "inside output": out / "store",
        "contains data": tmp_path / "d",
    }[where]
    cfg = {
        "data": {"path": str(data)},
        "model": {"n_components": [1, 2]},
        "output": {"path": str(out)},
        "cluster": INPROC_CLUSTER,
        "store": {"path": str(store)},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    refused = dgmm_cli("run", str(tmp_path / "run.yaml"), check=False)
    assert refused.returncode == 2 and "store.path" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_on_a_cluster_an_extension_equals_a_fresh_selection_to_the_last_bit(
    local_cluster, tmp_path
):
    """On worker processes the sample's per-row scores of the fits made in a run are computed
    on the workers, and those of stored fits in the client: the same bits, so the same
    screening, down to the words of every stopped restart (several grids, both strategies)."""
    rng = np.random.default_rng(3)  # 8 features: products large enough for BLAS threads
    rows = np.vstack([rng.normal(m, 1.0, (4000, 8)) for m in (0.0, 3.0, 7.0)])
    x = da.from_array(rows[rng.permutation(len(rows))], chunks=3000)
    for strategy in ("sample", "exact"):
        store = ResultStore(tmp_path / strategy)
        kw = dict(random_state=0, n_init=3, strategy=strategy, sample_size=5000)
        dgmm.select(x, [1, 2, 3], ["full", "spherical"], store=store, **kw)
        for ks in ([1, 2, 3, 4], [2, 4, 5]):
            with_store = dgmm.select(x, ks, ["full", "spherical"], store=store, **kw)
            assert with_store.reuse["reused"] > 0
            _same(with_store, dgmm.select(x, ks, ["full", "spherical"], **kw), x)


def test_a_users_file_at_an_entrys_name_is_left_as_it_is(tmp_path, caplog):
    """dgmm owns only what it wrote: a file of someone else's where an entry would be is
    neither read, removed nor replaced; that fit is refitted and the selection goes on."""
    x = _data()
    store = ResultStore(tmp_path / "store")
    kw = dict(random_state=0, strategy="exact")
    first = dgmm.select(x, [1, 2], ["diag"], store=store, **kw)
    entry = sorted((tmp_path / "store" / "entries").glob("*.npz"))[0]
    entry.write_bytes(b"my own notes\n")
    with caplog.at_level(logging.WARNING, logger="dgmm"):
        again = dgmm.select(x, [1, 2], ["diag"], store=store, **kw)
    assert entry.read_bytes() == b"my own notes\n"
    assert again.reuse["reused"] == 1 and again.reuse["fitted"] == 1
    said = [r.getMessage() for r in caplog.records]
    assert any("store entry ignored" in m for m in said) and any("not written" in m for m in said)
    _same(first, again, x)


def _variant(name: str, x: np.ndarray):
    """Other data than ``x`` in one respect: what a fit on ``x`` must never stand for."""
    rng = np.random.default_rng(5)
    if name == "weights":
        return x, rng.uniform(0.5, 2.0, len(x)), None
    if name == "weights on dask":
        return da.from_array(x, chunks=1000), da.from_array(rng.uniform(0.5, 2, len(x)), 1000), None
    if name == "standardised":
        p = dgmm.profile(x)
        return (x - p.mean) / p.std, None, p.affine(p.mean, p.std)
    if name == "one value changed":
        y = x.copy()
        y[rng.integers(len(y)), rng.integers(y.shape[1])] += 1e-9
        return y, None, None
    raise AssertionError(name)


@pytest.mark.parametrize(
    "variant", ["weights", "weights on dask", "standardised", "one value changed"]
)
def test_fits_of_other_data_are_never_reused(tmp_path, variant):
    """Weights, a transform (a standardised run passes the raw rows' profile moved by it) or
    one changed value make other data: nothing is read back, and the fit is the fresh one."""
    x = _data().compute()
    store = ResultStore(tmp_path / "store")
    kw = dict(random_state=0, strategy="exact")
    dgmm.select(x, [1, 2, 3], ["diag"], store=store, **kw)
    y, w, profile = _variant(variant, x)
    other = dgmm.select(y, [1, 2, 3], ["diag"], sample_weight=w, profile=profile, store=store, **kw)
    assert other.reuse["reused"] == 0
    fresh = dgmm.select(y, [1, 2, 3], ["diag"], sample_weight=w, profile=profile, **kw)
    _same(other, fresh, da.from_array(np.asarray(y), chunks=1000))


def test_prune_removes_the_temporary_files_of_dead_writers_only(tmp_path):
    """A writer killed mid-entry leaves a temporary file: pruning removes it once it is old,
    and leaves a young one (a writer at work) and anything not dgmm's."""
    x = _data()
    store = ResultStore(tmp_path / "store")
    dgmm.select(x, [1, 2], ["diag"], store=store, random_state=0, strategy="exact")
    folder = tmp_path / "store" / "entries"
    entry = next(folder.glob("*.npz"))
    dead, young = folder / f".{entry.name}.dead.tmp", folder / f".{entry.name}.young.tmp"
    for path in (dead, young):
        write_own(path, "result", b"half an entry")
    theirs = folder / f".{entry.name}.theirs.tmp"
    theirs.write_text("not dgmm's")
    hour_ago = time.time() - 7200
    for path in (dead, theirs):
        os.utime(path, (hour_ago, hour_ago))
    store.prune()
    assert not dead.exists() and young.exists() and theirs.exists()
    assert len(store.entries()) == 2  # the entries themselves stay (within the cap)


@pytest.mark.slow
def test_a_resumed_selection_still_counts_what_the_store_gave(tmp_path):
    """The checkpoint keeps where each fit came from: a selection resumed from it counts the
    stored fits as a whole one would."""
    x = _data()
    store = ResultStore(tmp_path / "store")
    kw = dict(random_state=0, strategy="exact")
    dgmm.select(x, [1, 2], ["diag"], store=store, **kw)
    ck = tmp_path / "sweep.ckpt"
    whole = dgmm.select(x, [1, 2, 3], ["diag"], store=store, checkpoint=ck, **kw)
    resumed = dgmm.select(x, [1, 2, 3], ["diag"], store=store, checkpoint=ck, **kw)
    assert resumed.resumed_from is not None
    assert resumed.reuse["reused"] == whole.reuse["reused"] == 2
    _same(whole, resumed, x)


def test_a_checkpoint_is_bound_to_the_numerics_of_its_fits(tmp_path, caplog, monkeypatch):
    """A checkpoint written under other arithmetic (another numerics version: its fits on the
    sample made otherwise) is not resumed, so its fits never reach the store as this one's."""
    import dgmm.selection

    x = _data()
    path = tmp_path / "ck.dgmm"
    kw = dict(random_state=0, strategy="exact", checkpoint=path, max_iter=3)
    first = dgmm.select(x, [1, 2], ["diag"], **kw)
    assert dgmm.select(x, [1, 2], ["diag"], **kw).resumed_from is not None
    monkeypatch.setattr(dgmm.selection, "NUMERICS_VERSION", dgmm.selection.NUMERICS_VERSION + 1)
    with caplog.at_level(logging.WARNING, logger="dgmm"):
        again = dgmm.select(x, [1, 2], ["diag"], **kw)
    assert again.resumed_from is None
    assert any(
        "not resuming" in r.getMessage() and "numerics" in r.getMessage() for r in caplog.records
    )
    assert _without_reuse(again.results) == _without_reuse(first.results)
