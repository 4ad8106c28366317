"""
A SLURM run configuration and its job script
============================================

The ``dgmm run`` command reads a YAML configuration. With ``cluster.type: slurm`` its workers
are SLURM jobs started through dask-jobqueue. This example loads the SLURM configuration
shipped in ``configs/slurm.yaml``, renders the job script a run would submit (no job is
submitted and no queue is needed), and compares a worker's memory limit with what the
configured sweep's passes hold on a worker.
"""

# %%
# Loading the configuration
# -------------------------
# `pipelines.schema.load_config` reads the file, checks every key and value, and fills in the
# defaults. The examples live in ``docs/examples/``, two folders below the repository root.

from pathlib import Path

import dask
import matplotlib.pyplot as plt
from dask.utils import format_bytes, parse_bytes

from dgmm import memory
from pipelines.cluster import jobqueue_cluster
from pipelines.schema import load_config

try:
    root = Path(__file__).resolve().parents[2]
except NameError:  # run without a file, e.g. in a notebook started in docs/examples
    root = Path.cwd().resolve().parents[1]
config = load_config(root / "configs" / "slurm.yaml")
print(config.model)
print(config.cluster)

# %%
# The job script
# --------------
# `pipelines.cluster.jobqueue_cluster` builds the dask-jobqueue cluster of the configuration
# without submitting any job; ``job_script()`` is the script each of the ``jobs`` would run. It
# starts a Dask scheduler in this process to have an address to write into the script; the
# Dask setting below puts that scheduler's dashboard on a free port. The worker command ends
# with ``--preload dgmm.worker``, which dgmm adds, and its last ``--memory-limit`` is the one
# from ``worker_extra_args`` in the configuration, which takes precedence over the share of
# ``memory`` that dask-jobqueue computes.

with dask.config.set({"jobqueue.slurm.scheduler-options": {"dashboard_address": ":0"}}):
    with jobqueue_cluster(config.cluster) as cluster:
        script = cluster.job_script()
print(script)

# %%
# Memory of a worker and of a pass
# --------------------------------
# Each job runs ``processes`` workers sharing ``cores`` and ``memory``. The sweep's candidates
# are every K × covariance type × restart of the ``model`` section. `dgmm.memory.plan_for`
# groups them into passes whose statistics fit a worker under its memory limit. What a worker
# holds depends on the number of columns and the chunk size of the data, which is not on this
# machine; the numbers below assume 8 float64 columns in chunks of 100 000 rows.

options = config.cluster.options
extra = options["worker_extra_args"]
worker_limit = parse_bytes(extra[extra.index("--memory-limit") + 1])
job_memory = parse_bytes(options["memory"])
share = job_memory // options["processes"]

n_features, chunk_rows, itemsize = 8, 100_000, 8
candidates = [
    (cov, k) for cov in config.model.covariance_types for k in config.model.n_components
] * config.model.n_init
plan = memory.plan_for(candidates, n_features, chunk_rows, itemsize, worker_limit)
print("candidates:", len(candidates))
print("passes per EM iteration:", len(plan.batches))
print("bytes a worker may give to statistics:", format_bytes(plan.budget))
print("most bytes a worker holds in one pass:", format_bytes(plan.task_bytes))

# %%
# The figure shows the job's resources and, on a logarithmic scale, the memory of a job, of
# one worker and of one pass of this sweep.

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 2]})
resources = {
    "cores": options["cores"],
    "workers": options["processes"],
    "threads\nper worker": options["cores"] // options["processes"],
}
ax0.bar(list(resources), list(resources.values()), color="C0")
for i, v in enumerate(resources.values()):
    ax0.text(i, v, str(v), ha="center", va="bottom")
ax0.set_title(f"one job ({config.cluster.jobs} jobs, walltime {options['walltime']})")

bars = {
    "job\nmemory": job_memory,
    "memory /\nworkers": share,
    "worker\nmemory limit": worker_limit,
    "budget for\nstatistics": plan.budget,
    "held in\none pass": plan.task_bytes,
}
ax1.bar(list(bars), list(bars.values()), color=["C1", "C1", "C1", "C2", "C3"])
for i, v in enumerate(bars.values()):
    ax1.text(i, v, format_bytes(v), ha="center", va="bottom")
ax1.set_yscale("log")
ax1.set_ylabel("bytes")
ax1.set_title(f"memory ({n_features} columns, chunks of {chunk_rows:,} rows)")
fig.tight_layout()
plt.show()
