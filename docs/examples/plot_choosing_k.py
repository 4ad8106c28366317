"""
Choosing K and the covariance type with ``dgmm.select``
=======================================================

`dgmm.select` fits every number of components K and every covariance type, with several
restarts each, and picks the fit with the lowest information criterion. This example runs it
on four stretched blobs, prints the chosen model and the table of results, and plots the BIC
of every K for each covariance type.
"""

# %%
# The data
# --------
# Four blobs of 1250 points in two dimensions, stretched and rotated by a random linear map,
# so that their clusters are elongated and tilted.

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_blobs

import dgmm

X, _ = make_blobs(n_samples=1250, n_features=2, centers=4, cluster_std=0.60, random_state=0)
X = X[:, ::-1] @ np.random.RandomState(15).randn(2, 2)
print(X.shape)

# %%
# One call for the whole sweep
# ----------------------------
# K runs from 1 to 6 for each of the four covariance types, with 10 restarts per cell. All
# candidates advance together: each EM iteration reads the data once for every candidate still
# running. The fit with the lowest BIC is selected.

found = dgmm.select(
    X,
    n_components=range(1, 7),
    covariance_types=["full", "tied", "diag", "spherical"],
    n_init=10,
    criterion="bic",
    random_state=0,
)
print(found)
print(found.best_params_)

# %%
# The table of results
# --------------------
# ``found.to_pandas()`` has one row per restart: K, covariance type, restart, log-likelihood,
# number of parameters, BIC, AIC, ICL, iterations, and whether it converged or failed.

table = found.to_pandas()
print(table[["n_components", "covariance_type", "restart", "bic", "n_iter", "status"]].head())

# %%
# BIC against K
# -------------
# ``found.cells()`` keeps the best restart of every (K, covariance type) cell. A cell whose
# restarts all failed has an ``error`` and no BIC; it is left out of the plot.

fig, ax = plt.subplots(figsize=(6, 4))
for cov in ["full", "tied", "diag", "spherical"]:
    rows = sorted(
        (r for r in found.cells() if r["covariance_type"] == cov and r["error"] is None),
        key=lambda r: r["n_components"],
    )
    ax.plot([r["n_components"] for r in rows], [r["bic"] for r in rows], "o-", label=cov)
best = found.best_params_
best_bic = next(
    r["bic"]
    for r in found.cells()
    if r["n_components"] == best["n_components"] and r["covariance_type"] == best["covariance_type"]
)
ax.plot(best["n_components"], best_bic, "k*", markersize=15, label="selected")
ax.set_xlabel("number of components K")
ax.set_ylabel("BIC (lower is better)")
ax.legend()
ax.set_title("BIC of the best restart of each cell")
fig.tight_layout()
plt.show()

# %%
# The selected model's clusters
# -----------------------------
# ``found.best_estimator_`` is a fitted `dgmm.GaussianMixture`; its ``predict`` labels the rows.

labels = found.best_estimator_.predict(X)
fig, ax = plt.subplots(figsize=(5, 5))
ax.scatter(X[:, 0], X[:, 1], c=labels, s=8, cmap="tab10")
ax.scatter(*found.best_estimator_.means_.T, c="k", marker="x", s=80, label="means")
ax.set_title(f"{best['covariance_type']} covariance, K = {best['n_components']}")
ax.legend()
ax.set_aspect("equal")
plt.show()
