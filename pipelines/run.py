"""A whole configured run: checks, cluster, lockstep sweep, selection, outputs and report."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import dask
import numpy as np
import yaml
from dask.utils import parse_timedelta
from distributed import performance_report

import dgmm
from dgmm import em as dgmm_em
from dgmm import memory as dgmm_memory
from dgmm.files import is_own, set_aside
from dgmm.selection import CHECKPOINT_KIND
from dgmm.store import ResultStore, default_store_path
from dgmm.tables import Table
from dgmm.validation import check_magnitude

from .cluster import check_worker_view, connect
from .dask_settings import local_worker_limit, worker_memory_bytes
from .data import data_path, ensure_data, open_data
from .errors import RunFailed, disk_full
from .outputs import (
    ASSIGNMENTS,
    RunDirs,
    in_column_order,
    mark_run_complete,
    publish,
    write_assignments,
    write_json,
)
from .paths import (
    check_companion,
    check_no_links,
    check_no_overlap,
    check_output_name,
    check_output_path,
    claim,
    claim_companion,
    lock_path,
    remove_companion,
    zarr_store_root,
)
from .report import (
    clusters_figure,
    components_text,
    package_versions,
    plot_criteria,
    save_figure,
    shown_rows,
    summary,
    table,
    uncertainty_figure,
    weights_figure,
)
from .run_log import LogFile, file_log
from .schema import ConfigError, LocalClusterConfig, ModelConfig, RunConfig
from .standardize import STANDARDIZE_FILE, standardize

logger = logging.getLogger("pipelines")
# What a run writes in its working folder (never through a link).
WORK_FILES = ("run.log", "dask-report.html", "checkpoint.npz", "staging")
# Rows the report's scatter plots draw: a uniform sample.
PLOT_ROWS = 5000
# Beside a saved model: the column transform its data had (``data.standardize``).


def preflight(cfg: RunConfig, config_path: str | Path | None, generate: bool = True):
    """Every check that needs no cluster; nothing is created or changed.

    In order: the output path names a new folder, no path the run writes overlaps one it reads,
    the data is there and usable, K ≤ rows, the statistics fit a worker, and last the output
    may be written (so that an existing output does not mask a problem with the data).
    Generating demo data (``data.generate``) happens only after all of them. Returns the data
    as a `dgmm.tables.Table` (rows and column names), or None when it is still to be
    generated and ``generate`` is false.
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
    if cfg.store.enabled:  # written by every run: never the data, nor what a run replaces
        check_no_overlap(
            {"store.path": cfg.store.path or default_store_path()},
            {**reads, "output.path": out.path, "the run's working folder": dirs.work},
            "the store of fits is written by every run: give it a folder of its own",
        )
    pending = cfg.data.generate is not None and not Path(cfg.data.path).exists()
    x = None if pending else _checked_data(cfg)
    check_output_path(out.path, out.overwrite, ("run",))
    if check_companion(dirs.work, out.path, "work"):
        check_no_links(dirs.work, WORK_FILES)
    if pending and generate:
        ensure_data(cfg.data)
        x = _checked_data(cfg)
    return x


def _checked_data(cfg: RunConfig) -> Table:
    rows = open_data(cfg.data)
    x = rows.x
    k_max = max(cfg.model.n_components)
    if k_max > x.shape[0]:
        raise ConfigError(
            f"model.n_components: K = {k_max} exceeds the {x.shape[0]} rows of the data; "
            "use K <= the number of rows"
        )
    if isinstance(cfg.cluster, LocalClusterConfig):
        limit = local_worker_limit(cfg.cluster.memory_limit, cfg.cluster.n_workers)
        check_task_memory(cfg.model, x, limit, "cluster.memory_limit")
    return rows


