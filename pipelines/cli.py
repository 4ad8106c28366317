"""The dgmm command: run, validate, init, make-data, summary, predict (`dgmm CMD --help`)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from .errors import RunFailed, disk_full
from .schema import ConfigError, load_config


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    from .run import run  # the heavy imports (Dask, scikit-learn) only once the config is good

    outcome = run(cfg, args.config, say=lambda text: print(text, flush=True))
    print(outcome.summary)
    print(f"\nOutputs in {outcome.path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    from .run import preflight

    table = preflight(cfg, args.config, generate=False)
    x = None if table is None else table.x
    n = len(cfg.fit_settings().candidates())
    shape = "to be generated" if x is None else f"{x.shape} {x.dtype}, {len(x.chunks[0])} chunks"
    print(f"config OK: {n} candidate(s); data {shape}; config hash {cfg.result_hash()}")
    if x is not None:
        print(memory_estimate(cfg, x))
        from .data import absent_chunks

        absent = absent_chunks(cfg.data)
        if absent is not None:
            print(f"data: {absent}")
    return 0


def memory_estimate(cfg, x) -> str:
    """One line: the passes per EM round and the memory a worker holds for them."""
    from dgmm import memory as dgmm_memory

    from .dask_settings import local_worker_limit
    from .run import check_task_memory
    from .schema import LocalClusterConfig

    local = isinstance(cfg.cluster, LocalClusterConfig)
    limit = local_worker_limit(cfg.cluster.memory_limit, cfg.cluster.n_workers) if local else None
    plan = check_task_memory(cfg.model, x, limit, "cluster.memory_limit")
    where = (
        f"a worker limit of {limit / 2**20:.0f} MiB"
        if limit
        else "no known worker limit (the cluster's is checked when the run connects)"
    )
    line = (
        f"memory: {len(plan.batches)} pass(es) per EM iteration, about "
        f"{plan.task_bytes / 2**20:.0f} MiB of chunk and statistics per worker, under {where}"
    )
    cap = dgmm_memory.max_sample_rows(limit, x.shape[1], max(x.chunks[0]), x.dtype, False)
    return line if cap is None else f"{line}; a sample of at most {cap} rows fits a worker"


def _make_data(args: argparse.Namespace) -> int:
    from .data import make_data

    g = make_data(
        args.out,
        args.n_samples,
        args.n_features,
        args.n_components,
        args.seed,
        args.chunk_rows,
        args.dtype,
        args.separation,
        args.compress,
        args.overwrite,
    )
    print(
        f"wrote {args.out}: X {g['X'].shape} {g['X'].dtype}, labels; chunks of "
        f"{args.chunk_rows} rows"
    )
    return 0


# The example configs shipped with the package (pipelines/configs, the repository's configs/).
EXAMPLES = ("demo", "scheduler", "slurm", "pbs")


def _init(args: argparse.Namespace) -> int:
    """Write a commented starter config (every key with its default) for the given data."""
    from importlib.resources import files

    from dgmm.paths import absolute_path

    from .schema import load_config

    out = Path(args.out)
    if out.exists() or out.is_symlink():
        raise ConfigError(f"{out} exists; give a new file name (it is never overwritten)")
    if args.example is not None:
        text = files("pipelines").joinpath("configs", f"{args.example}.yaml").read_text("utf-8")
    else:
        text = files("pipelines").joinpath("starter.yaml").read_text(encoding="utf-8")
    try:
        data = str(absolute_path(args.data, "--data"))
        output = str(absolute_path(args.output, "--output"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    text = text.replace("DATA_PATH", _yaml_scalar(data))
    text = text.replace("OUTPUT_PATH", _yaml_scalar(output))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "x", encoding="utf-8") as f:  # never through an existing file or link
        f.write(text)
    load_config(out)  # what was written is a valid config
    edit = " (edit its data.path and output.path)" if args.example is not None else ""
    print(f"wrote {out}{edit}: check it with `dgmm validate {out}`, run it with `dgmm run {out}`")
    return 0


def _yaml_scalar(value: str) -> str:
    """``value`` as one YAML scalar (quoted when plain YAML would read it otherwise)."""
    import json

    import yaml

    try:
        plain = yaml.safe_load(value) == value and "#" not in value
    except yaml.YAMLError:
        plain = False
    return value if plain else json.dumps(value)


def _summary(args: argparse.Namespace) -> int:
    """The mclust-style table of a finished run, or a saved model's parameters."""
    import json

    from .paths import output_kind
    from .schema import ConfigError

    path = Path(args.path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    if (path / "model.json").is_file():
        import dgmm
        from dgmm.persistence import ModelFileError

        from .standardize import STANDARDIZE_FILE, read_transform

        try:
            gm = dgmm.load(path)
        except (OSError, ModelFileError) as e:
            raise ConfigError(f"saved model: {e}") from None
        transform = path / STANDARDIZE_FILE
        standardized = transform.exists() or transform.is_symlink()
        if standardized:  # checked as `dgmm predict` would read it
            read_transform(transform, gm.n_features_in_)
        print(_model_text(gm))
        if standardized:
            print("fitted to standardised columns: `dgmm predict` applies standardize.json first")
        return 0
    kind = output_kind(path)
    if kind != "run":
        if (path / "report.json").exists():
            what = "an unfinished run output"
        else:
            what = f"dgmm's {kind} output" if kind else "not a dgmm run output"
        raise ConfigError(
            f"{path} is {what}; give a finished run's output folder or a saved model folder "
            "(one holding model.json)"
        )
    from .report import summary, table

    report = json.loads((path / "report.json").read_text())
    cells, criterion = report["cells"], report["criterion"]
    if any("status" not in c for c in cells):  # written before rows had a typed status
        print((path / "table.txt").read_text().rstrip())
        return 0
    print(table(cells, criterion))
    print()
    print(
        summary(
            cells,
            report["selected"],
            criterion,
            report["cluster_sizes"],
            candidates=report.get("candidates"),
        )
    )
    return 0


_SHOWN_COLUMNS = 8  # columns `dgmm summary` shows per component before "…"


def _model_text(gm) -> str:
    """A saved model for people: its class, columns, fit, and per component the weight, the
    mean, the standard deviations and the strongest correlation (a covariance summary)."""
    import numpy as np

    from dgmm.covariance import get_covariance_type
    from dgmm.params import n_parameters

    k, d, cov = gm.n_components, gm.n_features_in_, gm.covariance_type
    names = getattr(gm, "feature_names_in_", None)
    named = names is not None
    names = [str(c) for c in names] if named else [f"x{j}" for j in range(d)]
    shown = names[:_SHOWN_COLUMNS]
    more = f", … {d - len(shown)} more" if d > len(shown) else ""
    state = "converged" if gm.converged_ else "not converged"
    p = n_parameters(cov, k, d)
    full = get_covariance_type(cov).full(np.asarray(gm.covariances_), k, d)
    sd = np.sqrt(np.einsum("kii->ki", full))
    lines = [
        f"{type(gm).__name__}: {cov} covariance, K = {k}, {d} features, {p} parameters",
        f"  columns: {', '.join(shown)}{more}"
        + ("" if named else " (unnamed: the data had no column names)"),
        f"  {state} after {gm.n_iter_} iterations; lower bound {gm.lower_bound_:.6f}"
        + (" per row" if type(gm).__name__ == "GaussianMixture" else ""),
    ]
    for j in range(k):
        mean = ", ".join(f"{v:.4g}" for v in gm.means_[j, : len(shown)])
        sds = ", ".join(f"{v:.4g}" for v in sd[j, : len(shown)])
        line = f"  component {j}: weight {gm.weights_[j]:.4f}; mean [{mean}{more and ', …'}]"
        line += f"; sd [{sds}{more and ', …'}]"
        if d > 1 and cov in ("full", "tied"):
            corr = full[j] / np.outer(sd[j], sd[j])
            np.fill_diagonal(corr, 0.0)
            a, b = np.unravel_index(np.argmax(np.abs(corr)), corr.shape)
            line += f"; strongest correlation {corr[a, b]:+.3f} ({names[a]}, {names[b]})"
        lines.append(line)
    return "\n".join(lines)


def _matched_columns(rows, model, data: str):
    """The rows' columns in the order of the model's ``feature_names_in_`` (matched by name;
    a missing or an extra column refused by name), and the model to apply to them, without
    names: they are matched here. Unnamed data for a named model (Zarr, ``.npy``), or named
    data for an unnamed one, is taken in its order, with a warning line."""
    from dgmm.tables import in_columns

    from .outputs import in_column_order

    names = getattr(model, "feature_names_in_", None)
    x = rows.x
    if names is None:
        if rows.names is not None:
            print(
                f"warning: data {data} has column names, but the model was fitted without "
                "them; its columns are taken in their order",
                file=sys.stderr,
            )
        return x, model
    names = [str(c) for c in names]
    if rows.names is None:
        shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
        print(
            f"warning: data {data} has no column names; its columns are taken as the model's, "
            f"in order: {shown}",
            file=sys.stderr,
        )
    else:
        try:
            x = in_columns(x, rows.names, names, f"data {data}")
        except ValueError as e:
            hint = "; choose the model's with --columns" if set(names) <= set(rows.names) else ""
            raise ConfigError(f"{e}{hint}") from None
    return x, in_column_order(model)


def _predict(args: argparse.Namespace) -> int:
    import dgmm
    from dgmm.persistence import ModelFileError

    from .data import open_data
    from .outputs import mark_complete, publish, write_assignments
    from .paths import (
        check_companion,
        check_no_overlap,
        check_output_name,
        check_output_path,
        claim,
        claim_companion,
        lock_path,
        remove_companion,
        zarr_store_root,
    )
    from .schema import DataConfig
    from .standardize import STANDARDIZE_FILE, read_transform, standardize

    out = Path(args.out)
    check_output_name(out)
    staging = out.with_name(f".{out.name}.partial")
    check_no_overlap(
        {"the output": out, "the staging folder": staging, "the lock file": lock_path(out)},
        {
            "the model": args.model,
            "the data": args.data,
            "the data's Zarr store": zarr_store_root(args.data),
        },
    )
    try:
        model = dgmm.load(args.model)
    except (OSError, ModelFileError) as e:  # every value is checked as it is read
        raise ConfigError(f"model: {e}") from None
    # a model fitted to standardised rows: these rows are standardised alike (a directory or a
    # dangling link in its place is refused, not skipped)
    transform_file = Path(args.model) / STANDARDIZE_FILE
    transform = None
    if transform_file.exists() or transform_file.is_symlink():
        transform = read_transform(transform_file, model.n_features_in_)
    try:
        columns = None if args.columns is None else args.columns.split(",")
        data_cfg = DataConfig(path=str(args.data), columns=columns)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"--columns: {' '.join(str(e).split())}") from None
    x, model = _matched_columns(open_data(data_cfg), model, args.data)
    if x.shape[1] != model.n_features_in_:
        raise ConfigError(
            f"data {args.data} has shape {x.shape}; the model expects {model.n_features_in_} "
            "features"
        )
    if transform is not None:
        x = standardize(x, transform)
    check_output_path(out, args.overwrite, ("predict",), "--overwrite", "output path")
    check_companion(staging, out, "partial")
    with claim(out):
        check_output_path(out, args.overwrite, ("predict",), "--overwrite", "output path")
        claim_companion(staging, out, "partial", fresh=True)
        try:
            sizes = write_assignments(staging, x, model, args.probabilities)
            mark_complete(staging, "predict", {"model": str(args.model), "data": str(args.data)})
        except BaseException:
            remove_companion(staging, out, "partial")
            raise
        publish(staging, out)
    print(f"wrote labels for {x.shape[0]} rows to {out}; cluster sizes {list(map(int, sizes))}")
    return 0


