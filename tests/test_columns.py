"""Columns are matched by name: a model fitted on named columns (a pandas or Dask DataFrame, a
Parquet or CSV file) labels any table with those columns, in any order, exactly as it labels
the training table; a table with a column missing or one too many is refused by name. Never
are other labels given."""

from __future__ import annotations

import warnings

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import zarr

import dgmm
from pipelines.cli import main

FORMATS = ("pandas", "dask", "parquet", "csv")


def _frame(rng: np.random.Generator, d: int) -> pd.DataFrame:
    """Three well-separated clusters with per-column scales, under random column names."""
    n = 400
    names = [f"f{int(i)}_{rng.choice(['x', 'y', 'z'])}" for i in rng.permutation(50)[:d]]
    centres = rng.normal(scale=6.0, size=(3, d))
    x = centres[rng.integers(3, size=n)] + rng.normal(size=(n, d))
    return pd.DataFrame(x * rng.uniform(0.1, 10.0, size=d), columns=names)


def _as(fmt: str, frame: pd.DataFrame, path) -> object:
    if fmt == "pandas":
        return frame
    if fmt == "dask":
        return dd.from_pandas(frame, npartitions=3)
    if fmt == "parquet":
        frame.to_parquet(path / "t.parquet")
        return str(path / "t.parquet")
    frame.to_csv(path / "t.csv", index=False, float_format="%.17g")
    return str(path / "t.csv")


def _variant(rng: np.random.Generator, frame: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """The frame with its columns shuffled and, at random, one dropped, one added or one
    renamed; returns it and the names a refusal must mention (empty: it must be accepted)."""
    names = list(rng.permutation(frame.columns))
    out = frame[names].copy()
    change = rng.choice(["none", "drop", "add", "rename"])
    if change == "drop" and len(names) > 1:
        gone = names[int(rng.integers(len(names)))]
        return out.drop(columns=gone), {gone}
    if change == "add":
        out.insert(int(rng.integers(len(names) + 1)), "extra", rng.normal(size=len(out)))
        return out, {"extra"}
    if change == "rename":
        old = names[int(rng.integers(len(names)))]
        return out.rename(columns={old: old + "_v2"}), {old, old + "_v2"}
    return out, set()


@pytest.mark.parametrize("seed", range(6))
def test_tables_are_matched_by_name_or_refused_by_name(tmp_path, seed):
    rng = np.random.default_rng(seed)
    frame = _frame(rng, int(rng.integers(2, 6)))
    fit_fmt = FORMATS[seed % len(FORMATS)]
    (tmp_path / "fit").mkdir()
    gm = dgmm.GaussianMixture(3, covariance_type=str(rng.choice(["full", "diag"])), random_state=0)
    gm.fit(_as(fit_fmt, frame, tmp_path / "fit"))
    assert list(gm.feature_names_in_) == list(frame.columns)
    expected = np.asarray(gm.predict(frame))
    gm.save(tmp_path / "model")
    models = {"fitted": gm, "loaded": dgmm.load(tmp_path / "model")}
    assert list(models["loaded"].feature_names_in_) == list(frame.columns)
    for i in range(8):
        table, named = _variant(rng, frame)
        fmt = str(rng.choice(FORMATS))
        where = tmp_path / f"v{i}"
        where.mkdir()
        data = _as(fmt, table, where)
        for which, model in models.items():
            if named:
                with pytest.raises(ValueError) as err:
                    model.predict(data)
                for name in named:
                    assert repr(name) in str(err.value), (fmt, which, str(err.value))
                assert "\n" not in str(err.value)
            else:
                labels = np.asarray(model.predict(data))
                np.testing.assert_array_equal(labels, expected, err_msg=f"{fmt} {which}")
                proba = np.asarray(model.predict_proba(data))
                np.testing.assert_allclose(proba, np.asarray(model.predict_proba(frame)))


def test_unnamed_and_named_data_meet_with_a_warning(tmp_path):
    rng = np.random.default_rng(7)
    frame = _frame(rng, 3)
    named = dgmm.GaussianMixture(3, random_state=0).fit(frame)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        labels = named.predict(frame.to_numpy())
    np.testing.assert_array_equal(labels, named.predict(frame))
    unnamed = dgmm.GaussianMixture(3, random_state=0).fit(frame.to_numpy())
    assert not hasattr(unnamed, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names"):
        unnamed.predict(frame)
    # refitting on unnamed data forgets the names; integer column labels are not names
    named.fit(pd.DataFrame(frame.to_numpy()))
    assert not hasattr(named, "feature_names_in_")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named.predict(frame.to_numpy())


def test_select_gives_every_estimator_the_names(tmp_path):
    rng = np.random.default_rng(3)
    frame = _frame(rng, 4)
    frame.to_csv(tmp_path / "t.csv", index=False, float_format="%.17g")
    found = dgmm.select(str(tmp_path / "t.csv"), [2, 3], ["full", "spherical"], random_state=0)
    for cov in ("full", "spherical"):
        for k in (2, 3):
            assert list(found.estimator(k, cov).feature_names_in_) == list(frame.columns)
    reordered = frame[frame.columns[::-1]]
    np.testing.assert_array_equal(
        found.best_estimator_.predict(reordered), found.best_estimator_.predict(frame)
    )


@pytest.mark.parametrize("seed", range(3))
def test_dgmm_predict_matches_a_table_by_name(tmp_path, capsys, seed):
    """The CLI: a Parquet or CSV table in another column order gets the training labels; with
    a column missing or extra it is refused in one line naming it, and nothing is written."""
    rng = np.random.default_rng(seed)
    frame = _frame(rng, int(rng.integers(2, 5)))
    gm = dgmm.GaussianMixture(3, random_state=0).fit(frame)
    gm.save(tmp_path / "model")
    expected = np.asarray(gm.predict(frame))
    for i in range(4):
        table, named = _variant(rng, frame)
        fmt = str(rng.choice(["parquet", "csv"]))
        where = tmp_path / f"v{i}"
        where.mkdir()
        data = _as(fmt, table, where)
        out = where / "labels.zarr"
        status = main(["predict", str(tmp_path / "model"), data, str(out)])
        err = capsys.readouterr().err
        if named:
            assert status == 2 and len(err.strip().splitlines()) == 1, err
            assert all(repr(n) in err for n in named), err
            assert not out.exists()
        else:
            assert status == 0, err
            np.testing.assert_array_equal(zarr.open_group(str(out))["labels"][:], expected)


def test_a_table_refuses_names_that_do_not_fit_its_columns():
    from dgmm.tables import Table

    x = np.zeros((4, 3))
    for names, needle in ((("a", "b"), "2 column names for 3 columns"), (("a", "a", "b"), "'a'")):
        with pytest.raises(ValueError, match=needle):
            Table(None, names, x)
    with pytest.raises(ValueError, match="must be strings"):
        Table(None, ("a", 1, "c"), x)
    assert Table(None, ("a", "b", "c"), x).names == ("a", "b", "c")
