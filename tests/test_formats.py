"""Inputs beyond Zarr: Parquet, CSV and .npy give the rows Zarr gives, and bad columns get one
line that names them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

import dgmm
from dgmm.tables import infer_format
from pipelines.cli import main
from pipelines.data import open_data
from pipelines.schema import DataConfig

COLUMNS = ["a", "b", "c"]


def _rows(seed: int = 0, n: int = 900) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 1.0, -3.0], [-4.0, 5.0, 2.0]])
    return centres[rng.integers(3, size=n)] + rng.normal(size=(n, 3)) * [1.0, 0.5, 2.0]


def _write_all(tmp_path, x: np.ndarray) -> dict[str, str]:
    """The same rows as Zarr, Parquet (two files), CSV and .npy, plus a text column."""
    frame = pd.DataFrame(x, columns=COLUMNS).assign(name=[f"r{i}" for i in range(len(x))])
    paths = {}
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    g.create_array("X", shape=x.shape, chunks=(200, 3), dtype=x.dtype)[...] = x
    paths["zarr"] = str(tmp_path / "d.zarr" / "X")
    (tmp_path / "pq").mkdir()
    half = len(x) // 2
    frame.iloc[:half].to_parquet(tmp_path / "pq" / "part-0.parquet")
    frame.iloc[half:].to_parquet(tmp_path / "pq" / "part-1.parquet")
    paths["parquet"] = str(tmp_path / "pq")
    frame.to_csv(tmp_path / "d.csv", index=False, float_format="%.17g")
    paths["csv"] = str(tmp_path / "d.csv")
    np.save(tmp_path / "d.npy", x)
    paths["npy"] = str(tmp_path / "d.npy")
    return paths


def test_every_format_gives_the_zarr_rows_and_fit(tmp_path):
    x = _rows()
    paths = _write_all(tmp_path, x)
    fits = {}
    for fmt, path in paths.items():
        assert infer_format(path) == fmt
        columns = COLUMNS if fmt in ("parquet", "csv") else None
        # the same row chunks: k-means++'s draws depend on the chunks, not on the format
        table = open_data(DataConfig(path=path, columns=columns, chunk_rows=150))
        assert table.names == (None if columns is None else tuple(columns))
        rows = table.x
        assert rows.shape == x.shape and rows.chunks[0] == (150,) * 6
        np.testing.assert_array_equal(np.asarray(rows), x)
        fits[fmt] = dgmm.GaussianMixture(3, random_state=0, init_params="k-means++").fit(rows)
    labels = {fmt: np.asarray(gm.predict(x)) for fmt, gm in fits.items()}
    for fmt in ("parquet", "csv", "npy"):
        np.testing.assert_array_equal(labels[fmt], labels["zarr"])
        np.testing.assert_allclose(fits[fmt].means_, fits["zarr"].means_, rtol=1e-10)


def _validate(tmp_path, capsys, data: dict) -> tuple[int, str]:
    cfg = {
        "data": data,
        "model": {"n_components": [1, 2]},
        "output": {"path": str(tmp_path / "out")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    status = main(["validate", str(tmp_path / "run.yaml")])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("seed", range(6))
def test_bad_columns_get_one_line_naming_them(tmp_path, capsys, seed):
    """Generated column selections: missing names, text columns, an empty or repeated list,
    columns on a format that has none. Each is refused before anything runs, in one line that
    names the problem; a good selection passes."""
    rng = np.random.default_rng(seed)
    paths = _write_all(tmp_path, _rows(seed, 60))
    fmt = str(rng.choice(["parquet", "csv"]))
    missing = f"col{int(rng.integers(100))}"
    cases = {
        "missing": ([*map(str, rng.permutation(COLUMNS)[:2]), missing], missing),
        "text": (["a", "name"], "'name'"),
        "all, with text": (None, "'name'"),
        "empty": ([], "at least one column"),
        "twice": (["a", "b", "a"], "named twice"),
    }
    for what, (columns, needle) in cases.items():
        data = {"path": paths[fmt]} | ({} if columns is None else {"columns": columns})
        status, err = _validate(tmp_path, capsys, data)
        lines = err.strip().splitlines()
        assert status == 2 and len(lines) == 1, (what, err)
        assert needle in lines[0], (what, lines[0])
    for other in ("zarr", "npy"):
        status, err = _validate(tmp_path, capsys, {"path": paths[other], "columns": ["a"]})
        assert status == 2 and "'columns' selects Parquet or CSV columns" in err, err
    status, err = _validate(
        tmp_path,
        capsys,
        {"path": paths[fmt], "columns": [str(c) for c in rng.permutation(COLUMNS)]},
    )
    assert status == 0, err
