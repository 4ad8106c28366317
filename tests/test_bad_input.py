"""Bad input fails early with a ValueError that names the problem."""

import dask.array as da
import numpy as np
import pytest

from dgmm import GaussianMixture

from .conftest import write_zarr


@pytest.fixture
def X(rng):
    return rng.normal(size=(200, 3))


def _with(X, rows, value):
    X = X.copy()
    X[rows, 1] = value
    return X


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda X: _with(X, [17, 40, 41], np.nan),
            r"Input X contains NaN: 3 row\(s\) .* the first at row 17",
        ),
        (
            lambda X: _with(X, [5], np.inf),
            r"Input X contains infinity .* 1 row\(s\) .* the first at row 5",
        ),
        (lambda X: X[:, 0], "Expected 2D array, got 1D array"),
        (lambda X: X[None], "Expected 2D array, got 3D array"),
        (lambda X: X.astype(str), "non-numeric dtype"),
        (lambda X: X[:0], r"Found array with 0 sample\(s\)"),
        (lambda X: X[:, :0], r"Found array with 0 feature\(s\)"),
        (
            lambda X: X[:3],
            "Expected n_samples >= n_components but got n_components = 4, n_samples = 3",
        ),
        (lambda X: X.astype(complex), "Complex data not supported"),
    ],
)
def test_bad_data_numpy(X, make, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(4).fit(make(X))


@pytest.mark.parametrize("chunks", [(50, 3), (200, 3)])
def test_nan_in_dask_input_named_on_first_pass(X, chunks):
    bad = _with(X, [120, 130], np.nan)
    x = da.from_array(bad, chunks=chunks)
    for init in ("random_from_data", "k-means||", "k-means++"):
        with pytest.raises(ValueError, match=r"contains NaN: 2 row\(s\) .* first at row 120"):
            GaussianMixture(2, init_params=init, random_state=0).fit(x)


def test_nan_in_zarr_input(X, tmp_path):
    z = write_zarr(tmp_path / "nan.zarr", _with(X, [199], np.nan), chunks=(64, 3))
    # the first pass names the first bad row, within its block or among all rows
    with pytest.raises(ValueError, match=r"among rows (192|0) to 199, the first at row 199"):
        GaussianMixture(2, random_state=0).fit(z)


def test_missing_path_and_group(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No Zarr array at .*does not exist"):
        GaussianMixture(2).fit(str(tmp_path / "nope.zarr"))
    import zarr

    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("data", shape=(10, 2), dtype="f8")
    with pytest.raises(ValueError, match=r"is a Zarr group, not an array.*g.zarr/data"):
        GaussianMixture(2).fit(str(tmp_path / "g.zarr"))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_components": 0}, "'n_components' parameter must be >= 1"),
        ({"n_components": 2.5}, "'n_components' parameter must be an integer"),
        ({"covariance_type": "round"}, "covariance_type must be one of"),
        ({"tol": -1.0}, "'tol' parameter must be >= 0"),
        ({"reg_covar": -1e-3}, "'reg_covar' parameter must be >= 0"),
        ({"max_iter": -1}, "'max_iter' parameter must be >= 0"),
        ({"n_init": 0}, "'n_init' parameter must be >= 1"),
        ({"init_params": "magic"}, "'init_params' parameter must be one of"),
        ({"weights_init": [0.5, 0.6]}, "should be normalized"),
        ({"weights_init": [0.5, 0.5, 0.0]}, r"'weights' should have the shape of \(2,\)"),
        ({"means_init": np.zeros((2, 5))}, r"'means' should have the shape of \(2, 3\)"),
        (
            {"precisions_init": -np.ones((2, 3)), "covariance_type": "diag"},
            "'diag precision' should be positive",
        ),
        (
            {"precisions_init": np.stack([np.eye(3), -np.eye(3)])},
            "'full precision' should be symmetric, positive-definite",
        ),
    ],
)
def test_bad_parameters(X, params, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**{"n_components": 2, **params}).fit(X)


def test_bad_sample_weight(X):
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(3,\), expected \(200,\)"):
        GaussianMixture(2).fit(X, sample_weight=[1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        GaussianMixture(2).fit(X, sample_weight=-np.ones(200))


def _bad_weights(kind: str, n: int) -> np.ndarray:
    w = np.ones(n)
    if kind == "all zero":
        return np.zeros(n)
    w[137] = {"negative": -0.5, "NaN": np.nan, "infinite": np.inf}[kind]
    return w


@pytest.mark.parametrize("kind", ["negative", "NaN", "infinite", "all zero"])
@pytest.mark.parametrize("input_type", ["numpy", "dask", "dask weights only"])
@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random"])
def test_sample_weight_checked_the_same_for_every_input(X, kind, input_type, init):
    """Weights are refused with the same message whether they come as numpy or Dask."""
    w = _bad_weights(kind, X.shape[0])
    x_in = da.from_array(X, chunks=(50, 3)) if input_type == "dask" else X
    w_in = w if input_type == "numpy" else da.from_array(w, chunks=50)
    if kind == "all zero":
        match = "sample_weight sums to zero"
    elif input_type != "dask":
        match = r"sample_weight must be finite and non-negative: 1 bad weight\(s\) among rows 0 to"
    else:
        match = r"sample_weight must be finite and non-negative: 1 bad weight\(s\) among rows 100"
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2, init_params=init, random_state=0).fit(x_in, sample_weight=w_in)


def test_degenerate_covariance_names_component_and_remedy(rng):
    a = rng.normal(size=(60, 1))
    X = np.hstack([a, 2 * a, -a])  # rank one: every covariance is singular
    with pytest.raises(
        ValueError,
        match=r"Component \d has a covariance .* increase reg_covar "
        r"\(current reg_covar=0\)",
    ):
        GaussianMixture(2, reg_covar=0, random_state=0).fit(X)
    # the remedy works
    assert GaussianMixture(2, reg_covar=1e-3, random_state=0).fit(X).converged_


def test_predict_wrong_feature_count(X):
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.predict(X[:, :2])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        gm.predict(_with(X, [3], np.nan))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        gm.predict(da.from_array(_with(X, [3], np.nan), chunks=(50, 3))).compute()