def check_task_memory(
    model: ModelConfig, x, limit: int | None, setting: str
) -> dgmm_memory.PassPlan:
    """The plan of the sweep's passes under a worker memory limit; refuses a sweep whose
    largest candidate cannot fit a worker even alone in its pass, or a sample_size whose
    sample cannot be gathered on a worker."""
    cands = [(cov, k) for cov in model.covariance_types for k in model.n_components]
    n, d = x.shape
    cap = dgmm_memory.max_sample_rows(limit, d, max(x.chunks[0]), x.dtype, False)
    if model.sample_size and cap is not None and min(model.sample_size, n) > cap:
        raise ConfigError(
            f"model.sample_size: {model.sample_size} rows of {d} features do not fit the "
            f"{limit / 2**20:.0f} MiB worker (the sampling pass gathers the sample on one "
            f"worker, which holds it twice while combining); use model.sample_size <= {cap}, "
            f"or raise {setting}"
        )
    try:
        return dgmm_memory.plan_for(
            cands * model.n_init, x.shape[1], max(x.chunks[0]), x.dtype.itemsize, limit
        )
    except dgmm_memory.TaskMemoryError:
        cov, k = max(cands, key=lambda c: dgmm_memory.statistics_nbytes(*c, x.shape[1]))
        need = dgmm_memory.statistics_nbytes(cov, k, x.shape[1])
        raise ConfigError(
            f"the statistics of one {cov} K={k} candidate at {x.shape[1]} features "
            f"({need / 2**20:.0f} MiB, held 4 times while combined) do not fit the "
            f"{limit / 2**20:.0f} MiB a worker may use, even alone in a pass; raise {setting}, "
            "or sweep smaller K or a cheaper covariance type"
        ) from None


def _set_aside_foreign_checkpoint(path: Path) -> None:
    """In the run's own folder, a checkpoint dgmm cannot recognise as its own (cut short in its
    first line, emptied) is renamed aside, so that the run starts afresh instead of refusing."""
    if os.path.lexists(path) and not is_own(path, CHECKPOINT_KIND):
        aside = set_aside(path)
        logger.warning("checkpoint '%s' is not readable as dgmm's; set aside as '%s'", path, aside)


@contextlib.contextmanager
def _performance_report(path: Path):
    """Dask's performance report of the run, written at its end within a bounded time.

    Writing it asks the scheduler, and through it every worker, for their profiles: a stopped
    scheduler or worker would hold the run there forever, after its real outcome is known.
    """
    report = performance_report(filename=str(path))
    report.__enter__()
    timeout = parse_timedelta(dask.config.get("dgmm.stall-timeout"))
    try:
        yield
    except BaseException:
        timeout = min(timeout, 5.0)  # the run failed: its report may not hold its end up
        raise
    finally:
        try:
            dgmm_em.bounded(
                lambda: report.__exit__(None, None, None),
                timeout,
                "with the performance report (which gathers every worker's profile)",
            )
        except dgmm_em.StalledError as e:
            logger.warning("the Dask performance report was not written: %s", e)


@contextlib.contextmanager
def _logged_failure(log: Path, handler: LogFile, output: Path):
    """Keep the traceback in the run's log and raise a one-line error naming the log (or, when
    the disk is full, the folder that has no room)."""
    try:
        yield
    except ConfigError:
        raise
    except dgmm.DataError as e:
        logger.exception("run failed")
        raise RunFailed(f"{e} (details in {_where(log, handler)})") from e
    except Exception as e:
        logger.exception("run failed")
        full = disk_full(e)
        if full is not None:
            raise RunFailed(_no_room(output, full)) from e
        detail = f"details in {_where(log, handler)}; rerun to resume"
        raise RunFailed(f"{type(e).__name__}: {e} ({detail})") from e


def _where(log: Path, handler: LogFile) -> str:
    return str(log) if handler.failed is None else f"{log}, which could not be written either"


def _no_room(output: Path, e: OSError) -> str:
    folder = Path(e.filename).parent if e.filename else output.parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return (
        f"no space left on the file system of '{folder}' ({free}; {e.strerror}) while the run "
        "wrote its outputs, checkpoint or log there; free space or choose another output.path, "
        "then rerun the same command to resume"
    )


