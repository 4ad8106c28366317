"""Sweep behaviour: failed candidates are NA or retried, make-data is seeded."""

import numpy as np
import pytest

import dgmm
from dgmm.io import open_zarr_array, zarr_to_dask
from pipelines.data import make_data, mixture_truth
from pipelines.report import summary, table
from pipelines.schema import ConfigError


@pytest.fixture(scope="module")
def collinear(tmp_path_factory):
    """Rank-deficient rows: every full covariance is singular without regularisation."""
    import zarr

    rng = np.random.default_rng(0)
    a = rng.normal(size=(3000, 1)) + rng.integers(0, 3, size=(3000, 1)) * 5
    X = np.hstack([a, 2 * a, rng.normal(size=(3000, 1))])
    path = tmp_path_factory.mktemp("c") / "c.zarr"
    zarr.create_array(str(path), shape=X.shape, chunks=(500, 3), dtype="f8")[:] = X
    return zarr_to_dask(open_zarr_array(path))


def _run(x, **kw):
    return dgmm.select(
        x,
        [1, 2, 3],
        ["full", "diag"],
        reg_covar=0.0,
        init_params="random_from_data",
        random_state=0,
        **kw,
    )


def test_failed_candidates_are_na_and_do_not_stop_the_sweep(collinear):
    found = _run(collinear)
    cells = found.cells()
    full = [c for c in cells if c["covariance_type"] == "full"]
    diag = [c for c in cells if c["covariance_type"] == "diag"]
    assert all(c["error"] and "not positive definite" in c["error"] for c in full)
    assert all(c["bic"] is None and c["icl"] is None for c in full)
    assert all(c["error"] is None and np.isfinite(c["bic"]) for c in diag)
    assert found.best_params_["covariance_type"] == "diag"
    best = next(c for c in cells if c["best_in_cell"] and c["n_components"] == 3)
    assert table(cells, "bic").count("NA") == 3
    assert "3 cell(s) failed (NA)" in summary(cells, best, "bic", [1, 2])


def test_every_candidate_failing_is_one_clear_error(collinear):
    with pytest.raises(
        ValueError, match=r"every candidate failed \(1 of 1 restarts\): .*not positive definite"
    ):
        dgmm.select(collinear, [2], "full", reg_covar=0.0, init_params="random_from_data")


def test_retry_with_larger_reg_covar(collinear):
    found = _run(collinear, retry=dgmm.Retry(factor=10, max_reg_covar=1e-3))
    full = [c for c in found.results if c["covariance_type"] == "full"]
    assert all(c["error"] is None for c in full)
    assert all(c["reg_covar"] >= 1e-6 and c["retries"] >= 1 for c in full)
    capped = _run(collinear, retry=dgmm.Retry(factor=10, max_reg_covar=1e-7))
    assert all(c["error"] for c in capped.results if c["covariance_type"] == "full")


def test_make_data_is_seeded_and_chunked(tmp_path):
    a = make_data(tmp_path / "a.zarr", 2500, 4, 3, seed=5, chunk_rows=1000, dtype="float32")
    b = make_data(tmp_path / "b.zarr", 2500, 4, 3, seed=5, chunk_rows=1000, dtype="float32")
    c = make_data(tmp_path / "c.zarr", 2500, 4, 3, seed=6, chunk_rows=1000, dtype="float32")
    assert a["X"].chunks == (1000, 4) and a["X"].dtype == np.float32
    np.testing.assert_array_equal(a["X"][:], b["X"][:])
    assert not np.array_equal(a["X"][:], c["X"][:])
    labels = a["labels"][:]
    assert labels.min() == 0 and labels.max() == 2
    _, means, _ = mixture_truth(4, 3, 5, 6.0)
    for k in range(3):  # each component's rows sit around its mean
        np.testing.assert_allclose(a["X"][:][labels == k].mean(axis=0), means[k], atol=0.3)
    with pytest.raises(ConfigError, match="already exists; set --overwrite to replace it"):
        make_data(tmp_path / "a.zarr", 10, 2, 2)
