"""
Letting a variational mixture choose K
======================================

`dgmm.BayesianGaussianMixture` fits a mixture with more components than needed; under its
Dirichlet-process prior, the components the data do not need end with weights near 0. This
example fits ten components to the four stretched blobs of the first example, counts the
components that keep a weight above 1 %, and runs `dgmm.select` with
``method="variational"`` to compare the covariance types.
"""

# %%
# The data
# --------
# The same four stretched blobs as in the example on choosing K.

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_blobs

import dgmm

X, _ = make_blobs(n_samples=1250, n_features=2, centers=4, cluster_std=0.60, random_state=0)
X = X[:, ::-1] @ np.random.RandomState(15).randn(2, 2)

# %%
# Ten components, one fit
# -----------------------
# ``weights_`` holds the weight of each of the ten components after the fit.

bgm = dgmm.BayesianGaussianMixture(
    n_components=10, covariance_type="full", random_state=0, max_iter=500
)
bgm.fit(X)
print("converged:", bgm.converged_, "after", bgm.n_iter_, "iterations")
print("weights:", np.round(bgm.weights_, 3))
print("components with weight > 0.01:", (bgm.weights_ > 0.01).sum())

# %%
# The weights
# -----------

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
ax0.bar(np.arange(bgm.n_components), bgm.weights_)
ax0.axhline(0.01, color="k", linestyle="--", linewidth=1, label="0.01")
ax0.set_xticks(np.arange(bgm.n_components))
ax0.set_xlabel("component")
ax0.set_ylabel("weight")
ax0.set_title("weights of the ten components")
ax0.legend()
ax1.scatter(X[:, 0], X[:, 1], c=bgm.predict(X), s=8, cmap="tab10")
ax1.set_title("rows labelled by the fit")
fig.tight_layout()
plt.show()

# %%
# Comparing covariance types
# --------------------------
# With ``method="variational"``, `dgmm.select` fits one `dgmm.BayesianGaussianMixture` per
# covariance type at the largest K of the range (10 here). It compares the types by BIC,
# computed on each fit's posterior-mean mixture, counting the parameters of the components
# whose weight is above ``weight_threshold`` (0.01 by default).

found = dgmm.select(
    X,
    range(1, 11),
    ["full", "tied", "diag", "spherical"],
    method="variational",
    max_iter=500,
    random_state=0,
)
print(found.best_params_)
print(found.to_pandas()[["covariance_type", "effective_components", "bic", "converged"]])
