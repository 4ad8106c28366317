"""The report's plots show what was chosen: each criterion panel stars its own minimum."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from pipelines.report import criteria_figure, table

CRITERIA = ("bic", "aic", "icl")


def _cells(rng: np.random.Generator) -> list[dict]:
    types = list(rng.permutation(["full", "tied", "diag", "spherical"])[: rng.integers(1, 5)])
    ks = sorted(rng.choice(np.arange(1, 30), size=int(rng.integers(1, 10)), replace=False))
    scale = 10.0 ** rng.uniform(0, 7)
    cells = []
    for t in types:
        for k in ks:
            values = {c: float(rng.normal(scale=scale) + scale * 10) for c in CRITERIA}
            u, estimate = rng.random(), None
            error = "degenerate" if u < 0.15 else None
            status = "degenerate" if u < 0.15 else "converged"
            if 0.15 <= u < 0.4:  # stopped after EM on the sample, with its estimated criteria
                error = "stopped: on the sample its estimated BIC trails"
                status = "cell stopped"
                estimate = {c: float(rng.normal(scale=scale) + scale * 12) for c in CRITERIA}
            cells.append(
                {
                    "covariance_type": t,
                    "n_components": int(k),
                    "status": status,
                    "error": error,
                    "estimate": estimate,
                    **values,
                }
            )
    if all(c["error"] for c in cells):
        cells[0].update(error=None, status="converged")
    return cells


@pytest.mark.parametrize("seed", range(12))
def test_each_panel_stars_its_own_minimum(seed):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    cells = _cells(rng)
    criterion = str(rng.choice(CRITERIA))
    fig = criteria_figure(cells, criterion)
    try:
        for ax, crit in zip(fig.axes, CRITERIA, strict=True):
            ok = [c for c in cells if c["error"] is None]
            low = min(ok, key=lambda c: c[crit])
            stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
            assert len(stars) == 1
            (x,), (y,) = stars[0].get_xdata(), stars[0].get_ydata()
            assert (x, y) == (low["n_components"], 0.0)
            assert f"{low['covariance_type']}, K={low['n_components']}" in stars[0].get_label()
            # every drawn point is its cell's value minus the panel's lowest: nothing below 0
            for line in ax.get_lines():
                if line is not stars[0]:
                    t = line.get_label()
                    if t.endswith(" (estimated on the sample)"):  # hollow, no line
                        t = t.removesuffix(" (estimated on the sample)")
                        assert line.get_markerfacecolor() == "none"
                        want = sorted(
                            (c["n_components"], c["estimate"][crit] - low[crit])
                            for c in cells
                            if c["covariance_type"] == t and c["error"] and c["estimate"]
                        )
                        assert list(line.get_xdata()) == [k for k, _ in want]
                        assert list(line.get_ydata()) == pytest.approx([v for _, v in want])
                        continue
                    want = sorted(
                        (c["n_components"], c[crit] - low[crit])
                        for c in ok
                        if c["covariance_type"] == t
                    )
                    assert list(line.get_xdata()) == [k for k, _ in want]
                    assert list(line.get_ydata()) == pytest.approx([v for _, v in want])
            assert ("selects the model" in ax.get_title()) is (crit == criterion)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("seed", range(8))
def test_table_marks_estimates_and_failures(seed):
    """Every cell appears once: its value, ``~estimate`` when stopped on the sample, else NA;
    the footnote explains ``~`` exactly when one is shown."""
    rng = np.random.default_rng(seed)
    cells = _cells(rng)
    criterion = str(rng.choice(CRITERIA))
    text = table(cells, criterion)
    lines = text.splitlines()
    types = lines[0].split()[1:]
    grid = {}
    for line in lines[1:]:
        if line.startswith("~:"):
            continue
        k, *vals = line.split()
        grid.update({(t, int(k)): v for t, v in zip(types, vals, strict=True)})
    for c in cells:
        got = grid[(c["covariance_type"], c["n_components"])]
        if c["error"] is None:
            assert got == f"{c[criterion]:.2f}"
        elif c["estimate"]:
            assert got == f"~{c['estimate'][criterion]:.2f}"
        else:
            assert got == "NA"
    assert lines[-1].startswith("~:") is any(c["error"] and c["estimate"] for c in cells)


@pytest.mark.parametrize("seed", range(6))
def test_summary_counts_stopped_cells_apart_from_failures(seed):
    """Cells stopped after EM on the sample are counted as such, never as failed."""
    from pipelines.report import summary

    rng = np.random.default_rng(seed)
    cells = _cells(rng)
    for c in cells:
        c.update(log_likelihood=-1.0, n_parameters=3)
    best = min((c for c in cells if c["error"] is None), key=lambda c: c["bic"])
    text = summary(cells, best, "bic", [1], candidates=cells)
    n_failed = sum(c["error"] == "degenerate" for c in cells)
    n_stopped = sum(c["status"] == "cell stopped" for c in cells)
    assert ("cell(s) stopped after EM on the sample" in text) is (n_stopped > 0)
    if n_stopped:
        assert f"{n_stopped} cell(s) stopped" in text
    assert "failed (NA)" not in text  # every failure here is degenerate, named as such
    assert (f"{n_failed} cell(s) NA, every restart a degenerate fit" in text) is (n_failed > 0)


@pytest.mark.parametrize("seed", range(6))
def test_weights_plot_shows_every_type_stopped_ones_as_sample_fits(seed):
    """Every covariance type with weights appears in the variational weights plot: fitted
    types as they are, types stopped after the sample by their sample fit, named so; a type
    with no weights (failed) is left out."""
    from pipelines.report import weights_figure

    rng = np.random.default_rng(seed)
    cells, expect = [], {}
    for name in ["full", "tied", "diag", "spherical"]:
        w = rng.dirichlet(np.ones(int(rng.integers(2, 9))))
        used = int((w > 0.01).sum())
        fate = rng.choice(["fitted", "stopped", "failed"])
        row = {"covariance_type": name, "status": "converged", "error": None, "estimate": None}
        if fate == "fitted":
            row.update(weights=w.tolist(), effective_components=used)
            expect[name] = f"{name}: {used} used"
        elif fate == "stopped":
            row["error"] = "stopped: on the sample its estimated BIC trails full,8's"
            row["status"] = "cell stopped"
            row["estimate"] = {"bic": 1.0, "weights": w.tolist(), "effective_components": used}
            expect[name] = f"{name}: {used} used (stopped; its sample fit)"
        else:
            row["error"] = "Fitting the mixture model failed"
            row["status"] = "failed"
        cells.append(row)
    fig = weights_figure(cells, 0.01)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sorted(labels) == sorted([*expect.values(), "threshold 0.01"])
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("seed", range(3))
def test_plots_draw_a_uniform_sample_of_a_table_sorted_by_cluster(seed):
    """Rows sorted by cluster, in many chunks: the plotted rows come from every cluster in
    proportion (from the selection's sample, or drawn when it has none), and the key lists
    only clusters drawn."""
    import dask.array as da

    import dgmm
    from pipelines.report import clusters_figure, shown_rows

    rng = np.random.default_rng(seed)
    k, per = 5, int(rng.integers(4000, 9000))
    centres = rng.normal(scale=8.0, size=(k, 3))
    x = np.concatenate([c + rng.normal(size=(per, 3)) for c in centres])  # sorted by cluster
    xd = da.from_array(x, chunks=int(rng.integers(300, 1500)))
    found = dgmm.select(xd, [k], "full", random_state=seed, max_iter=20)
    assert found.sample is not None  # k-means on Dask input seeds on a uniform sample
    truth = np.repeat(np.arange(k), per)
    for sample in (found.sample, None):
        rows, how = shown_rows(sample, xd, 2000, seed)
        assert (how == "uniform sample") is (sample is not None or xd.numblocks[0] <= 64), how
        assert len(rows) == min(2000, len(sample.x) if sample is not None else len(x))
        # which cluster each drawn row came from: its nearest true centre
        came = np.argmin(((rows[:, None, :] - centres) ** 2).sum(axis=2), axis=1)
        counts = np.bincount(came, minlength=k) / len(rows)
        if how == "uniform sample":
            assert np.all(np.abs(counts - 1 / k) < 0.05), counts
        else:  # rows of a bounded number of chunks drawn by size: every cluster, near its share
            assert how == "sample of 64 chunks" and np.all(counts > 0.5 / k), counts
        assert np.isin(rows, x).all()
    model = found.best_estimator_
    few = x[truth < 2][:: per // 50]  # rows of two clusters only
    fig = clusters_figure(few, model, len(x))
    keys = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    drawn = np.unique(model.predict(few))
    assert keys == [f"cluster {j} ({int((model.predict(few) == j).sum())})" for j in drawn]
    assert f"{k - len(drawn)} cluster(s) with no row among them" in fig.axes[0].get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("seed", range(6))
def test_the_report_reads_the_status_never_the_message(seed):
    """Scrambling every row's message text changes nothing the report says."""
    from pipelines.report import summary, table

    rng = np.random.default_rng(seed)
    cells = _cells(rng)
    for c in cells:
        c.update(log_likelihood=-1.0, n_parameters=3)
    best = min((c for c in cells if c["status"] == "converged"), key=lambda c: c["bic"])
    before = summary(cells, best, "bic", [1], candidates=cells), table(cells, "bic")
    for c in cells:
        if c["error"] is not None:
            c["error"] = "".join(rng.choice(list("abc: estimated stopped degenerate"), 30))
    assert (summary(cells, best, "bic", [1], candidates=cells), table(cells, "bic")) == before
