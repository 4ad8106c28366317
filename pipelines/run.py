"""A whole configured run: checks, cluster, lockstep sweep, selection, outputs and report."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from pathlib import Path

import dask
import numpy as np
import yaml
from distributed import performance_report

from dgmm.em import pass_task_nbytes
from dgmm.estimator import from_em_state
from dgmm.io import InputData, save_model

from .cluster import connect
from .data import DataError, data_path, ensure_data, fingerprint, open_data, profile_data
from .errors import RunFailed
from .outputs import (
    RunDirs,
    mark_complete,
    publish,
    write_assignments,
    write_json,
)
from .paths import (
    check_no_overlap,
    check_output_name,
    check_output_path,
    claim,
    lock_path,
    zarr_store_root,
)
from .report import package_versions, plot_criteria, plot_scatter, sample_rows, summary, table
from .schema import ConfigError, LocalClusterConfig, ModelConfig, RunConfig, local_worker_limit
from .sweep import Candidate, CellResult, SweepRun, select

logger = logging.getLogger("pipelines")


def preflight(cfg: RunConfig, config_path: str | Path | None, generate: bool = True):
    """Every check that needs no cluster; nothing is created or changed.

    In order: the output path names a new folder, no path the run writes overlaps one it reads,
    the data is there and usable, K ≤ rows, the statistics fit a worker, and last the output
    may be written (so that an existing output does not mask a problem with the data).
    Generating demo data (``data.generate``) happens only after all of them.
    """
    out = cfg.output
    check_output_name(out.path)
    dirs = RunDirs(out.path)
    tls = getattr(cfg.cluster, "tls", None)
    reads = {
        "data.path": cfg.data.path,
        "the data array": data_path(cfg.data),
        "the data's Zarr store": zarr_store_root(data_path(cfg.data)),
        "the config file": config_path,
        **(
            {}
            if tls is None
            else {
                "cluster.tls.ca_file": tls.ca_file,
                "cluster.tls.cert": tls.cert,
                "cluster.tls.key": tls.key,
            }
        ),
    }
    check_no_overlap(
        {
            "output.path": out.path,
            "the run's working folder": dirs.work,
            "the lock file": lock_path(out.path),
        },
        reads,
    )
    pending = cfg.data.generate is not None and not Path(cfg.data.path).exists()
    x = None if pending else _checked_data(cfg)
    check_output_path(out.path, out.overwrite, ("run",))
    if dirs.work.exists() and not dirs.work.is_dir():
        raise ConfigError(
            f"'{dirs.work}' (the run's working folder) exists and is not a folder; remove it"
        )
    if pending and generate:
        ensure_data(cfg.data)
        x = _checked_data(cfg)
    return x


def _checked_data(cfg: RunConfig):
    x = open_data(cfg.data)
    k_max = max(cfg.model.n_components)
    if k_max > x.shape[0]:
        raise ConfigError(
            f"model.n_components: K = {k_max} exceeds the {x.shape[0]} rows of the data; "
            "use K <= the number of rows"
        )
    if isinstance(cfg.cluster, LocalClusterConfig):
        limit = local_worker_limit(cfg.cluster.memory_limit, cfg.cluster.n_workers)
        check_task_memory(cfg.model, x, limit, "cluster.memory_limit")
    return x


def check_task_memory(model: ModelConfig, x, limit: int | None, setting: str) -> int:
    """Refuse a sweep whose statistics cannot fit one worker; returns the per-task bytes."""
    cands = [(cov, k) for cov in model.covariance_types for k in model.n_components]
    cands = cands * model.n_init
    need = pass_task_nbytes(cands, x.shape[1], max(x.chunks[0]), x.dtype.itemsize)
    if limit is not None and need > 0.8 * limit:
        mib = 2**20
        raise ConfigError(
            f"one task of a pass needs about {need / mib:.0f} MiB ({len(cands)} candidates' "
            f"statistics at {x.shape[1]} features, chunks of {max(x.chunks[0])} rows), more "
            f"than 80% of the {limit / mib:.0f} MiB a worker may use; raise {setting}, or "
            "sweep fewer K values, restarts or full-covariance candidates"
        )
    return need


@contextlib.contextmanager
def _file_log(path: Path):
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


@contextlib.contextmanager
def _logged_failure(log: Path):
    """Keep the traceback in the run's log and raise a one-line error naming the log."""
    try:
        yield
    except ConfigError:
        raise
    except DataError as e:
        logger.exception("run failed")
        raise RunFailed(f"{e} (details in {log})") from e
    except Exception as e:
        logger.exception("run failed")
        raise RunFailed(f"{type(e).__name__}: {e} (details in {log}; rerun to resume)") from e


