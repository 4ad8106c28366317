"""The uniform row sample, bounded-cost initialisation and multi-resolution EM.

Guarantees checked on generated variants: the sample does not depend on the chunking; every
initialisation but dask-ml's k-means|| reads Dask data at most twice, whatever N and K; EM that
starts on the sample ends at the full-data fixed point, picks the exhaustive run's cell, and is
reproducible and resumable bit for bit.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dgmm
from dgmm.em import DataPasses
from dgmm.inputs import load_input
from dgmm.sampling import SamplePlan, default_sample_size, row_uniforms
from dgmm.validation import DataError

from .conftest import write_zarr
from .helpers import small_default_samples


def _mixture(n: int, d: int, k: int, seed: int = 0, scale: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(k, d))
    stretch = rng.uniform(0.5, 2.0, size=(k, d))
    labels = rng.integers(k, size=n)
    return centres[labels] + rng.normal(size=(n, d)) * stretch[labels]


def _layout(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    """A random row chunking of n rows: uneven sizes, some of one row."""
    cuts = np.sort(rng.choice(np.arange(1, n), size=int(rng.integers(1, 12)), replace=False))
    return tuple(int(c) for c in np.diff(np.concatenate([[0], cuts, [n]])))


def _sample(x, size: int, seed: int, w=None):
    passes = DataPasses.over(load_input(x, w))
    passes.sampling = SamplePlan(size, seed)
    return passes.sample(), passes


def test_the_sample_does_not_depend_on_the_chunking():
    """Generated chunk layouts, sizes and seeds: the same rows, weights and places every time,
    about ``size`` of them, spread uniformly."""
    rng = np.random.default_rng(1)
    for trial in range(12):
        n = int(rng.integers(50, 3000))
        X = rng.normal(size=(n, 3)).astype(rng.choice([np.float32, np.float64]))
        w = rng.uniform(0.1, 2.0, size=n)
        size, seed = int(rng.integers(1, n + 50)), int(rng.integers(2**31))
        ref, _ = _sample(X, size, seed, w)
        for _ in range(3):
            chunks = _layout(rng, n)
            s, _ = _sample(da.from_array(X, chunks=(chunks, 3)), size, seed, da.asarray(w))
            assert np.array_equal(s.index, ref.index), trial
            assert np.array_equal(s.x, X[s.index]) and s.x.dtype == X.dtype
            assert np.array_equal(s.w, w[s.index])
        p = min(1.0, size / n)
        assert abs(len(ref.index) - p * n) <= 5 * np.sqrt(n * p * (1 - p)) + 1, trial
    # uniform over the rows: each tenth of a large range gets its share
    u = row_uniforms(7, 10**12, 200_000)
    assert 0.0 <= u.min() and u.max() < 1.0
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 20_000) < 5 * np.sqrt(20_000))
    # another seed keeps other rows
    a, _ = _sample(np.zeros((5000, 1)) + np.arange(5000)[:, None], 500, 1)
    b, _ = _sample(np.zeros((5000, 1)) + np.arange(5000)[:, None], 500, 2)
    assert not np.array_equal(a.index, b.index)


def test_a_cells_rows_of_a_larger_sample_are_the_sample_its_own_size_draws():
    """Generated data, chunkings, weights, seeds and sizes: the rows a larger draw keeps
    for a smaller size are exactly, in the same order, what a draw of that size keeps; so a
    cell fitted on them is fitted as in a run of its own."""
    rng = np.random.default_rng(5)
    for trial in range(12):
        n = int(rng.integers(50, 3000))
        X = rng.normal(size=(n, 2)).astype(rng.choice([np.float32, np.float64]))
        w = None if trial % 2 else rng.uniform(0.1, 2.0, size=n)
        small, large = np.sort(rng.integers(1, n + 50, size=2))
        seed = int(rng.integers(2**31))
        x = da.from_array(X, chunks=(_layout(rng, n), 2))
        wd = None if w is None else da.asarray(w)
        own, _ = _sample(x, int(small), seed, wd)
        _, passes = _sample(x, int(large), seed, wd)
        part = passes.sample(int(small))
        assert np.array_equal(part.index, own.index), trial
        assert np.array_equal(part.x, own.x) and part.fraction == own.fraction
        assert (part.w is None) == (w is None) and (w is None or np.array_equal(part.w, own.w))
        assert part.weight_total == own.weight_total
        assert passes.n_passes == 1  # the part is taken from the sample drawn, not drawn


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    grids=st.lists(
        st.tuples(
            st.lists(st.integers(1, 5), min_size=1, max_size=5, unique=True),
            st.lists(st.sampled_from(["full", "diag"]), min_size=1, max_size=2, unique=True),
        ),
        min_size=2,
        max_size=2,
    ),
    strategy=st.sampled_from(["exact", "sample"]),
    n_init=st.integers(1, 3),
)
def test_a_cells_fit_does_not_depend_on_its_grid(grids, strategy, n_init):
    """Generated pairs of grids with the default sample: every candidate of a cell in both has
    the same row in both, bit for bit (its start, its restarts' judgement on its rows, whether
    it starts on the sample, its fit), unless the judgement of cells against each other, which
    belongs to the grid, stopped its cell in one of them. Sizes scaled down so that the cells'
    samples differ (200 to 580 rows) and K = 5 full is on data under twice its rows."""
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(m, [1.0, 0.6], (350, 2)) for m in (0.0, 3.5, 8.0)])
    x = da.from_array(X[rng.permutation(len(X))], chunks=400)
    kw = dict(random_state=0, strategy=strategy, n_init=n_init)
    found = []
    with small_default_samples():
        for ks, types in grids:
            found.append(dgmm.select(x, ks, types, **kw).results)
    rows = [{(r["covariance_type"], r["n_components"], r["restart"]): r for r in f} for f in found]
    shared = set(rows[0]) & set(rows[1])
    for key in shared:
        a, b = rows[0][key], rows[1][key]
        if "cell stopped" in (a["status"], b["status"]):
            continue
        assert a == b, key


def test_the_sample_pass_profiles_and_refuses_nonfinite_rows(tmp_path):
    X = _mixture(4000, 3, 2)
    X[2345, 1] = np.nan
    x = da.from_array(X, chunks=700)
    with pytest.raises(DataError, match="2345"):
        _sample(x, 400, 0)
    X[2345, 1] = 0.0
    s, passes = _sample(da.from_array(X, chunks=700), 400, 0)
    assert passes.n_passes == 1 and passes.checked
    assert passes.sample_profile.n == 4000 and np.isfinite(s.x).all()


def test_default_sample_size_is_bounded():
    rng = np.random.default_rng(2)
    for _ in range(50):
        d = int(rng.integers(1, 2048))
        cells = [
            (str(rng.choice(["full", "tied", "diag", "spherical"])), int(rng.integers(1, 64)))
            for _ in range(int(rng.integers(1, 6)))
        ]
        size = default_sample_size(cells, d)
        assert 1 <= size <= 100_000 and size * d * 8 <= 256 * 2**20


class _ChunkReads(Callback):
    """Whole-chunk reads of a Zarr array (slices of the head rows are fetches, not reads)."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        name = key[0] if isinstance(key, tuple) else str(key)
        if name.startswith("from-zarr-") and not name.startswith("from-zarr-getitem"):
            self.reads += 1


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_initialisation_reads_dask_data_at_most_twice(tmp_path, init):
    """Generated K, restarts, types and chunkings: every initialisation of Dask input reads
    each chunk at most twice (the sample, then the starting statistics), counted as real
    chunk reads of a Zarr store, and the sample it holds stays bounded."""
    rng = np.random.default_rng(3)
    X = _mixture(6000, 4, 5, seed=3)
    for trial in range(3):
        rows = int(rng.integers(200, 1500))
        z = write_zarr(tmp_path / f"x{trial}.zarr", X, (rows, 4))
        ks = sorted({int(k) for k in rng.integers(1, 12, size=3)})
        types = list(rng.choice(["full", "tied", "diag", "spherical"], size=2, replace=False))
        n_chunks = -(-len(X) // rows)
        with _ChunkReads() as counter, dask.config.set(scheduler="threads"):
            found = dgmm.select(
                z,
                ks,
                types,
                n_init=int(rng.integers(1, 4)),
                init_params=init,
                max_iter=0,
                random_state=trial,
                sample_size=1000,
            )
        init_passes = found.n_passes_ - 1  # all but the scoring pass
        assert init_passes == (2 if init in ("kmeans", "k-means++") else 1), trial
        assert counter.reads == (init_passes + 1) * n_chunks, trial


@pytest.mark.long
def test_multi_resolution_em_ends_where_exact_em_does():
    """Generated mixtures: the sample strategy selects the exhaustive sweep's cell with a
    log-likelihood at least as good (to 1e-4 per row) in fewer passes, and a GaussianMixture
    fitted that way reaches the exact fit's fixed point."""
    rng = np.random.default_rng(4)
    for trial in range(2):
        k, d = int(rng.integers(2, 5)), int(rng.integers(2, 5))
        X = _mixture(60_000, d, k, seed=10 + trial, scale=6.0)
        x = da.from_array(X, chunks=7_000)
        kw = dict(n_init=2, init_params="k-means++", random_state=trial, tol=1e-4)
        grid = (range(1, k + 3), ["full", "diag"])
        with dask.config.set(scheduler="threads"):
            exact = dgmm.select(x, *grid, **kw)
            fast = dgmm.select(x, *grid, strategy="sample", sample_size=6000, **kw)
        assert fast.best_params_ == exact.best_params_, trial
        e = exact.best_estimator_.score(X)
        f = fast.best_estimator_.score(X)
        assert f >= e - 1e-4, (trial, f, e)
        assert fast.n_passes_ < exact.n_passes_
        assert all(r["sample_iter"] > 0 for r in fast.results if r["error"] is None)
        stopped = [r for r in fast.results if (r["error"] or "").startswith("stopped")]
        assert all(r["log_likelihood"] is None and not r["best_in_cell"] for r in stopped)
        cells = [r for r in stopped if "estimated BIC trails" in r["error"]]
        chosen = next(
            r
            for r in fast.cells()
            if r["best_in_cell"]
            and r["bic"] is not None
            and (r["covariance_type"], r["n_components"])
            == (fast.best_params_["covariance_type"], fast.best_params_["n_components"])
        )
        shown = [r for r in fast.cells() if r["estimate"]]
        assert shown and all(r["estimate"]["bic"] > chosen["bic"] for r in shown)
        assert cells and all(
            (r["covariance_type"], r["n_components"])
            != (fast.best_params_["covariance_type"], fast.best_params_["n_components"])
            for r in cells
        )
        # without cell screening every cell is scored to the end, and the choice is the same
        whole = dgmm.select(x, *grid, strategy="sample", sample_size=6000, screen_cells=False, **kw)
        assert whole.best_params_ == exact.best_params_
        assert not any("estimated" in (r["error"] or "") for r in whole.results)
    gm = dgmm.GaussianMixture(3, covariance_type="full", tol=1e-8, max_iter=500, random_state=0)
    exact_fit = gm.fit(x)
    fast_fit = dgmm.GaussianMixture(**{**gm.get_params(), "strategy": "sample"}).fit(x)
    assert fast_fit.converged_ and fast_fit.n_iter_ < exact_fit.n_iter_
    order = [np.argsort(m[:, 0]) for m in (exact_fit.means_, fast_fit.means_)]
    assert np.allclose(exact_fit.means_[order[0]], fast_fit.means_[order[1]], rtol=1e-5, atol=1e-5)
    assert abs(exact_fit.lower_bound_ - fast_fit.lower_bound_) < 1e-7
    # restarts: those stopped on the sample are left out, the best one is kept
    many = dgmm.GaussianMixture(
        4, n_init=4, strategy="sample", sample_size=6000, random_state=1, verbose=2
    ).fit(x)
    assert many.converged_ and np.isfinite(many.lower_bound_)


def test_multi_resolution_is_reproducible_and_resumes_bitwise(tmp_path):
    """The same seed gives bitwise the same selection; a run stopped after any pass resumes to
    the uninterrupted result, bit for bit."""
    X = _mixture(30_000, 3, 3, seed=5)
    x = da.from_array(X, chunks=4_000)
    kw = dict(n_init=3, init_params="kmeans", random_state=7, strategy="sample", sample_size=3000)
    grid = ([1, 2, 3, 4], ["full", "spherical"])
    with dask.config.set(scheduler="threads"):
        ref = dgmm.select(x, *grid, **kw)
        twice = dgmm.select(x, *grid, **kw)
        assert [r["log_likelihood"] for r in twice.results] == [
            r["log_likelihood"] for r in ref.results
        ]
        # another chunking: the same sample, so the same decisions; sums in another order
        rechunked = dgmm.select(da.from_array(X, chunks=2_500), *grid, **kw)
        assert [r["error"] for r in rechunked.results] == [r["error"] for r in ref.results]
        for a, b in zip(rechunked.results, ref.results, strict=True):
            if b["log_likelihood"] is not None:
                assert a["log_likelihood"] == pytest.approx(b["log_likelihood"], rel=1e-9)

        class Stop(Exception):
            pass

        for stop_at in (1, 2, ref.n_passes_ - 2):
            ckpt = tmp_path / f"c{stop_at}.npz"
            seen = []

            def progress(report, seen=seen, stop_at=stop_at):
                seen.append(report)
                if len(seen) == stop_at:
                    raise Stop

            with pytest.raises(Stop):
                dgmm.select(x, *grid, checkpoint=ckpt, progress=progress, **kw)
            resumed = dgmm.select(x, *grid, checkpoint=ckpt, **kw)
            assert [r["log_likelihood"] for r in resumed.results] == [
                r["log_likelihood"] for r in ref.results
            ], stop_at
            assert [r["error"] for r in resumed.results] == [r["error"] for r in ref.results]
            assert (resumed.resumed_from is None) == (stop_at == 1)


def test_small_data_runs_exact():
    """Data less than twice the sample is fitted exactly as the exhaustive strategy does."""
    X = _mixture(3000, 2, 3, seed=6)
    kw = dict(n_init=2, random_state=0)
    a = dgmm.select(X, [2, 3], ["full", "tied"], **kw)
    b = dgmm.select(X, [2, 3], ["full", "tied"], strategy="sample", sample_size=1500, **kw)
    assert [r["bic"] for r in a.results] == [r["bic"] for r in b.results]
    assert all(r["sample_iter"] == 0 for r in b.results)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"strategy": "fast"}, "'strategy' parameter must be one of"),
        ({"sample_size": 0}, "'sample_size' parameter must be >= 1"),
        ({"sample_size": 2.5}, "sample_size"),
    ],
)
def test_bad_strategy_settings_are_named(kw, match):
    X = _mixture(500, 2, 2)
    with pytest.raises(ValueError, match=match):
        dgmm.select(X, [1, 2], **kw)
    with pytest.raises(ValueError, match=match):
        dgmm.GaussianMixture(2, **kw).fit(X)


