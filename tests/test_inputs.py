"""numpy, Dask and Zarr input give the same fit, whatever the chunking."""

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from dgmm import GaussianMixture

from .conftest import COV_TYPES, COV_TYPES_TIED_SLOW, explicit_init, write_zarr

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

UNEVEN_17 = (40, 7, 150, 33, 90, 61, 120, 12, 99, 100, 80, 150, 66, 91, 101, 200, 100)


def _fit(X, cov_type, data=None):
    """Fit with an explicit init taken from ``data`` (the numpy copy of ``X``)."""
    init = explicit_init(np.asarray(X if data is None else data), 4, cov_type)
    return GaussianMixture(4, covariance_type=cov_type, tol=1e-6, max_iter=60, **init).fit(X)


def _close(a, b, tol):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=tol, atol=tol)
    assert a.n_iter_ == b.n_iter_
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=tol)


@pytest.mark.parametrize("cov_type", COV_TYPES_TIED_SLOW)
def test_numpy_dask_zarr_same_fit(cov_type, blobs, tmp_path):
    X, _ = blobs
    assert sum(UNEVEN_17) == len(X)
    ref = _fit(X, cov_type)
    one = _fit(da.from_array(X, chunks=(len(X), 3)), cov_type, X)
    uneven = _fit(da.from_array(X, chunks=(UNEVEN_17, 3)), cov_type, X)
    z = write_zarr(tmp_path / "x.zarr", X, chunks=(200, 3))
    from_zarr = _fit(z, cov_type, X)
    from_path = _fit(str(tmp_path / "x.zarr"), cov_type, X)
    assert len(uneven.means_) == 4
    _close(one, uneven, 1e-10)
    _close(ref, one, 1e-10)
    _close(ref, from_zarr, 1e-10)
    _close(ref, from_path, 1e-10)


def test_zarr_chunked_along_columns_is_rechunked(blobs, tmp_path):
    X, _ = blobs
    z = write_zarr(tmp_path / "cols.zarr", X, chunks=(300, 1))
    _close(_fit(X, "full"), _fit(z, "full", X), 1e-10)


def test_lazy_outputs_for_dask_input(blobs, tmp_path):
    X, _ = blobs
    gm = _fit(X, "diag")
    z = write_zarr(tmp_path / "x.zarr", X, chunks=(250, 3))
    for method in ("predict", "predict_proba", "score_samples"):
        lazy = getattr(gm, method)(z)
        assert isinstance(lazy, da.Array), method
        assert lazy.chunks[0] == (250,) * 6
        np.testing.assert_allclose(lazy.compute(), getattr(gm, method)(X), rtol=1e-12)
    assert gm.score(z) == pytest.approx(gm.score(X), rel=1e-12)
    assert gm.bic(z) == pytest.approx(gm.bic(X), rel=1e-12)


@pytest.mark.parametrize("init", ["kmeans", "k-means||", "k-means++", "random", "random_from_data"])
def test_dask_inits_reproducible(init, blobs):
    X, y = blobs
    x = da.from_array(X, chunks=(300, 3))
    a = GaussianMixture(4, init_params=init, random_state=3, n_init=2).fit(x)
    b = GaussianMixture(4, init_params=init, random_state=3, n_init=2).fit(x)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.lower_bound_ == b.lower_bound_
    # the blobs are well separated: every init finds them
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, a.predict(X)) > 0.95