class _Progress:
    """Progress for people: passes, iteration, candidates running, best criterion so far."""

    def __init__(self, n_rows: int, criterion: str, enabled: bool, total: int):
        self.n, self.criterion, self.bar = n_rows, criterion, None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="pass", desc="EM", file=sys.stderr, disable=None)

    def __call__(self, live: list[Candidate], active: list[int]) -> None:
        running = [c.state for c in live if not (c.state.failed or c.state.converged)]
        best = min(
            (
                -2 * self.n * c.state.lower_bound
                + (2 if self.criterion == "aic" else np.log(self.n)) * c.state.params.n_parameters()
                for c in live
                if c.state.n_iter and not c.state.failed
            ),
            default=np.inf,
        )
        it = max((c.state.n_iter for c in live), default=0)
        msg = (
            f"iteration {it}, {len(active)} candidate(s) running, best {self.criterion} {best:.1f}"
        )
        logger.info(msg)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(
                f"it={it} running={len(running)} best_{self.criterion}={best:.1f}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(cfg: RunConfig, config_path: str | Path) -> Path:
    """Execute a validated run; returns the published output folder.

    The output is claimed for the whole run (a second run for it is refused) and checked again
    once claimed, so a run that finished meanwhile is not replaced without ``overwrite``.
    """
    x = preflight(cfg, config_path)
    config_text = Path(config_path).read_text(encoding="utf-8")
    with claim(cfg.output.path):
        check_output_path(cfg.output.path, cfg.output.overwrite, ("run",))
        return _run_claimed(cfg, x, config_text)


def _run_claimed(cfg: RunConfig, x, config_text: str) -> Path:
    dirs = RunDirs(cfg.output.path)
    dirs.work.mkdir(parents=True, exist_ok=True)
    config_hash = cfg.result_hash()
    with _file_log(dirs.log), _logged_failure(dirs.log):
        logger.info("run of config hash %s", config_hash)
        with dask.config.set(cfg.dask), connect(cfg.cluster) as client:
            if not isinstance(cfg.cluster, LocalClusterConfig):
                check_task_memory(
                    cfg.model,
                    x,
                    _smallest_worker_limit(client),
                    "the workers' memory limit (dask worker --memory-limit)",
                )
            link = (
                client.dashboard_link
                if cfg.cluster.type != "local" or cfg.cluster.dashboard_address
                else None
            )
            print(f"Dask dashboard: {link or 'disabled'}", flush=True)
            logger.info("dashboard %s", link)
            report_ctx = (
                performance_report(filename=str(dirs.work / "dask-report.html"))
                if cfg.output.performance_report
                else contextlib.nullcontext()
            )
            with report_ctx:
                cells, best, sizes, n_passes = _sweep_and_write(cfg, x, dirs, config_hash)
        _finish(cfg, dirs, cells, best, sizes, n_passes, config_hash, config_text, x)
    publish(dirs.staging, dirs.final)
    shutil.rmtree(dirs.work, ignore_errors=True)
    print(summary(cells, best, cfg.selection.criterion, sizes))
    print(f"\nOutputs in {dirs.final}")
    return dirs.final


def _smallest_worker_limit(client) -> int | None:
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    limited = [m for m in limits if m > 0]
    return min(limited) if limited else None


def _sweep_and_write(cfg: RunConfig, x, dirs: RunDirs, config_hash: str):
    data = InputData(x, None, None, None, None, lazy=True)
    n_cand = len(cfg.model.n_components) * len(cfg.model.covariance_types) * cfg.model.n_init
    print(
        f"{n_cand} candidate(s) on {x.shape[0]} rows x {x.shape[1]} features "
        f"({len(x.chunks[0])} chunks), config hash {config_hash}",
        flush=True,
    )
    progress = _Progress(
        x.shape[0], cfg.selection.criterion, cfg.output.progress, cfg.model.max_iter
    )
    t0 = time.perf_counter()
    # One pass before any fit: NaN/inf rows and constant columns are refused up front.
    profile = profile_data(x, f"data '{data_path(cfg.data)}'")
    logger.info("data checked: column min %s, max %s", profile.lo.tolist(), profile.hi.tolist())
    sweep = SweepRun(
        cfg.model,
        data,
        dirs.checkpoint,
        config_hash,
        cfg.selection.criterion,
        progress,
        checked=True,
        data_key=fingerprint(x, profile),
    )
    try:
        cells = sweep.run()
    finally:
        progress.close()
    best = select(cells, cfg.selection.criterion)
    logger.info(
        "sweep done in %.1f s, %d passes; selected %s K=%d",
        time.perf_counter() - t0,
        sweep.passes.n_passes,
        best.covariance_type,
        best.n_components,
    )
    shutil.rmtree(dirs.staging, ignore_errors=True)
    dirs.staging.mkdir(parents=True)
    sizes = write_assignments(dirs.staging, x, best.state.params, cfg.output.probabilities)
    return cells, best, sizes, sweep.passes.n_passes


def _finish(
    cfg,
    dirs,
    cells: list[CellResult],
    best: CellResult,
    sizes,
    n_passes: int,
    config_hash: str,
    config_text: str,
    x,
) -> None:
    st = dirs.staging
    m = cfg.model
    gm = from_em_state(
        best.state,
        tol=m.tol,
        reg_covar=best.reg_covar,
        max_iter=m.max_iter,
        init_params=m.init,
        random_state=m.random_state,
    )
    save_model(gm, st / "model")
    (st / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (st / "config.original.yaml").write_text(config_text)
    report = {
        "config_hash": config_hash,
        "criterion": cfg.selection.criterion,
        "selected": best.row(),
        "cluster_sizes": [int(s) for s in sizes],
        "candidates": [c.row() for c in cells],
        "n_passes": n_passes,
        "data": {
            "path": str(data_path(cfg.data)),
            "shape": list(x.shape),
            "chunks": [int(x.chunks[0][0]), int(x.shape[1])],
            "dtype": str(x.dtype),
        },
        "versions": package_versions(),
    }
    write_json(st / "report.json", report)
    plot_criteria(cells, best, cfg.selection.criterion, st / "criteria.png")
    rows, idx = sample_rows(x)
    plot_scatter(
        rows,
        gm.predict(rows),
        st / "clusters.png",
        f"{best.covariance_type}, K={best.n_components} ({len(idx)} sampled rows)",
    )
    (st / "table.txt").write_text(
        table(cells, cfg.selection.criterion)
        + "\n\n"
        + summary(cells, best, cfg.selection.criterion, sizes)
        + "\n"
    )
    for name in ("dask-report.html", "run.log"):
        if (dirs.work / name).exists():
            shutil.copy(dirs.work / name, st / name)
    mark_complete(st, "run", {"config_hash": config_hash, "report": report})