def test_a_sample_smaller_than_k_is_named():
    X = _mixture(5000, 2, 2)
    with pytest.raises(ValueError, match="fewer rows than n_components=40"):
        dgmm.GaussianMixture(40, sample_size=10, random_state=0).fit(da.from_array(X, chunks=999))


def _standardised(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(axis=0)) / X.std(axis=0)


@pytest.mark.long
def test_pipeline_defaults_on_classic_datasets(seed_example):
    """With the run's defaults (`ModelConfig`): on the seed example (its sample a third of the
    rows, so EM does start there) and on standardised iris, wine and breast cancer (small:
    fitted exactly), the sample strategy selects the exhaustive strategy's cell; on wine its
    pick is at least as good in BIC as scikit-learn's own sweep (n_init 5, k-means init); on
    iris the selected model has no degenerate component."""
    from sklearn.datasets import load_breast_cancer, load_iris, load_wine
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from pipelines.schema import ModelConfig

    m = ModelConfig(n_components=[1])
    kw = dict(n_init=m.n_init, init_params=m.init, tol=m.tol, random_state=m.random_state)
    types = ["full", "tied", "diag", "spherical"]
    sets = {
        "seed example": (seed_example[0], len(seed_example[0]) // 3),
        "iris": (_standardised(load_iris().data), None),
        "wine": (_standardised(load_wine().data), None),
        "breast cancer": (_standardised(load_breast_cancer().data), None),
    }
    for name, (X, size) in sets.items():
        ks = range(1, 7)
        fast = dgmm.select(X, ks, types, strategy=m.strategy, sample_size=size, **kw)
        if size is not None:
            assert any(r["sample_iter"] for r in fast.results)
            exact = dgmm.select(X, ks, types, **kw)
            assert fast.best_params_ == exact.best_params_, name
        else:  # fitted exactly: `test_small_data_runs_exact`
            assert not any(r["sample_iter"] for r in fast.results)
        if name == "wine":
            sk = min(
                SkGaussianMixture(k, covariance_type=t, n_init=5, random_state=0).fit(X).bic(X)
                for t in types
                for k in ks
            )
            assert fast.best_estimator_.bic(X) <= sk * (1 + 1e-12), (fast.best_params_, sk)
        if name == "iris":
            gm = fast.best_estimator_
            assert gm._params().degenerate(len(X), gm.reg_covar) is None


def test_the_sample_fits_the_workers_memory_limit():
    """Generated shapes, dtypes, weights, chunkings and worker limits: the sample a run plans
    fits a worker alongside its chunk (the last combine holds it twice); a given sample_size
    that would not fit is refused by name; one real sample's bytes are within the model."""
    from dgmm._sweep import plan_sample
    from dgmm.estep import TEMPORARY_BYTES
    from dgmm.memory import (
        SAMPLE_HELD,
        WORKER_BASELINE_BYTES,
        WORKER_BUDGET_FRACTION,
        sample_row_bytes,
        task_budget,
    )

    rng = np.random.default_rng(5)
    for trial in range(60):
        d = int(rng.integers(1, 3000))
        chunk_rows = int(rng.integers(1, min(10**6, 2**25 // d) + 1))  # up to 256 MiB
        n = chunk_rows * int(rng.integers(1, 500)) - int(rng.integers(chunk_rows))
        dtype = np.dtype(rng.choice(["float32", "float64", "int16", "uint8"]))
        x = da.zeros((n, d), dtype=dtype, chunks=(chunk_rows, d))
        w = da.ones(n, chunks=chunk_rows) if rng.random() < 0.5 else None
        passes = DataPasses.over(load_input(x, w))
        passes.memory_limit = int(rng.integers(256, 16 * 1024)) * 2**20
        cells = [("full", int(rng.integers(1, 40))), ("diag", int(rng.integers(1, 40)))]
        plan = plan_sample(passes, cells, None, trial)
        row = sample_row_bytes(d, dtype, w is not None)
        held = SAMPLE_HELD * min(plan.size, n) * row
        chunk = chunk_rows * d * passes.dtype.itemsize
        budget = task_budget(passes.memory_limit, chunk)
        assert held <= budget, trial
        if budget > 16 * 2**20:  # above the floor every pass gets, the worker is not overrun
            usable = WORKER_BUDGET_FRACTION * passes.memory_limit - WORKER_BASELINE_BYTES
            assert held + chunk + TEMPORARY_BYTES <= usable, trial
        assert plan.size <= default_sample_size(cells, d)
        cap = passes.max_sample_rows()
        if cap < n:
            with pytest.raises(ValueError, match=rf"sample_size={cap + 1} does not fit.*MiB"):
                plan_sample(passes, cells, cap + 1, trial)
        assert plan_sample(passes, cells, cap, trial).size == cap  # a size that fits stands
    # a real sample under a tight limit: its parts and their concatenation fit the budget
    X = np.random.default_rng(0).normal(size=(200_000, 64)).astype(np.float32)
    passes = DataPasses.over(load_input(da.from_array(X, chunks=(10_000, 64))))
    passes.memory_limit = 300 * 2**20
    passes.sampling = plan_sample(passes, [("full", 10)], None, 0)
    assert passes.sampling.size < default_sample_size([("full", 10)], 64)
    s = passes.sample()
    held = 2 * (s.x.nbytes + s.index.nbytes)
    assert held <= task_budget(passes.memory_limit, 10_000 * 64 * 4)
    assert abs(len(s.index) - passes.sampling.size) < 5 * np.sqrt(passes.sampling.size)


def test_a_cell_unconverged_on_the_sample_gets_room_to_improve():
    """A cell whose fit on the sample ended unconverged (at ``max_iter``) is stopped only if it
    trails by more than 3 standard errors after `UNCONVERGED_ROOM` times its last gain per
    row."""
    from dgmm._candidates import Candidate
    from dgmm._screening import UNCONVERGED_ROOM, SampleScores, trailing_cells
    from dgmm.em import EMState

    rng = np.random.default_rng(5)
    centres = rng.normal(scale=4, size=(3, 2))
    X = centres[rng.integers(3, size=4_000)] + rng.normal(size=(4_000, 2))
    sample, n_rows = X[:1_000], 40_000

    def cell(k: int, gain: float | None) -> Candidate:
        gm = dgmm.GaussianMixture(k, random_state=0).fit(sample)
        c = Candidate("full", k, 0, gm.reg_covar)
        c.state = EMState(gm._params(), gm.reg_covar, gm.lower_bound_, n_iter=gm.n_iter_)
        c.state.converged = gain is None
        c.state.lower_bounds = [gm.lower_bound_ - (gain or 0.0), gm.lower_bound_]
        return c

    stopped, _ = trailing_cells(
        [cell(3, None), cell(1, None)], SampleScores(sample, None), n_rows, "bic", set()
    )
    assert len(stopped) == 1
    margin = float(next(iter(stopped.values())).split(" by ")[1].split(" ")[0])
    for room in (0.5, 2.0):  # room per row against the margin it must eat
        gain = room * margin / (2 * n_rows * UNCONVERGED_ROOM)
        cands = [cell(3, None), cell(1, gain)]
        stopped, _ = trailing_cells(cands, SampleScores(sample, None), n_rows, "bic", set())
        assert bool(stopped) == (room < 1.0), room


def test_a_slow_fit_on_the_sample_is_judged_only_once_it_ends():
    """A cell is judged once EM on the sample has ended, not part-way: from a random start a
    full K=3 fit gains little per iteration for tens of iterations on the sample, then
    overtakes spherical K=3 (judged at its 10th iteration it trailed by 15 standard errors);
    the selection is the exhaustive strategy's."""
    X = _mixture(6000, 3, 3, seed=2, scale=3.0)
    kw = dict(n_init=1, random_state=0, tol=1e-9, max_iter=60, init_params="random")
    fast = dgmm.select(X, [1, 3], ["full", "spherical"], strategy="sample", sample_size=1500, **kw)
    exact = dgmm.select(X, [1, 3], ["full", "spherical"], **kw)
    assert fast.best_params_ == exact.best_params_ == {"n_components": 3, "covariance_type": "full"}
    assert fast.n_passes_ < exact.n_passes_
