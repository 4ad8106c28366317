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


def summary(
    cells: list[Row],
    best: Row,
    criterion: str,
    sizes,
    top: int = 3,
    candidates: list[Row] | None = None,
) -> str:
    """Text like mclust's summary: top candidates with criterion differences, then the model.

    ``cells`` are the best restart of every (K, covariance type) cell; ``best`` the selected;
    ``candidates`` every restart (to count those stopped after EM on the sample).
    """
    ok = sorted((c for c in cells if _fitted(c)), key=lambda c: c[criterion])
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
    failed = [c for c in cells if c["status"] in ("failed", "degenerate")]
    spurious = [c for c in failed if c["status"] == "degenerate"]
    if spurious:
        lines.append(
            f"{len(spurious)} cell(s) NA, every restart a degenerate fit (a component on too "
            "few rows or with a singular covariance): "
            + ", ".join(f"{c['covariance_type']},{c['n_components']}" for c in spurious)
        )
    if len(failed) > len(spurious):
        lines.append(
            f"{len(failed) - len(spurious)} cell(s) failed (NA): "
            + ", ".join(
                f"{c['covariance_type']},{c['n_components']}" for c in failed if c not in spurious
            )
        )
    stopped = [c for c in candidates or [] if c["status"] in ("stopped", "cell stopped")]
    by_cell = {
        (c["covariance_type"], c["n_components"]) for c in stopped if c["status"] == "cell stopped"
    }
    if by_cell:
        lines.append(
            f"{len(by_cell)} cell(s) stopped after EM on the sample, where their estimated "
            "criterion clearly trailed the best cell's (~ in the table)"
        )
    restarts = [c for c in stopped if c["status"] == "stopped"]
    if restarts:
        lines.append(
            f"{len(restarts)} restart(s) stopped after EM on the sample, trailing or "
            "repeating their cell's best there"
        )
    lines += [
        "",
        f"Selected: {best['covariance_type']} covariance, K = {best['n_components']}",
        f"  log-likelihood {best['log_likelihood']:.3f}   parameters {best['n_parameters']}   "
        f"BIC {best['bic']:.3f}   AIC {best['aic']:.3f}   ICL {best['icl']:.3f}",
        "  cluster sizes: " + " ".join(str(int(s)) for s in sizes),
    ]
    return "\n".join(lines)


def _fitted(c: Row) -> bool:
    """Whether a result row holds a fit with scores (its typed ``status``, never its text)."""
    return c["status"] in ("converged", "not converged")


def _entry(c: Row | None, criterion: str) -> str:
    if c is None:
        return "NA"
    if _fitted(c):
        return f"{c[criterion]:.2f}"
    if c.get("estimate"):
        return f"~{c['estimate'][criterion]:.2f}"
    return "NA"


def table(cells: list[Row], criterion: str) -> str:
    """The whole K × covariance-type grid of the criterion, NA where a candidate failed and
    ``~value`` where a cell was stopped after EM on the sample (the value estimated there)."""
    types = list(dict.fromkeys(c["covariance_type"] for c in cells))
    ks = sorted({c["n_components"] for c in cells})
    cell = {(c["covariance_type"], c["n_components"]): c for c in cells}
    lines = [f"{'K':>4}" + "".join(f"{t:>16}" for t in types)]
    for k in ks:
        vals = [f"{_entry(cell.get((t, k)), criterion):>16}" for t in types]
        lines.append(f"{k:>4}" + "".join(vals))
    if any(not _fitted(c) and c.get("estimate") for c in cells):
        lines.append(
            "~: estimated from the cell's fit on the sample, where it trailed the best cell "
            "clearly (not fitted on all rows)"
        )
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def criteria_figure(cells: list[Row], criterion: str):
    """BIC, AIC and ICL against K, one line per covariance type, each panel relative to its own
    lowest value (mclust's ΔBIC) on a scale that is linear near 0 and logarithmic beyond, so a
    gap of hundreds stays visible next to a range of millions. Each panel stars its own
    minimum; the criterion the run selects by is named in its title."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    ok = [c for c in cells if _fitted(c)]
    types = list(dict.fromkeys(c["covariance_type"] for c in cells))
    colours = dict(zip(types, plt.get_cmap("tab10").colors, strict=False))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    guessed = [c for c in cells if not _fitted(c) and c.get("estimate")]
    for ax, crit in zip(axes, ("bic", "aic", "icl"), strict=True):
        low = min(ok, key=lambda c: c[crit])
        for t in types:
            pts = sorted(
                (c["n_components"], c[crit] - low[crit]) for c in ok if c["covariance_type"] == t
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=4, color=colours[t], label=t)
            est = sorted(
                (c["n_components"], c["estimate"][crit] - low[crit])
                for c in guessed
                if c["covariance_type"] == t
            )
            if est:
                ax.plot(
                    *zip(*est, strict=True),
                    marker="o",
                    ms=5,
                    mfc="none",
                    ls="none",
                    color=colours[t],
                    label=f"{t} (estimated on the sample)",
                )
        name = crit.upper()
        ax.plot(
            low["n_components"],
            0.0,
            marker="*",
            markersize=18,
            color="k",
            linestyle="none",
            label=f"lowest {name}: {low['covariance_type']}, K={low['n_components']}",
        )
        ax.set_yscale("symlog", linthresh=10.0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("K (components)")
        ax.set_ylabel(f"{name} − lowest {name}  (lower is better)")
        chosen = " — selects the model" if crit == criterion else ""
        ax.set_title(f"{name} relative to its lowest ({low[crit]:.6g}){chosen}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def components_text(best: Row, threshold: float, n_rows: int) -> str:
    """The selected variational fit's components: weight and expected rows, largest first."""
    w = np.asarray(best["weights"])
    order = np.argsort(w)[::-1]
    used = int(np.sum(w > threshold))
    lines = [
        f"Effective components: {used} of K = {w.size} with weight above {threshold:g} "
        "(the posterior mean weight; expected rows = weight x rows)",
        f"{'component':>10}{'weight':>12}{'expected rows':>16}",
    ]
    for k in order:
        mark = "" if w[k] > threshold else "  (unused)"
        lines.append(f"{int(k):>10}{w[k]:>12.4f}{w[k] * n_rows:>16.1f}{mark}")
    return "\n".join(lines)


