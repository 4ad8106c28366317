"""The report's plots show what was chosen: each criterion panel stars its own minimum."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from pipelines.report import criteria_figure

CRITERIA = ("bic", "aic", "icl")


def _cells(rng: np.random.Generator) -> list[dict]:
    types = list(rng.permutation(["full", "tied", "diag", "spherical"])[: rng.integers(1, 5)])
    ks = sorted(rng.choice(np.arange(1, 30), size=int(rng.integers(1, 10)), replace=False))
    scale = 10.0 ** rng.uniform(0, 7)
    cells = []
    for t in types:
        for k in ks:
            values = {c: float(rng.normal(scale=scale) + scale * 10) for c in CRITERIA}
            error = "degenerate" if rng.random() < 0.15 else None
            cells.append({"covariance_type": t, "n_components": int(k), "error": error, **values})
    if all(c["error"] for c in cells):
        cells[0]["error"] = None
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
