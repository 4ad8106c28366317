"""The ``dgmm`` command: run, validate, make-data, predict."""

from __future__ import annotations

import argparse
import gc
import logging
import shutil
import sys
from pathlib import Path

from .run import RunFailed, preflight, run
from .schema import ConfigError, load_config


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    run(cfg, Path(args.config).read_text())
    return 0


def _validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    x = preflight(cfg, generate=False)
    m = cfg.model
    n = len(m.n_components) * len(m.covariance_types) * m.n_init
    shape = "to be generated" if x is None else f"{x.shape} {x.dtype}, {len(x.chunks[0])} chunks"
    print(f"config OK: {n} candidate(s); data {shape}; config hash {cfg.result_hash()}")
    return 0


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


def _predict(args: argparse.Namespace) -> int:
    import dgmm
    from dgmm.io import open_zarr_array, zarr_to_dask

    from .outputs import check_output_free, mark_complete, publish, write_assignments

    check_output_free(args.out, args.overwrite)
    try:
        model = dgmm.load(args.model)
        x = zarr_to_dask(open_zarr_array(args.data))
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if x.ndim != 2 or x.shape[1] != model.n_features_in_:
        raise ConfigError(
            f"data {args.data} has shape {x.shape}; the model expects {model.n_features_in_} "
            "features"
        )
    out = Path(args.out)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    sizes = write_assignments(staging, x, model._params(), args.probabilities)
    mark_complete(staging, {"model": str(args.model), "data": str(args.data)})
    publish(staging, out)
    print(f"wrote labels for {x.shape[0]} rows to {out}; cluster sizes {list(map(int, sizes))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dgmm", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("run", _run, "run a configured sweep"),
        ("validate", _validate, "check a config without running it"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("config", help="YAML run configuration")
        s.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a config value (repeatable)",
        )
        s.set_defaults(fn=fn)
    s = sub.add_parser("make-data", help="write synthetic mixture data to Zarr")
    s.add_argument("out")
    s.add_argument("--n-samples", type=int, required=True)
    s.add_argument("--n-features", type=int, required=True)
    s.add_argument("--n-components", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--chunk-rows", type=int, default=100_000)
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    s.add_argument("--separation", type=float, default=6.0)
    s.add_argument("--compress", action="store_true", help="zstd-compress X (off: faster reads)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=_make_data)
    s = sub.add_parser("predict", help="label new data with a saved model")
    s.add_argument("model")
    s.add_argument("data", help="Zarr array (path, or group/array)")
    s.add_argument("out", help="output Zarr group")
    s.add_argument("--probabilities", action="store_true")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=_predict)
    return p


def _for_terminal(record: logging.LogRecord) -> bool:
    """What the terminal shows of the log: problems, without tracebacks (those go to run.log).

    asyncio's reports of futures left behind by Dask's own shutdown are not actionable and would
    follow (and hide) the one-line error, so they are dropped here.
    """
    return record.name != "asyncio" and not (record.name == "pipelines" and record.exc_info)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)  # the run's log file gets INFO; the terminal only problems
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.addFilter(_for_terminal)
    logging.getLogger().addHandler(console)
    try:
        return args.fn(args)
    except (ConfigError, FileExistsError) as e:
        message, status = str(e), 2
    except RunFailed as e:
        message, status = str(e), 1
    except KeyboardInterrupt:
        message, status = "interrupted; rerun the same command to resume", 130
    gc.collect()  # objects of a failed computation are released (and report) before the message
    print(f"dgmm: {'error: ' if status != 130 else ''}{message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