def weights_figure(cells: list[Row], threshold: float):
    """Each covariance type's variational fit: its component weights, largest first, against
    the threshold above which a component counts; the legend names each type's count. A type
    stopped after EM on the sample shows that fit, hatched and named so."""
    plt = _pyplot()
    shown = []
    for c in cells:
        if _fitted(c):
            shown.append((c["covariance_type"], c, ""))
        elif (c.get("estimate") or {}).get("weights") is not None:
            shown.append((c["covariance_type"], c["estimate"], " (stopped; its sample fit)"))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(shown), 1)
    for i, (name, fit, note) in enumerate(shown):
        w = np.sort(np.asarray(fit["weights"]))[::-1]
        ax.bar(
            np.arange(w.size) + i * width,
            w,
            width,
            hatch="//" if note else None,
            alpha=0.6 if note else 1.0,
            label=f"{name}: {fit['effective_components']} used{note}",
        )
    ax.axhline(threshold, color="black", lw=0.8, ls="--", label=f"threshold {threshold:g}")
    ax.set_yscale("symlog", linthresh=max(threshold / 10, 1e-6))
    ax.set_xlabel("component (by weight)")
    ax.set_ylabel("weight")
    ax.set_title("Variational fits: components the data use")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_criteria(cells: list[Row], criterion: str, path: Path) -> None:
    """`criteria_figure` saved as a PNG."""
    fig = criteria_figure(cells, criterion)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


# At most this many chunks are read for the plots when the selection drew no sample.
SHOWN_CHUNKS = 64