class _Progress:
    """Progress of a run: one line per pass over the data into run.log, and on stderr either a
    bar (a terminal) or the same lines, at most one every ``interval`` seconds (batch jobs,
    redirected output). A resumed checkpoint is always said.

    The bar has no total: how many passes EM takes is not known in advance, so it shows passes
    done, their rate and the last report rather than a made-up ETA.
    """

    def __init__(self, enabled: bool, interval: float, stream=None):
        self.t0 = time.perf_counter()  # one clock for the run's passes, whoever reports them
        self.stream = sys.stderr if stream is None else stream
        self.interval, self.last, self.bar = interval, -float("inf"), None
        self.lines = enabled
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar, self.lines = tqdm(unit="pass", desc="dgmm", file=self.stream), False

    def __call__(self, report: dgmm.PassReport) -> None:
        report = replace(report, elapsed=time.perf_counter() - self.t0)
        line = report.line()
        logger.info(line)
        now = time.monotonic()
        if self.bar is not None:
            if report.phase == "resume":
                self.bar.write(f"dgmm: {line}", file=self.stream)
            else:
                self.bar.update(1)
                best = "" if report.best is None else f" best {report.criterion} {report.best:.6g}"
                self.bar.set_postfix_str(
                    f"{report.phase} it={report.iteration} "
                    f"running={report.running}/{report.n_candidates}{best}"
                )
        elif report.phase == "resume":
            print(f"dgmm: {line}", file=self.stream, flush=True)
        elif self.lines and now - self.last >= self.interval:
            print(f"dgmm: {line}", file=self.stream, flush=True)
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


Say = Callable[[str], None]


@dataclass
class RunOutcome:
    """What a finished run made: the published folder, the selection and the cluster sizes."""

    path: Path
    selection: dgmm.SelectionResult
    sizes: list[int]
    summary: str


def run(cfg: RunConfig, config_path: str | Path, say: Say = lambda text: None) -> RunOutcome:
    """Execute a validated run; returns what it published.

    The output is claimed for the whole run (a second run for it is refused) and checked again
    once claimed, so a run that finished meanwhile is not replaced without ``overwrite``.
    ``say`` receives the lines meant for people (the command line prints them).
    """
    rows = preflight(cfg, config_path)
    x = rows.x
    config_text = Path(config_path).read_text(encoding="utf-8")
    with claim(cfg.output.path):
        check_output_path(cfg.output.path, cfg.output.overwrite, ("run",))
        dirs = RunDirs(cfg.output.path)
        claim_companion(dirs.work, cfg.output.path, "work", fresh=False)
        check_no_links(dirs.work, WORK_FILES)
        with (
            file_log(dirs.log, cfg.output.library_log) as log_file,
            _logged_failure(dirs.log, log_file, dirs.final),
        ):
            logger.info("run of config hash %s", cfg.result_hash())
            _set_aside_foreign_checkpoint(dirs.checkpoint)
            with dask.config.set(cfg.dask), connect(cfg.cluster) as client:
                if not isinstance(cfg.cluster, LocalClusterConfig):
                    limit = dgmm_em.cluster_memory_limit()
                    check_task_memory(cfg.model, x, limit, "the workers' --memory-limit")
                    # workers run elsewhere: they must see these rows and this folder
                    check_worker_view(
                        client, x, str(data_path(cfg.data)), dirs.work, cfg.cluster.timeout
                    )
                link = (
                    client.dashboard_link
                    if cfg.cluster.type != "local" or cfg.cluster.dashboard_address
                    else None
                )
                say(f"Dask dashboard: {link or 'disabled'}")
                logger.info("dashboard %s", link)
                report_ctx = (
                    _performance_report(dirs.work / "dask-report.html")
                    if cfg.output.performance_report
                    else contextlib.nullcontext()
                )
                progress = _Progress(cfg.output.progress, cfg.output.progress_interval)
                with report_ctx, contextlib.closing(progress):
                    t0 = time.perf_counter()
                    x, profile, transform = prepare_rows(cfg, x, progress, t0)
                    found = select_model(
                        cfg, x, dirs.checkpoint, say, progress, profile, rows.names
                    )
                    shutil.rmtree(dirs.staging, ignore_errors=True)  # in dgmm's own folder
                    dirs.staging.mkdir(parents=True)
                    t1 = time.perf_counter()
                    sizes = write_labels(
                        dirs.staging / ASSIGNMENTS, x, found, cfg.output.probabilities
                    )
                    progress(_labels_report(found, x.shape[0], time.perf_counter() - t1, t0))
            text = write_report(cfg, dirs, found, sizes, x, config_text, transform)
        publish(dirs.staging, dirs.final)
        remove_companion(dirs.work, cfg.output.path, "work")
    return RunOutcome(dirs.final, found, sizes, text)


