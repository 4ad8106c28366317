"""Per-iteration EM time of Spark MLlib's Gaussian mixture against dgmm and scikit-learn.

All three fit the same seeded float64 data (`run.make_case`: K unit-variance clusters with
centres N(0, 4²) per feature, well separated) with full covariances, in the same run:

- dgmm: ``GaussianMixture(K, covariance_type="full", init_params="random_from_data", tol=0,
  random_state=0, max_iter=it)`` on the numpy array;
- scikit-learn: ``sklearn.mixture.GaussianMixture`` with the same arguments;
- Spark: ``pyspark.ml.clustering.GaussianMixture(k=K, maxIter=it, tol=0.0, seed=0)`` on a
  DataFrame of the same rows (one vector column), cached and materialised (``count()``) before
  any timing, in ``local[cores]`` mode (its only covariance type is full; its initialisation,
  the mean and diagonal variance of 5 rows sampled per component, is its own).

The time per iteration is ``(t(1 + m iterations) − t(1 iteration)) / m``, best of ``repeats``
pairs (as `run.per_iteration`, after one untimed warm-up fit of 1 iteration, which takes the
JVM's class loading and compilation out of Spark's figures), so set-up, initialisation and any
final pass cancel out;
``t(1)`` is also reported, as the fixed cost of one fit. ``x dgmm`` is an implementation's time
per iteration over dgmm's (above 1: slower than dgmm). ``loglik`` is the mean log-likelihood per
row after the longer fit (dgmm's and scikit-learn's ``lower_bound_``, Spark's
``summary.logLikelihood / N``; each evaluated in the last E-step, before the last M-step). dgmm
and scikit-learn start from the same rows and agree; Spark's start (means of 5 random rows) has
usually not separated the clusters yet after so few iterations, so its value is lower. That does
not change the cost of an iteration: each of the three computes every row's density under every
component and the weighted moments in one pass, then the M-step (Spark per row with level-2
BLAS, uncentred moments summed through a shuffle and the M-step on the driver).

dgmm lives in the project's virtualenv and Spark in its own; this script runs under the project's
and runs the Spark part as a subprocess of ``--spark-python`` executing this same file with
``--spark-worker DATA.npy``, which loads the saved array and prints its timings as JSON. Only
numpy and pyspark are needed in the Spark virtualenv (and Java 17+ for Spark 4):

    python3 -m venv /tmp/sparkvenv && /tmp/sparkvenv/bin/pip install pyspark numpy
    .venv/bin/python benchmarks/spark.py --runs 2 --json benchmarks/spark.json

``--runs R`` repeats the whole comparison (a fresh Spark JVM each time) on the same data, so that
the noise of a shared machine shows.

Usage: python benchmarks/spark.py [--n N] [--d D] [--k K] [--iterations M] [--repeats R]
       [--runs R] [--spark-python PATH] [--spark-master local[C]] [--spark-driver-memory 8g]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

# Nothing heavier than numpy at the top: the Spark worker runs this file in the Spark virtualenv,
# which has neither dgmm, scikit-learn nor this folder's `run` dependencies (threadpoolctl).


def per_iteration(make, X, m: int, repeats: int) -> tuple[float, list[list[float]], object]:
    """Best-of-``repeats`` of (t(1 + m iterations) − t(1 iteration)) / m, as `run.per_iteration`,
    with the raw ``[t(1), t(1 + m)]`` pairs and the last ``1 + m`` fit's model.

    One untimed 1-iteration fit comes first: Spark's first fit in a fresh JVM spends seconds
    loading classes and compiling, which would otherwise land in one ``t(1)`` only."""
    make(1).fit(X)
    best, pairs, model = np.inf, [], None
    for _ in range(repeats):
        t = time.perf_counter()
        make(1).fit(X)
        t1 = time.perf_counter() - t
        t = time.perf_counter()
        model = make(1 + m).fit(X)
        t2 = time.perf_counter() - t
        pairs.append([t1, t2])
        best = min(best, (t2 - t1) / m)
    return best, pairs, model


def _spark_rows(part: int, path: str, parts: int):
    """Rows ``part`` of ``parts`` of the saved array, as one-vector rows (runs in Spark's Python
    workers, which only build the DataFrame once, before any timing)."""
    from pyspark.ml.linalg import Vectors

    X = np.load(path, mmap_mode="r")
    lo, hi = len(X) * part // parts, len(X) * (part + 1) // parts
    for row in X[lo:hi]:
        yield (Vectors.dense(np.asarray(row)),)


def spark_worker(args: argparse.Namespace) -> dict:
    """Fit Spark's GaussianMixture on the saved array; runs in the Spark virtualenv."""
    import pyspark
    from pyspark.ml.clustering import GaussianMixture
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructField, StructType

    os.environ["PYSPARK_PYTHON"] = sys.executable  # the Python workers need this venv's numpy
    spark = (
        SparkSession.builder.master(args.spark_master)
        .appName("dgmm-benchmark")
        .config("spark.driver.memory", args.spark_driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    jvm = sc._jvm
    parts = args.spark_partitions or sc.defaultParallelism
    shape = np.load(args.spark_worker, mmap_mode="r").shape

    t = time.perf_counter()
    schema = StructType([StructField("features", VectorUDT(), False)])
    rdd = sc.parallelize(range(parts), parts).flatMap(
        lambda i, path=args.spark_worker: _spark_rows(i, path, parts)
    )
    df = spark.createDataFrame(rdd, schema).cache()
    rows = df.count()
    load_s = time.perf_counter() - t
    assert rows == shape[0], (rows, shape)

    t, pairs, model = per_iteration(
        lambda it: GaussianMixture(k=args.k, maxIter=it, tol=0.0, seed=0),
        df,
        args.iterations,
        args.repeats,
    )
    summary = model.summary

    def jvm_class(expr):
        try:
            return expr().getClass().getName()
        except Exception as exc:  # the netlib classes may move between Spark versions
            return f"unknown ({type(exc).__name__})"

    system = jvm.java.lang.System
    out = {
        "seconds_per_iter": t,
        "fit_seconds": pairs,
        "n_iter": summary.numIter,
        "mean_log_likelihood": summary.logLikelihood / rows,
        "dataframe_build_seconds": load_s,
        "partitions": df.rdd.getNumPartitions(),
        "master": args.spark_master,
        "default_parallelism": sc.defaultParallelism,
        "driver_memory": args.spark_driver_memory,
        "driver_max_heap_bytes": jvm.java.lang.Runtime.getRuntime().maxMemory(),
        "versions": {
            "pyspark": pyspark.__version__,
            "spark": spark.version,
            "java": system.getProperty("java.version"),
            "java_vm": system.getProperty("java.vm.name"),
            "numpy_spark_venv": np.__version__,
            "python_spark_venv": sys.version.split()[0],
        },
        "blas": {
            "netlib": jvm_class(lambda: jvm.dev.ludovic.netlib.blas.BLAS.getInstance()),
            "java": jvm_class(lambda: jvm.dev.ludovic.netlib.blas.JavaBLAS.getInstance()),
        },
    }
    spark.stop()
    return out


def run_spark(path: str, args: argparse.Namespace) -> dict:
    """This file's ``--spark-worker`` mode under ``--spark-python``: its last line out is JSON."""
    cmd = [args.spark_python, os.path.abspath(__file__), "--spark-worker", path]
    cmd += ["--k", str(args.k), "--iterations", str(args.iterations)]
    cmd += ["--repeats", str(args.repeats), "--spark-master", args.spark_master]
    cmd += ["--spark-driver-memory", args.spark_driver_memory]
    cmd += ["--spark-partitions", str(args.spark_partitions)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_once(X: np.ndarray, path: str, args: argparse.Namespace) -> dict:
    """dgmm, scikit-learn and Spark, one after the other, on the same data; prints the table."""
    from sklearn.mixture import GaussianMixture as SkGM

    from dgmm import GaussianMixture

    common = dict(init_params="random_from_data", tol=0, random_state=0)
    load = os.getloadavg()
    res = {}
    for name, cls in (("dgmm", GaussianMixture), ("scikit-learn", SkGM)):
        t, pairs, model = per_iteration(
            lambda it, cls=cls: cls(args.k, covariance_type="full", max_iter=it, **common),
            X,
            args.iterations,
            args.repeats,
        )
        res[name] = {
            "seconds_per_iter": t,
            "fit_seconds": pairs,
            "n_iter": int(model.n_iter_),
            "mean_log_likelihood": float(model.lower_bound_),
        }
    res["spark"] = run_spark(path, args)
    base = res["dgmm"]["seconds_per_iter"]
    print(
        f"{'implementation':>14} {'s/iter':>8} {'x dgmm':>7} {'t(1) s':>7} "
        f"{f't({1 + args.iterations}) s':>7} {'iters':>5} {'loglik':>9}"
    )
    for name, r in res.items():
        r["ratio_to_dgmm"] = r["seconds_per_iter"] / base
        t1, t2 = min(r["fit_seconds"], key=lambda p: p[1] - p[0])
        print(
            f"{name:>14} {r['seconds_per_iter']:8.3f} {r['ratio_to_dgmm']:7.2f} {t1:7.2f} "
            f"{t2:7.2f} {r['n_iter']:5d} {r['mean_log_likelihood']:9.4f}"
        )
    print(
        f"(load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"Spark DataFrame built in {res['spark']['dataframe_build_seconds']:.1f} s, untimed)",
        flush=True,
    )
    return {"loadavg_before": load, "loadavg_after": os.getloadavg(), "results": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="rows (default 1,000,000)")
    ap.add_argument("--d", type=int, default=16, help="features (default 16)")
    ap.add_argument("--k", type=int, default=8, help="components (default 8)")
    ap.add_argument("--iterations", type=int, default=4, help="m, iterations timed (default 4)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many (default 2)")
    ap.add_argument("--runs", type=int, default=1, help="repeat the whole comparison (default 1)")
    ap.add_argument("--spark-python", default="/tmp/sparkvenv/bin/python")
    ap.add_argument(
        "--spark-master", default=f"local[{os.cpu_count() or 1}]", help="default local[cores]"
    )
    ap.add_argument("--spark-driver-memory", default="8g")
    ap.add_argument(
        "--spark-partitions", type=int, default=0, help="0: Spark's default parallelism"
    )
    ap.add_argument("--json", default=None, help="write results here (default: print only)")
    ap.add_argument("--spark-worker", default=None, metavar="NPY", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.spark_worker:
        print(json.dumps(spark_worker(args)), flush=True)
        return

    import sklearn
    from run import make_case  # this folder is on the path

    import dgmm

    X = make_case(args.n, args.d, args.k)
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    print(f"N={args.n:,} D={args.d} K={args.k} float64, full covariance, {os.cpu_count()} cores")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npy")
        np.save(path, X)
        for i in range(args.runs):
            print(f"\nrun {i + 1} of {args.runs}")
            runs.append(run_once(X, path, args))
    spark = runs[0]["results"]["spark"]
    out = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "dtype": "float64",
        "covariance_type": "full",
        "iterations_timed": args.iterations,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "dgmm": dgmm.__version__,
            "scikit-learn": sklearn.__version__,
            **spark["versions"],
            "java_version_output": java.strip(),
            "spark_blas": spark["blas"],
        },
        "runs": runs,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