def shown_rows(sample, x: da.Array, n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Up to ``n`` rows for the plots, and how they were drawn (for the plots' titles).

    From the selection's own uniform sample (``sample``: every row kept with the same
    probability) when there is one, reading nothing; otherwise from at most `SHOWN_CHUNKS`
    chunks drawn with probability proportional to their rows, ``n`` rows drawn uniformly among
    theirs (each row equally likely to be shown, and a bounded read).
    """
    rng = np.random.default_rng(seed)
    if sample is not None and len(sample.x):
        rows = np.asarray(sample.x)
        keep = np.sort(rng.choice(len(rows), min(n, len(rows)), replace=False))
        return rows[keep], "uniform sample"
    sizes = np.asarray(x.chunks[0])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    picked = np.arange(len(sizes))
    if len(sizes) > SHOWN_CHUNKS:
        picked = np.sort(rng.choice(len(sizes), SHOWN_CHUNKS, replace=False, p=sizes / sizes.sum()))
    pool = np.concatenate([np.arange(starts[b], starts[b + 1]) for b in picked])
    idx = np.sort(rng.choice(pool, min(n, len(pool)), replace=False))
    how = "uniform sample" if len(picked) == len(sizes) else f"sample of {len(picked)} chunks"
    return np.asarray(compute(x[idx])[0]), how


def _projection(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """Origin and (2, D) axes of the plane the plots use: the first two principal components
    of the rows (their own features when D ≤ 2)."""
    d = rows.shape[1]
    origin = rows.mean(axis=0)
    if d > 2:
        _, _, vt = np.linalg.svd(rows - origin, full_matrices=False)
        return origin, vt[:2], ("PC 1", "PC 2")
    axes = np.eye(2, d)
    return origin, axes, ("feature 0", "feature 1" if d == 2 else "")


def _full_covariances(model) -> np.ndarray:
    k, d = model.means_.shape
    cov = np.asarray(model.covariances_, dtype=np.float64)
    return {
        "full": lambda: cov,
        "tied": lambda: np.broadcast_to(cov, (k, d, d)),
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: np.stack([np.eye(d) * c for c in cov]),
    }[model.covariance_type]()


def _rows_title(shown: int, total: int, how: str) -> str:
    return f"all {total} rows" if shown == total else f"{shown} of {total} rows ({how})"


def clusters_figure(rows: np.ndarray, model, n_total: int, how: str = "uniform sample"):
    """The rows on their first two principal components, coloured by label with a key (and
    each cluster's size among them), and every component's 2-sd ellipse projected."""
    from matplotlib.patches import Ellipse

    plt = _pyplot()
    labels = model.predict(rows)
    origin, axes, names = _projection(rows.astype(np.float64))
    xy = (rows - origin) @ axes.T
    k = model.n_components
    colours = plt.get_cmap("tab10" if k <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for j in range(k):
        at = labels == j
        if not at.any():  # the key lists the clusters drawn; the title counts the rest
            continue
        ax.scatter(
            xy[at, 0],
            xy[at, 1],
            s=5,
            alpha=0.6,
            color=colours(j % colours.N),
            label=f"cluster {j} ({int(at.sum())})",
        )
    centres = (model.means_ - origin) @ axes.T
    for j, cov in enumerate(_full_covariances(model)):
        c2 = axes @ cov @ axes.T
        vals, vecs = np.linalg.eigh(c2)
        angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
        w, h = 2 * 2 * np.sqrt(np.maximum(vals[::-1], 0.0))
        ax.add_patch(Ellipse(centres[j], w, h, angle=angle, fill=False, lw=1.2, ls="--", color="k"))
        ax.plot(*centres[j], marker="x", color="k", ms=7)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    empty = k - len(np.unique(labels))
    none = f" ({empty} cluster(s) with no row among them)" if empty else ""
    ax.set_title(
        f"{model.covariance_type}, K={k}: {_rows_title(len(rows), n_total, how)}{none}; "
        "ellipses: 2 sd of each component",
        fontsize=10,
    )
    ax.legend(fontsize=8, markerscale=3, loc="best", title="label (rows shown)")
    fig.tight_layout()
    return fig


def uncertainty_figure(rows: np.ndarray, model, n_total: int, how: str = "uniform sample"):
    """mclust's uncertainty plot: the rows on their first two principal components coloured by
    classification uncertainty (1 − largest probability), the most uncertain drawn on top; and
    the distribution of the uncertainty."""
    from matplotlib.colors import LinearSegmentedColormap

    plt = _pyplot()
    u = 1.0 - model.predict_proba(rows).max(axis=1)
    origin, axes, names = _projection(rows.astype(np.float64))
    xy = (rows - origin) @ axes.T
    order = np.argsort(u)
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(12, 5), width_ratios=[1.4, 1])
    top = max(1.0 - 1.0 / model.n_components, 1e-12)  # the most uncertain a row can be
    cmap = LinearSegmentedColormap.from_list("uncertainty", ["0.75", "tab:orange", "darkred"])
    sc = ax.scatter(
        xy[order, 0],
        xy[order, 1],
        c=u[order],
        s=4 + 40 * u[order] / top,
        cmap=cmap,
        vmin=0.0,
        vmax=top,
    )
    fig.colorbar(sc, ax=ax, label="uncertainty (1 − largest probability)")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"Classification uncertainty: {_rows_title(len(rows), n_total, how)}", fontsize=10)
    hx.hist(u, bins=40, range=(0.0, top), color="0.3")
    hx.set_yscale("log")
    hx.set_xlabel("uncertainty (1 − largest probability)")
    hx.set_ylabel("rows")
    hx.set_title(
        f"{(u > 0.1).mean():.1%} of rows above 0.1, {(u > 0.5).mean():.1%} above 0.5",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