def prepare_rows(cfg: RunConfig, x, progress: _Progress, t0: float):
    """The rows the models are fitted to: as read, or standardised (``data.standardize``) with
    the column means and standard deviations of a profile pass, which then stands for
    `dgmm.select`'s own. Returns the rows, that profile (or None) and the transform (or None).
    """
    if not cfg.data.standardize:
        return x, None, None
    started = time.perf_counter()
    profile = dgmm.profile(x, name=f"data '{data_path(cfg.data)}'")
    progress(
        dgmm.PassReport(
            1,
            "profile",
            0,
            0,
            len(cfg.fit_settings().candidates()),
            "bic" if cfg.selection.criterion == "icl" else cfg.selection.criterion,
            None,
            int(x.shape[0]),
            time.perf_counter() - started,
            time.perf_counter() - t0,
        )
    )
    if profile.n_bad:  # dgmm.select names the rows
        return x, profile, None
    check_magnitude(profile, f"data '{data_path(cfg.data)}'")  # a spread no scale can come from
    center, scale = profile.mean, np.where(profile.std > 0, profile.std, 1.0)
    transform = {"center": center.tolist(), "scale": scale.tolist()}
    return standardize(x, transform), profile.affine(center, scale), transform


def select_model(
    cfg: RunConfig,
    x,
    checkpoint: Path,
    say: Say = lambda text: None,
    progress: _Progress | None = None,
    profile: dgmm.ColumnProfile | None = None,
    columns: tuple[str, ...] | None = None,
) -> dgmm.SelectionResult:
    """The configured selection on the data: `dgmm.select` with the run's checkpoint.

    ``columns``: the data's column names (Parquet, CSV): the fitted models keep them
    (``feature_names_in_``) and messages name columns by them.

    Its first pass profiles the data (NaN/inf rows, constant columns, a digest that binds the
    checkpoint to the data); a checkpoint of the same config and data is resumed. Every pass
    is reported to ``progress``.
    """
    settings = cfg.fit_settings()
    n_cand = len(settings.candidates())
    say(
        f"{n_cand} candidate(s) on {x.shape[0]} rows x {x.shape[1]} features "
        f"({len(x.chunks[0])} chunks), config hash {cfg.result_hash()}"
    )
    own = progress is None
    if own:
        progress = _Progress(cfg.output.progress, cfg.output.progress_interval)
    store = None
    if cfg.store.enabled:
        store = ResultStore(
            cfg.store.path,
            worker_memory_bytes(cfg.store.max_size),
            origin=f"run '{cfg.output.path}' (config {cfg.result_hash()})",
        )
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = dgmm.select(
                x if columns is None else Table(x, columns),
                settings=settings,
                checkpoint=checkpoint,
                checkpoint_key={"config_hash": cfg.result_hash()},
                store=store,
                progress=progress,
                profile=profile,
                name=f"data '{data_path(cfg.data)}'",
            )
        finally:
            if own:
                progress.close()
    # the selection's warnings (an unconverged choice), each once: logged and said
    for category, message in dict.fromkeys((w.category.__name__, str(w.message)) for w in caught):
        logger.warning("%s: %s", category, message)
        say(f"warning: {message}")
    if found.reuse is not None and found.reuse["reused"]:
        say(reuse_line(found.reuse, len(found.results)))
    best = found.best_params_
    logger.info(
        "selection done in %.1f s, %d passes; selected %s K=%d",
        time.perf_counter() - t0,
        found.n_passes_,
        best["covariance_type"],
        best["n_components"],
    )
    return found


def reuse_line(reuse: dict, n_candidates: int) -> str:
    """What a run reused from the store, in one line."""
    origins = ", ".join(f"{n} from {o}" for o, n in reuse["origins"].items())
    line = f"store: reused {reuse['reused']} of {n_candidates} candidates ({origins})"
    if reuse["changed"]:
        line += f"; {reuse['changed']} since the last run on this data"
    return f"{line}; {reuse['fitted']} fitted"


