"""The run report: an mclust-style summary, ``report.json`` content and the PNG plots."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import dask.array as da
import numpy as np

from dgmm.em import compute


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("dgmm", "numpy", "dask", "distributed", "dask-ml", "zarr", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


Row = dict  # one row of `dgmm.SelectionResult.results` (or of its ``cells()``)


def summary(cells: list[Row], best: Row, criterion: str, sizes, top: int = 3) -> str:
    """Text like mclust's summary: top candidates with criterion differences, then the model.

    ``cells`` are the best restart of every (K, covariance type) cell; ``best`` the selected.
    """
    ok = sorted((c for c in cells if c["error"] is None), key=lambda c: c[criterion])
    crit = criterion.upper()
    lines = [f"Best {crit} values (lower is better):"]
    head = ok[:top]
    width = 14
    lines.append(
        " " * 10
        + "".join(f"{c['covariance_type'] + ',' + str(c['n_components']):>{width}}" for c in head)
    )
    lines.append(f"{crit:<10}" + "".join(f"{c[criterion]:>{width}.2f}" for c in head))
    lines.append(
        f"{crit + ' diff':<10}"
        + "".join(f"{c[criterion] - best[criterion]:>{width}.2f}" for c in head)
    )
    lines.append(f"{'loglik':<10}" + "".join(f"{c['log_likelihood']:>{width}.2f}" for c in head))
    lines.append(f"{'params':<10}" + "".join(f"{c['n_parameters']:>{width}d}" for c in head))
    failed = [c for c in cells if c["error"] is not None]
    if failed:
        lines.append(
            f"{len(failed)} candidate(s) failed (NA): "
            + ", ".join(f"{c['covariance_type']},{c['n_components']}" for c in failed)
        )
    lines += [
        "",
        f"Selected: {best['covariance_type']} covariance, K = {best['n_components']}",
        f"  log-likelihood {best['log_likelihood']:.3f}   parameters {best['n_parameters']}   "
        f"BIC {best['bic']:.3f}   AIC {best['aic']:.3f}   ICL {best['icl']:.3f}",
        "  cluster sizes: " + " ".join(str(int(s)) for s in sizes),
    ]
    return "\n".join(lines)


def table(cells: list[Row], criterion: str) -> str:
    """The whole K × covariance-type grid of the criterion, NA where a candidate failed."""
    types = list(dict.fromkeys(c["covariance_type"] for c in cells))
    ks = sorted({c["n_components"] for c in cells})
    cell = {(c["covariance_type"], c["n_components"]): c for c in cells}
    lines = [f"{'K':>4}" + "".join(f"{t:>16}" for t in types)]
    for k in ks:
        vals = []
        for t in types:
            c = cell.get((t, k))
            vals.append(f"{'NA' if c is None or c['error'] else f'{c[criterion]:.2f}':>16}")
        lines.append(f"{k:>4}" + "".join(vals))
    return "\n".join(lines)


def plot_criteria(cells: list[Row], best: Row, criterion: str, path: Path) -> None:
    """BIC, AIC and ICL against K, one line per covariance type, the selected point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, crit in zip(axes, ("bic", "aic", "icl"), strict=True):
        for t in dict.fromkeys(c["covariance_type"] for c in cells):
            pts = sorted(
                (c["n_components"], c[crit])
                for c in cells
                if c["covariance_type"] == t and c["error"] is None
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=t)
        ax.plot(
            best["n_components"],
            best[crit],
            marker="*",
            markersize=18,
            color="k",
            linestyle="none",
            label="selected" if crit == criterion else "selected model",
        )
        ax.set_xlabel("K (components)")
        ax.set_ylabel(crit.upper() + " (lower is better)")
        ax.set_title(crit.upper())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_rows(x: da.Array, n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` rows from a few random whole chunks (cheap to read), with their row indices."""
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(x.chunks[0])])
    order = rng.permutation(len(x.chunks[0]))
    picked, total = [], 0
    for b in order:
        picked.append(b)
        total += x.chunks[0][b]
        if total >= n:
            break
    idx = np.concatenate([np.arange(starts[b], starts[b + 1]) for b in sorted(picked)])
    if idx.size > n:
        idx = np.sort(rng.choice(idx, n, replace=False))
    return np.asarray(compute(x[idx])[0]), idx


def plot_scatter(rows: np.ndarray, labels: np.ndarray, path: Path, title: str) -> None:
    """Scatter of the rows (first two principal components if D > 2), coloured by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = rows[:, :2].astype(np.float64)
    axis = ("feature 0", "feature 1")
    if rows.shape[1] > 2:
        c = rows - rows.mean(axis=0)
        _, _, vt = np.linalg.svd(c, full_matrices=False)
        xy, axis = c @ vt[:2].T, ("PC 1", "PC 2")
    elif rows.shape[1] == 1:
        xy, axis = np.column_stack([rows[:, 0], np.zeros(len(rows))]), ("feature 0", "")
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.scatter(xy[:, 0], xy[:, 1], c=labels, s=4, cmap="tab10", alpha=0.7)
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
