"""
Extending a grid through the result store
=========================================

Choosing K is iterative: a first sweep over a few values, a look at the criterion, then a
sweep over more. With ``store=``, `dgmm.select` keeps every fit it makes in a
`dgmm.store.ResultStore`, keyed by the data's digest and everything the fit depends on, and
reads back every fit it would otherwise repeat. This example sweeps K = 1..5, extends the grid
to K = 1..8 through the store, checks that the extension equals a fresh sweep of 1..8 to the
last bit, and shows a changed setting named.
"""

# %%
# The data and a first sweep
# --------------------------
# 60 000 rows of six clusters in three dimensions, as a Dask array of six chunks, and a store
# in a temporary folder (a run's default is ``$DGMM_STORE``, else ``~/.cache/dgmm/store``).
# The sweep uses multi-resolution EM: every candidate is fitted on a uniform sample first,
# and only the cells that may still win go on to all rows.

import tempfile
from pathlib import Path

import dask.array as da
import matplotlib.pyplot as plt
from sklearn.datasets import make_blobs

import dgmm
from dgmm.store import ResultStore

X_np, _ = make_blobs(n_samples=60_000, n_features=3, centers=6, cluster_std=1.5, random_state=1)
X = da.from_array(X_np, chunks=(10_000, 3))
store = ResultStore(Path(tempfile.mkdtemp()) / "store")
settings = dict(covariance_types=["full", "diag"], n_init=2, random_state=0, strategy="sample")

first = dgmm.select(X, range(1, 6), **settings, store=store)
print(first.reuse["fitted"], "fitted;", first.best_params_)

# %%
# The extension
# -------------
# K = 1..8 with the same store reads back the 20 candidates of K = 1..5 and fits the 12 new
# ones. The larger grid draws a larger sample (its largest candidate has more parameters), but
# each cell is fitted on the rows a sample sized for that cell alone keeps, so the stored fits
# are exactly what this grid would make. Which cells go on to all rows is judged again, over
# the new grid.

larger = dgmm.select(X, range(1, 9), **settings, store=store)
assert (larger.reuse["reused"], larger.reuse["fitted"]) == (20, 12)
print(larger.reuse)
print(larger.best_params_)

# %%
# The same as a fresh sweep
# -------------------------
# A sweep of K = 1..8 without the store gives the same table, row for row, and the same
# selected model, bit for bit (``reused`` says where each row's fit came from, so it is left
# out of the comparison). What an extension costs against a fresh sweep on a million rows is
# on the benchmarks page: what its new candidates cost alone.

fresh = dgmm.select(X, range(1, 9), **settings)


def without_reuse(rows):
    return [{k: v for k, v in r.items() if k != "reused"} for r in rows]


same_rows = without_reuse(larger.results) == without_reuse(fresh.results)
same_model = (larger.best_estimator_.means_ == fresh.best_estimator_.means_).all()
assert same_rows and same_model
print("same rows:", same_rows, "; same model:", same_model)

# %%
# Which cells were read back
# --------------------------
# Each cell's BIC: on all rows where the cell went on there, else as estimated on the sample
# (the cells stopped after it). Hollow markers are cells whose fits came from the store: the
# first sweep's K = 1..5, all stopped on the sample in this grid.


def cell_bic(rows, cov, k):
    """The cell's BIC on all rows, else its estimate on the sample; and whether it was read."""
    cell = [r for r in rows if r["covariance_type"] == cov and r["n_components"] == k]
    done = [r["bic"] for r in cell if r["best_in_cell"] and r["bic"] is not None]
    guess = [r["estimate"]["bic"] for r in cell if r["estimate"]]
    return (done or guess or [None])[0], all(r["reused"] for r in cell)


by_cell = {}
for r in larger.results:
    by_cell.setdefault((r["covariance_type"], r["n_components"]), []).append(r)
stopped = {c for c, rows in by_cell.items() if any(r["estimate"] for r in rows)}
read = {c for c, rows in by_cell.items() if all(r["reused"] for r in rows)}
assert read == {(cov, k) for cov in ("full", "diag") for k in range(1, 6)} and read <= stopped
fig, ax = plt.subplots(figsize=(7, 4))
for cov, colour in (("full", "C0"), ("diag", "C1")):
    ks = range(1, 9)
    values = [cell_bic(larger.results, cov, k) for k in ks]
    ax.plot(ks, [v for v, _ in values], "-", color=colour, label=cov)
    for k, (v, read) in zip(ks, values, strict=True):
        ax.plot(k, v, "o", color=colour, markerfacecolor="none" if read else colour, ms=8)
ax.set_yscale("log")
ax.set_xlabel("K")
ax.set_ylabel("BIC (of a stopped cell: on the sample)")
ax.set_title("K = 1..8 through the store (hollow: read back)")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# A changed setting is named
# --------------------------
# A fit is stored under every setting it depends on. With another ``tol`` nothing stored
# applies: every candidate is fitted, and the result says which setting changed since the last
# sweep of this data.

changed = dgmm.select(X, range(1, 9), **settings, store=store, tol=1e-4)
print(changed.reuse["reused"], "reused;", changed.reuse["changed"])
print(len(store.entries()), "entries,", store.nbytes() // 1024, "KiB")
