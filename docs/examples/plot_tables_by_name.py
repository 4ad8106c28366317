"""
Tables with named columns: Parquet, CSV and DataFrames
======================================================

A model fitted on a table keeps its column names in ``feature_names_in_``, and later tables
are matched to them by name, in any order. This example writes a table to Parquet and CSV,
standardises its columns with `dgmm.profile`, fits a mixture, labels the same rows with their
columns reordered, and shows the error for a table that lacks a column.
"""

# %%
# A table of three named columns
# ------------------------------
# Two groups of people with different height, weight and age, written to a Parquet file and a
# CSV file in a temporary folder.

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import dgmm

rng = np.random.default_rng(0)
n = 3000
group = rng.random(n) < 0.4
df = pd.DataFrame(
    {
        "height": np.where(group, 162.0, 178.0) + rng.normal(0.0, 6.0, n),
        "weight": np.where(group, 58.0, 80.0) + rng.normal(0.0, 7.0, n),
        "age": np.where(group, 30.0, 50.0) + rng.normal(0.0, 8.0, n),
    }
)
folder = Path(tempfile.mkdtemp())
parquet_path = folder / "people.parquet"
csv_path = folder / "people.csv"
df.to_parquet(parquet_path, index=False)
df.to_csv(csv_path, index=False)
print(df.head())

# %%
# Column statistics in one pass
# -----------------------------
# `dgmm.profile` reads a table (here by its path) once and returns a `dgmm.ColumnProfile`: the
# row count, the rows holding NaN or infinity, and each column's range, mean and standard
# deviation. The Parquet and the CSV file hold the same numbers, so their profiles agree.

p = dgmm.profile(str(parquet_path))
print("rows:", p.n, "rows with NaN/inf:", p.n_bad)
print("mean:", np.round(p.mean, 2))
print("std: ", np.round(p.std, 2))
p_csv = dgmm.profile(str(csv_path))
print(
    "same moments from the CSV file:",
    np.allclose(p.mean, p_csv.mean),
    np.allclose(p.std, p_csv.std),
)

# %%
# Fitting on standardised columns
# -------------------------------
# Height, weight and age are on different scales; dividing each centred column by its standard
# deviation puts them on the same one. The fit is made on a pandas DataFrame, so the model
# records its column names.

columns = ["height", "weight", "age"]
z = (df[columns] - p.mean) / p.std
gm = dgmm.GaussianMixture(n_components=2, random_state=0).fit(z)
print(gm.feature_names_in_)
labels = gm.predict(z)
print("rows per label:", np.bincount(labels))

# %%
# A model fitted on a Parquet or CSV path records the file's column names in the same way.

print(dgmm.GaussianMixture(n_components=2, random_state=0).fit(str(csv_path)).feature_names_in_)

# %%
# Columns are matched by name
# ---------------------------
# The same table with its columns in another order gets the same labels: the model takes the
# columns by their names, not their positions.

reordered = z[["age", "height", "weight"]]
labels_reordered = gm.predict(reordered)
assert np.array_equal(labels, labels_reordered)
print("same labels with the columns reordered:", np.array_equal(labels, labels_reordered))

# %%
# A missing column is refused
# ---------------------------
# A table without one of the model's columns is an error that names the column.

try:
    gm.predict(z[["height", "weight"]])
except ValueError as e:
    print(f"{type(e).__name__}: {e}")

# %%
# The two groups on height and weight
# -----------------------------------

fig, ax = plt.subplots(figsize=(5, 4))
for k in range(gm.n_components):
    rows = labels == k
    ax.scatter(df["height"][rows], df["weight"][rows], s=5, color=f"C{k}", label=f"label {k}")
centres = gm.means_ * p.std + p.mean  # back to the original units
ax.scatter(centres[:, 0], centres[:, 1], c="k", marker="x", s=80, label="means")
ax.set_xlabel("height")
ax.set_ylabel("weight")
ax.legend()
plt.show()