def _store(args: argparse.Namespace) -> int:
    """List the fits a store keeps (by data and stage), or prune it."""
    from .store_command import store_command

    return store_command(args.action, args.store, args.max_size, args.older_than, args.all)


def _diff(args: argparse.Namespace) -> int:
    """Print what changed between two finished runs."""
    from .compare import diff_runs

    print(diff_runs(Path(args.run_a), Path(args.run_b)))
    return 0


def _option(parser: argparse.ArgumentParser, *names: str, **kw) -> argparse.Action:
    """``parser.add_argument``, its help ending with the default where there is one to say."""
    action = parser.add_argument(*names, **kw)
    default = action.default
    if not (action.required or default is None or default is False or default == []):
        action.help = f"{action.help} (default: %(default)s)"
    return action


def build_parser() -> argparse.ArgumentParser:
    """The command line: every subcommand and option with its help and default."""
    from importlib.metadata import version

    from .schema import GenerateConfig

    p = argparse.ArgumentParser(prog="dgmm", description=__doc__)
    p.add_argument("--version", action="version", version=f"dgmm {version('dgmm')}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, fn) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=text, description=text)
        s.set_defaults(fn=fn)
        return s

    for name, fn, text in (
        ("run", _run, "run a configured sweep: fit every candidate, select, write the outputs"),
        ("validate", _validate, "check a config, its data and its output; start nothing"),
    ):
        s = command(name, text, fn)
        _option(s, "config", help="YAML run configuration (see configs/)")
        _option(
            s,
            "--set",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a config value, e.g. model.n_init=4 (repeatable)",
        )
    s = command("make-data", "write seeded synthetic Gaussian-mixture data to Zarr", _make_data)
    gen = GenerateConfig.model_fields
    _option(s, "out", help="the Zarr group to write (X, and the true labels)")
    _option(s, "--n-samples", type=int, required=True, help="rows")
    _option(s, "--n-features", type=int, required=True, help="columns")
    _option(s, "--n-components", type=int, required=True, help="mixture components")
    _option(s, "--seed", type=int, default=gen["seed"].default, help="random seed")
    _option(
        s, "--chunk-rows", type=int, default=gen["chunk_rows"].default, help="rows per Zarr chunk"
    )
    _option(
        s,
        "--dtype",
        choices=["float32", "float64"],
        default=gen["dtype"].default,
        help="the data's float type (as data.generate.dtype)",
    )
    _option(
        s,
        "--separation",
        type=float,
        default=gen["separation"].default,
        help="spread of the component means (standard deviation of each mean's coordinates)",
    )
    _option(s, "--compress", action="store_true", help="zstd-compress X (off: faster reads)")
    _option(s, "--overwrite", action="store_true", help="replace an earlier make-data output")
    s = command("init", "write a commented starter config (every key with its default)", _init)
    _option(s, "out", help="the config file to write (a new file)")
    _option(s, "--data", default="data.zarr", help="the data the config points at")
    _option(s, "--output", default="runs/first", help="the run's output folder")
    _option(
        s,
        "--example",
        choices=EXAMPLES,
        help="write the shipped example config of that name instead (its own paths; "
        "--data and --output do not apply)",
    )
    s = command("store", "list or prune the fits kept for later runs (the result store)", _store)
    _option(s, "action", choices=("ls", "prune"), help="ls: list the fits; prune: remove some")
    _option(s, "--store", help="the store's folder (default: $DGMM_STORE or ~/.cache/dgmm/store)")
    _option(s, "--max-size", help="prune: remove the fits used least recently beyond this size")
    _option(s, "--older-than", type=float, help="prune: remove fits unused for this many days")
    _option(s, "--all", action="store_true", help="prune: remove every fit")
    s = command("diff", "print what changed between two finished runs", _diff)
    _option(s, "run_a", help="a finished run's output folder")
    _option(s, "run_b", help="another finished run's output folder")
    s = command("summary", "print a finished run's table, or a saved model's parameters", _summary)
    _option(s, "path", help="a run's output folder, or a saved model folder")
    s = command("predict", "label new data with a saved model", _predict)
    _option(s, "model", help="a saved model folder (a run's <output>/model)")
    _option(s, "data", help="Zarr array (path, or group/array), Parquet, CSV or .npy")
    _option(s, "out", help="the Zarr group to write: labels (and probabilities)")
    _option(
        s,
        "--columns",
        help="comma-separated Parquet/CSV columns to use (matched to the model's by name; "
        "default: every column, which must be the model's)",
    )
    _option(
        s, "--probabilities", action="store_true", help="also write probabilities and uncertainty"
    )
    _option(s, "--overwrite", action="store_true", help="replace an earlier predict output")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system ending the job): stops the run the way Ctrl-C does."""


class _Console(logging.Filter):
    """What the terminal shows of the log: dgmm's own problems, without tracebacks (those go
    to run.log).

    Other libraries' records (Dask's report of every failing task, asyncio's of futures left
    behind by Dask's shutdown) are not actionable and would bury or follow the one-line error;
    after Ctrl-C, dgmm's own are dropped too while the run shuts its cluster down.
    """

    interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interrupted or not record.name.startswith(("dgmm", "pipelines")):
            return False  # Dask's reports of a failing task repeat what the one line says
        return not (record.name == "pipelines" and record.exc_info)


@contextlib.contextmanager
def _quiet_dask_console():
    """Dask's own terminal handler shows only what is critical while a command runs: a failing
    task is reported by every worker thread that ran one (a full disk: hundreds of
    tracebacks), and the failure ends in the command's one line anyway."""
    handlers = [
        h
        for h in logging.getLogger("distributed").handlers
        if isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.__stderr__)
    ]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels, strict=True):
            h.setLevel(level)


