"""
Fitting a Zarr array chunk by chunk on a Dask cluster
=====================================================

`dgmm.GaussianMixture` accepts the path of a Zarr array. Each EM iteration is one pass over
the array: every chunk of rows is read by a Dask task, reduced to small sufficient statistics,
and the statistics are added up for the M-step. This example writes 200 000 rows to a Zarr
store in chunks of 20 000 rows, fits a three-component mixture on a local Dask cluster, and
labels the rows lazily.
"""

# %%
# Writing the data to Zarr
# ------------------------
# Three Gaussian clusters in four dimensions, written one chunk at a time, so that the whole
# array is never held in memory here either. The store goes to a temporary folder.

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import zarr
from distributed import Client, LocalCluster

import dgmm

n_rows, n_features, chunk_rows = 200_000, 4, 20_000
true_means = np.array([[0.0, 0.0, 0.0, 0.0], [4.0, 4.0, 0.0, 0.0], [0.0, 4.0, 4.0, 4.0]])
true_weights = np.array([0.5, 0.3, 0.2])

folder = Path(tempfile.mkdtemp())
path = str(folder / "data.zarr")
z = zarr.create_array(path, shape=(n_rows, n_features), chunks=(chunk_rows, n_features), dtype="f8")
rng = np.random.default_rng(0)
for start in range(0, n_rows, chunk_rows):
    component = rng.choice(3, size=chunk_rows, p=true_weights)
    z[start : start + chunk_rows] = true_means[component] + rng.standard_normal(
        (chunk_rows, n_features)
    )
print(z.shape, z.chunks, f"{z.nbytes / 2**20:.1f} MiB")

# %%
# A local Dask cluster
# --------------------
# Two workers with one thread each, in this process (``processes=False``). Once a ``Client``
# exists, dgmm's passes run on it. Each task holds one chunk of 20 000 rows (640 kB here) and
# the statistics of the model, so a worker's memory is bounded by the chunk size, not by the
# size of the array. ``client.dashboard_link`` is the address of Dask's dashboard, where the
# tasks of each pass can be watched while the cluster runs. ``dashboard_address=":0"`` lets the
# system choose a free port for it, so it does not collide with another cluster's dashboard on
# Dask's default port 8787.

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
client = Client(cluster)
print(client)
print("dashboard:", client.dashboard_link)

# %%
# Fitting the path of the Zarr array
# ----------------------------------
# ``fit`` reads the array through its path. ``n_passes_`` counts the passes over the data that
# the fit made (initialisation included); ``n_iter_`` counts the EM iterations.

gm = dgmm.GaussianMixture(n_components=3, random_state=0).fit(path)
print("passes over the data:", gm.n_passes_)
print("converged:", gm.converged_, "after", gm.n_iter_, "iterations")
print("weights:", np.round(gm.weights_, 3))
print("means:\n", np.round(gm.means_, 2))

# %%
# Lazy labels
# -----------
# For Zarr or Dask input, ``predict`` returns a lazy Dask array with the same row chunks; it is
# computed only when asked, one chunk per task.

labels = gm.predict(path)
print(labels)
counts = np.bincount(labels.compute(), minlength=3)
print("rows per label:", counts)

# %%
# Plotting the label counts and the means
# ---------------------------------------

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.5))
ax0.bar(np.arange(3), counts, color=["C0", "C1", "C2"])
ax0.set_xticks(np.arange(3))
ax0.set_xlabel("label")
ax0.set_ylabel("rows")
ax0.set_title("rows per label")
width = 0.25
for k in range(3):
    ax1.bar(np.arange(n_features) + (k - 1) * width, gm.means_[k], width, label=f"component {k}")
ax1.set_xticks(np.arange(n_features))
ax1.set_xlabel("column")
ax1.set_ylabel("mean")
ax1.set_title("fitted means")
ax1.legend()
fig.tight_layout()
plt.show()

# %%
# Shutting down
# -------------

client.close()
cluster.close()