def _labels_report(found: dgmm.SelectionResult, n_rows: int, seconds: float, t0: float):
    best = _selected_row(found)
    return dgmm.PassReport(
        found.n_passes_ + 1,
        "labels",
        max((r["n_iter"] or 0) for r in found.results),
        0,
        len(found.results),
        found.criterion,
        best[found.criterion],
        n_rows,
        seconds,
        time.perf_counter() - t0,
    )


def write_labels(group: Path, x, found: dgmm.SelectionResult, probabilities: bool) -> list[int]:
    """Labels (and probabilities) of the selected model, one more pass; the cluster sizes."""
    model = in_column_order(found.best_estimator_)  # x is in the model's column order
    return [int(s) for s in write_assignments(group, x, model, probabilities)]


def _selected_row(found: dgmm.SelectionResult) -> dict:
    best = found.best_params_
    return next(
        r
        for r in found.cells()
        if r["n_components"] == best["n_components"]
        and r["covariance_type"] == best["covariance_type"]
    )


def write_report(
    cfg: RunConfig,
    dirs: RunDirs,
    found: dgmm.SelectionResult,
    sizes,
    x,
    config_text: str,
    transform: dict | None = None,
) -> str:
    """Model, configs, report.json, plots and table into the staging output; marks it complete.

    The plots draw `PLOT_ROWS` rows of a uniform sample (`shown_rows`). The model keeps the
    data's column names (``feature_names_in_``), so that ``dgmm predict`` matches a new
    table's columns by name. Returns the text summary.
    """
    st = dirs.staging
    criterion = cfg.selection.criterion
    found.best_estimator_.save(st / "model")
    gm = in_column_order(found.best_estimator_)  # the rows below are in the model's order
    if transform is not None:  # `dgmm predict` applies it to new rows before the model
        write_json(st / "model" / STANDARDIZE_FILE, transform)
    (st / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (st / "config.original.yaml").write_text(config_text)
    cells, best = found.cells(), _selected_row(found)
    report = {
        "config_hash": cfg.result_hash(),
        "criterion": criterion,
        "selected": best,
        "cluster_sizes": sizes,
        "cells": cells,
        "candidates": found.results,
        "n_passes": found.n_passes_ + 1,  # the selection's passes and the labels' one
        "reuse": found.reuse,  # what the store gave: counts, origins, a changed setting
        "data": {
            "path": str(data_path(cfg.data)),
            "shape": list(x.shape),
            "chunks": [int(x.chunks[0][0]), int(x.shape[1])],
            "dtype": str(x.dtype),
            "standardize": transform,
            "digest": None if found.profile is None else f"{found.profile.digest:032x}",
        },
        "versions": package_versions(),
    }
    write_json(st / "report.json", report)
    if cfg.selection.method == "variational":
        save_figure(weights_figure(cells, cfg.selection.weight_threshold), st / "weights.png")
    else:
        plot_criteria(cells, criterion, st / "criteria.png")
    shown, how = shown_rows(found.sample, x, PLOT_ROWS)
    save_figure(clusters_figure(shown, gm, x.shape[0], how), st / "clusters.png")
    save_figure(uncertainty_figure(shown, gm, x.shape[0], how), st / "uncertainty.png")
    text = summary(cells, best, criterion, sizes, candidates=found.results)
    if cfg.selection.method == "variational":
        text += "\n" + components_text(best, cfg.selection.weight_threshold, int(x.shape[0]))
    (st / "table.txt").write_text(table(cells, criterion) + "\n\n" + text + "\n")
    for name in ("dask-report.html", "run.log"):
        if (dirs.work / name).exists():
            shutil.copy(dirs.work / name, st / name)
    mark_run_complete(
        st,
        {
            "config_hash": cfg.result_hash(),
            "criterion": criterion,
            "covariance_type": best["covariance_type"],
            "n_components": best["n_components"],
            criterion: best[criterion],
            "n_samples": int(x.shape[0]),
            "data": str(data_path(cfg.data)),
        },
    )
    return text