def _keep_traceback() -> str:
    """Write the current exception's traceback to a file; returns its path."""
    fd, path = tempfile.mkstemp(prefix="dgmm-error-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        traceback.print_exc(file=f)
    return path


# The command-line arguments that are paths: made absolute before anything reads them.
PATH_ARGS = ("config", "model", "data", "out", "path", "store", "run_a", "run_b")


def _absolute_paths(args: argparse.Namespace) -> None:
    """Expand and absolutise every path argument once (`dgmm.paths.absolute_path`)."""
    from dgmm.paths import absolute_path

    from .paths import check_output_name

    if isinstance(getattr(args, "out", None), str):
        check_output_name(args.out)  # '.' or '..' name no folder, whatever they resolve to
    for name in PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            try:
                setattr(args, name, str(absolute_path(value, name)))
            except ValueError as e:
                raise ConfigError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    from dgmm.worker import keep_out_unused_imports

    # Dask imports these only to recognise their objects, which a dgmm run never meets
    keep_out_unused_imports(("sparse", "xarray"))
    args = build_parser().parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)  # the run's log file gets INFO; the terminal only problems
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    quiet = _Console()
    console.addFilter(quiet)
    logging.getLogger().addHandler(console)

    def interrupt(signum, frame):
        quiet.interrupted = True
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    main_thread = threading.current_thread() is threading.main_thread()
    old_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    if main_thread:  # a batch system's SIGTERM ends the run as Ctrl-C does: one line
        for sig in old_handlers:
            signal.signal(sig, interrupt)
    try:
        _absolute_paths(args)
        with _quiet_dask_console():
            return args.fn(args)
    except ConfigError as e:
        message, status = str(e), 2
    except RunFailed as e:
        message, status = str(e), 1
    except Terminated:
        quiet.interrupted = True
        message, status = "terminated (SIGTERM); rerun the same command to resume", 143
    except KeyboardInterrupt:
        quiet.interrupted = True
        message, status = "interrupted; rerun the same command to resume", 130
    except Exception as e:  # every failure ends in one line; the traceback is kept in a file
        full = disk_full(e)
        if full is not None:
            where = f" writing '{full.filename}'" if full.filename else ""
            message = f"no space left on the device{where}; free space or write elsewhere"
        else:
            message = f"{type(e).__name__}: {e} (traceback in {_keep_traceback()})"
        message, status = " ".join(message.split()), 1
    finally:
        if main_thread:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        logging.getLogger().removeHandler(console)
    gc.collect()  # objects of a failed computation are released (and report) before the message
    print(f"dgmm: {'error: ' if status not in (130, 143) else ''}{message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