def test_random_init_does_not_depend_on_chunking(blobs):
    X, _ = blobs
    a = GaussianMixture(4, init_params="random", random_state=0, max_iter=3)
    b = GaussianMixture(4, init_params="random", random_state=0, max_iter=3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.fit(da.from_array(X, chunks=(1500, 3)))
        b.fit(da.from_array(X, chunks=(UNEVEN_17, 3)))
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_integer_weights_equal_repeated_rows(cov_type, blobs):
    X, _ = blobs
    counts = np.random.default_rng(1).integers(0, 4, size=len(X))
    init = explicit_init(X, 4, cov_type)
    kw = dict(covariance_type=cov_type, tol=1e-8, max_iter=300, **init)
    weighted = GaussianMixture(4, **kw).fit(X, sample_weight=counts)
    repeated = GaussianMixture(4, **kw).fit(np.repeat(X, counts, axis=0))
    _close(weighted, repeated, 1e-8)
    lazy = GaussianMixture(4, **kw).fit(
        da.from_array(X, chunks=(UNEVEN_17, 3)), sample_weight=counts
    )
    _close(weighted, lazy, 1e-10)


def test_first_pass_counts(blobs):
    """An explicit init reads no data for initialisation; every EM iteration is one pass."""
    X, _ = blobs
    gm = _fit(da.from_array(X, chunks=(300, 3)), "full", X)
    assert gm.n_passes_ == gm.n_iter_
    gm = GaussianMixture(
        4, init_params="random_from_data", n_init=5, random_state=0, tol=0, max_iter=5
    )
    with pytest.warns(ConvergenceWarning):
        gm.fit(X)
    assert gm.n_passes_ == 1 + 5  # five restarts share the init pass and every EM pass


@pytest.mark.parametrize("seed", range(12))
def test_small_zarr_chunks_are_read_several_to_a_block(tmp_path, seed):
    """Whatever the stored chunking, the Dask view's blocks are whole stored chunks, no bigger
    than the target unless one chunk is, at least MIN_BLOCKS of them where the chunks allow,
    and they read the stored values; a corrupt chunk inside a block is named exactly."""
    import zarr

    from dgmm.io import MIN_BLOCKS, TARGET_BLOCK_BYTES, ZarrChunkError, zarr_to_dask

    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 40))
    if seed % 2:  # any chunking
        chunk = int(rng.choice([1, 3, 7, 64, 500, 4096, 40_000]))
        n_stored = int(rng.integers(1, max(2, min(1500, 200_000 // chunk))))
    else:  # many small chunks: grouped
        chunk, n_stored = int(rng.choice([1, 3, 7, 64])), int(rng.integers(200, 1500))
    n = (n_stored - 1) * chunk + int(rng.integers(1, chunk + 1))
    dtype = rng.choice(["float32", "float64", "int16"])
    data = rng.normal(size=(n, d)).astype(dtype)
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=(n, d), chunks=(chunk, d), dtype=dtype)
    z[:] = data
    x = zarr_to_dask(zarr.open_array(str(tmp_path / "x.zarr"), mode="r"))
    rows = x.chunks[0]
    n_stored = -(-n // chunk)
    assert sum(rows) == n and x.chunks[1] == (d,)
    assert all(r % chunk == 0 for r in rows[:-1])
    item = 4 if dtype == "float32" else 8  # as computed: other dtypes are read as float64
    assert max(rows) * d * item <= max(TARGET_BLOCK_BYTES, chunk * d * item)
    assert len(rows) >= min(n_stored, MIN_BLOCKS)
    np.testing.assert_array_equal(x.compute(scheduler="sync"), data)
    assert seed % 2 or rows[0] > chunk
    if len(rows) > 1 and rows[0] > chunk:  # several chunks in the first block: break its last
        bad = rows[0] // chunk - 1
        (tmp_path / "x.zarr" / "c" / str(bad) / "0").write_bytes(b"\x00garbage" * 8)
        with pytest.raises(ZarrChunkError, match=rf"chunk c/{bad}/0 is corrupt"):
            x.blocks[0].compute(scheduler="sync")


@pytest.mark.parametrize("seed", range(6))
def test_many_tiny_dask_blocks_get_a_warning_with_a_rechunk_that_silences_it(seed):
    import re
    import warnings

    from dask.array.core import PerformanceWarning

    from dgmm.inputs import MANY_BLOCKS, load_input

    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 20))
    n_blocks = int(rng.integers(MANY_BLOCKS + 1, 5 * MANY_BLOCKS))
    x = da.ones((n_blocks * int(rng.integers(1, 30)), d), chunks=(-1, d))
    x = x.rechunk({0: x.shape[0] // n_blocks})
    with pytest.warns(PerformanceWarning, match="rechunk to fewer, larger blocks") as rec:
        load_input(x)
    rows = int(re.search(r"rechunk\(\{0: (\d+)\}\)", str(rec[0].message)).group(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerformanceWarning)
        load_input(x.rechunk({0: rows}))
        load_input(da.ones((x.shape[0], d), chunks=(max(1, x.shape[0] // 500), d)))
