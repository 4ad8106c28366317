"""
Checkpoints and progress reports of a sweep
===========================================

With ``checkpoint=``, `dgmm.select` saves the state of every candidate after each pass over
the data, and a later call with the same settings on the same data resumes from it. With
``progress=``, it calls a function with a `dgmm.PassReport` after every pass. This example
collects the reports of a sweep over a Dask array, reruns the same call to resume from its
checkpoint, resumes a run stopped part-way, and shows that a changed setting starts afresh.
"""

# %%
# The data, as a Dask array
# -------------------------
# 40 000 rows of five overlapping clusters in three dimensions, split into chunks of 5 000
# rows. Each pass over the data reads the eight chunks once.

import logging
import sys
import tempfile
from pathlib import Path

import dask.array as da
import matplotlib.pyplot as plt
from sklearn.datasets import make_blobs

import dgmm

X_np, _ = make_blobs(n_samples=40_000, n_features=3, centers=5, cluster_std=2.5, random_state=0)
X = da.from_array(X_np, chunks=(5_000, 3))
folder = Path(tempfile.mkdtemp())
print(X)

# %%
# A sweep that reports every pass
# -------------------------------
# The ``progress`` callback gets one `dgmm.PassReport` per pass: the pass number, its phase,
# the furthest EM iteration, the candidates still running, the best criterion so far, and the
# time of the pass and since the start. Here it keeps them in a list. The phases below are
# ``sample`` (a pass that checks the data, takes its digest and draws the rows the k-means
# initialisation runs on), ``init``, one ``em`` pass per EM iteration, and ``score``. The
# checkpoint file is written in the temporary folder.

settings = dict(
    n_components=range(1, 8),
    covariance_types=["full", "diag"],
    n_init=2,
    random_state=0,
)
checkpoint = folder / "sweep.ckpt"

reports = []
found = dgmm.select(X, **settings, checkpoint=checkpoint, progress=reports.append)
print(found)
print("passes:", found.n_passes_, "resumed from:", found.resumed_from)
for r in reports[:3] + reports[-2:]:
    print(r.line())

# %%
# Passes of the sweep
# -------------------
# All 28 candidates (7 values of K, 2 covariance types, 2 restarts) share each pass. As EM
# converges, candidates stop, and the passes that follow serve only those still running. The
# best BIC of a report is computed from each candidate's last lower bound, so it differs a
# little from the BIC of the scoring pass, which the table holds.

em = [r for r in reports if r.phase == "em"]
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
ax0.bar([r.n_pass for r in em], [r.running for r in em])
ax0.set_xlabel("pass")
ax0.set_ylabel("candidates running after the pass")
ax0.set_ylim(0, em[0].n_candidates + 1)
ax0.set_title("EM passes")
ax1.plot([r.n_pass for r in em], [r.best for r in em], "o-")
ax1.set_xlabel("pass")
ax1.set_ylabel(f"best {em[0].criterion} so far")
ax1.set_title("best criterion among the candidates")
fig.tight_layout()
plt.show()

# %%
# The same call again resumes
# ---------------------------
# The checkpoint holds the state after the last EM pass of the first run. The same call on the
# same data resumes from it: it first reads the data once to check that its digest is the one
# the checkpoint was written for, reports ``resume``, then makes only the passes still needed
# (here the scoring pass), and selects the same model.

reports_again = []
again = dgmm.select(X, **settings, checkpoint=checkpoint, progress=reports_again.append)
print("resumed from pass:", again.resumed_from)
print("passes reported:", len(reports), "then", len(reports_again))
for r in reports_again:
    print(r.line())
print("same choice:", again.best_params_ == found.best_params_)

# %%
# Resuming a run that was stopped
# -------------------------------
# Here the callback raises an exception after the fourth EM pass, as an interrupted job would
# stop. The checkpoint of that pass is already saved, so the next call starts from there, and
# its table of results equals the one of the run that was not interrupted.


class Stop(Exception):
    pass


def stop_after_four_em_passes(report):
    if report.phase == "em" and report.iteration == 4:
        raise Stop(f"stopped after pass {report.n_pass}")


stopped = folder / "stopped.ckpt"
try:
    dgmm.select(X, **settings, checkpoint=stopped, progress=stop_after_four_em_passes)
except Stop as e:
    print(e)
resumed = dgmm.select(X, **settings, checkpoint=stopped)
print("resumed from pass:", resumed.resumed_from, "of", resumed.n_passes_)
columns = ["n_components", "covariance_type", "restart", "bic"]
print("same table:", resumed.to_pandas()[columns].equals(found.to_pandas()[columns]))

# %%
# A changed setting starts afresh
# -------------------------------
# A checkpoint is resumed only under the same settings and data. With another ``tol`` the
# sweep starts from the beginning, and dgmm logs a warning that names the change. The
# warning goes to the ``dgmm`` logger; here a handler prints it.

handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
logging.getLogger("dgmm").addHandler(handler)
changed = dgmm.select(X, **settings, tol=1e-2, checkpoint=checkpoint)
logging.getLogger("dgmm").removeHandler(handler)
print("resumed from:", changed.resumed_from, "passes:", changed.n_passes_)
