"""The run configuration: a strict schema, a safe YAML reader, overrides and a stable hash.

Precedence: command-line ``--set`` override → YAML → schema default. Unknown keys are errors that
name the closest valid key; duplicate YAML keys are errors; every error is one line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from dgmm.options import (
    COVARIANCE_TYPE_NAMES,
    CRITERIA,
    INIT_METHODS,
    METHODS,
    STRATEGIES,
    WEIGHT_PRIOR_TYPES,
)
from dgmm.paths import absolute_path
from dgmm.tables import infer_format

if TYPE_CHECKING:
    from dgmm.settings import FitSettings

# Bounds that keep a typo (stop: 1000000000) from exhausting memory before anything runs.
MAX_K_VALUES = 1000
MAX_CANDIDATES = 10_000


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line."""


class Strict(BaseModel):
    """Base of every section: unknown keys are errors that suggest the nearest valid key."""

    # inf and NaN are refused for every float: no setting means "infinitely large"
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            valid = list(cls.model_fields)
            for key in data:
                if key not in valid:
                    close = difflib.get_close_matches(str(key), valid, n=1)
                    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {valid}"
                    raise ValueError(f"unknown key '{key}'; {hint}")
        return data


class GenerateConfig(Strict):
    """Synthetic data to create at ``data.path`` when it does not exist (demo runs)."""

    n_samples: int = Field(gt=0)
    n_features: int = Field(gt=0)
    n_components: int = Field(gt=0)
    seed: int = 0
    chunk_rows: int = Field(default=100_000, gt=0)
    dtype: Literal["float32", "float64"] = "float64"
    separation: float = Field(default=6.0, gt=0)


def _absolute(value: str) -> str:
    """A path setting, with ``~`` and variables expanded and made absolute (see
    `dgmm.paths.absolute_path`): workers elsewhere only ever see absolute paths."""
    return str(absolute_path(value, "the path"))


# A path setting: absolute once validated, whatever the working directory of a worker.
PathSetting = Annotated[str, AfterValidator(_absolute)]


class DataConfig(Strict):
    """Where the rows are: a Zarr array (or a group and the array inside it), Parquet or CSV
    files (with a column selection), or a ``.npy`` file; optionally standardised."""

    path: PathSetting
    array: str | None = None
    format: Literal["zarr", "parquet", "csv", "npy"] | None = None  # None: from the path
    columns: list[str] | None = None
    standardize: bool = False
    chunk_rows: int | None = Field(default=None, gt=0)
    generate: GenerateConfig | None = None

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("give at least one column, or leave columns out for all")
            twice = sorted({c for c in v if v.count(c) > 1})
            if twice:
                raise ValueError(f"columns named twice: {twice}")
        return v

    @model_validator(mode="after")
    def _format_fits(self) -> DataConfig:
        fmt = self.format or infer_format(self.path)
        if self.array is not None and fmt != "zarr":
            raise ValueError(f"'array' names an array inside a Zarr group; this data is {fmt}")
        if self.columns is not None and fmt not in ("parquet", "csv"):
            raise ValueError(f"'columns' selects Parquet or CSV columns; this data is {fmt}")
        if self.generate is not None and fmt != "zarr":
            raise ValueError("'generate' writes Zarr data; give a Zarr path")
        return self


class RetryConfig(Strict):
    """Retry failed candidates with reg_covar × ``factor`` (1e-6 after 0) up to the cap."""

    factor: float = Field(default=10.0, gt=1)
    max_reg_covar: float = Field(default=1e-2, gt=0)


class ModelConfig(Strict):
    """The candidates: every K × covariance type, each with ``n_init`` restarts."""

    n_components: list[StrictInt]
    covariance_types: list[Literal[COVARIANCE_TYPE_NAMES]] = ["full"]
    # scikit-learn's k-means start, five restarts: with multi-resolution EM the restarts cost
    # EM on the sample, and those that trail there stop before the full data
    n_init: int = Field(default=5, ge=1)
    max_iter: int = Field(default=100, ge=0)
    tol: float = Field(default=1e-3, ge=0)
    reg_covar: float = Field(default=1e-6, ge=0)
    init: Literal[INIT_METHODS] = "kmeans"
    random_state: int = Field(default=0, ge=0, lt=2**32)
    retry: RetryConfig | None = None
    # multi-resolution EM (`dgmm.select(strategy=)`): a few full-data passes instead of tens
    strategy: Literal[STRATEGIES] = "sample"
    sample_size: int | None = Field(default=None, ge=1)
    # with strategy sample: stop cells whose criterion, estimated on the sample, clearly trails
    screen_cells: bool = True

    @field_validator("n_components", mode="before")
    @classmethod
    def _expand_range(cls, v: Any) -> Any:
        if isinstance(v, dict):
            extra = set(v) - {"start", "stop", "step"}
            if extra or not {"start", "stop"} <= set(v):
                raise ValueError("a range of K is {start: A, stop: B[, step: S]} (stop included)")
            start, stop, step = v["start"], v["stop"], v.get("step", 1)
            for name, value in (("start", start), ("stop", stop), ("step", step)):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"the range's {name} must be a whole number, got {value!r}")
            if step < 1:
                raise ValueError(f"the range's step must be >= 1, got {step}")
            ks = range(start, stop + 1, step)
            if len(ks) > MAX_K_VALUES:
                raise ValueError(
                    f"the range holds {len(ks)} values of K; a sweep takes at most "
                    f"{MAX_K_VALUES}: use a larger step"
                )
            return list(ks)
        if isinstance(v, int) and not isinstance(v, bool):
            return [v]
        return v

    @field_validator("n_components")
    @classmethod
    def _check_ks(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("the list of K is empty; give at least one value")
        if len(v) > MAX_K_VALUES:
            raise ValueError(f"{len(v)} values of K; a sweep takes at most {MAX_K_VALUES}")
        if min(v) < 1:
            raise ValueError(f"every K must be >= 1, got {min(v)}")
        if len(set(v)) != len(v):
            raise ValueError(f"K values repeat: {v}")
        return sorted(v)

    @field_validator("covariance_types")
    @classmethod
    def _check_types(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("the list of covariance types is empty")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _candidate_count(self) -> ModelConfig:
        n = len(self.n_components) * len(self.covariance_types) * self.n_init
        if n > MAX_CANDIDATES:
            raise ValueError(
                f"{n} candidates (K values x covariance types x n_init); a sweep takes at most "
                f"{MAX_CANDIDATES}"
            )
        return self


class PriorConfig(Strict):
    """Priors of the variational mode (`dgmm.BayesianGaussianMixture`'s; data-dependent
    mean and covariance priors)."""

    weight_concentration_prior_type: Literal[WEIGHT_PRIOR_TYPES] = "dirichlet_process"
    weight_concentration_prior: float | None = Field(default=None, gt=0)
    mean_precision_prior: float | None = Field(default=None, gt=0)
    degrees_of_freedom_prior: float | None = Field(default=None, gt=0)


class SelectionConfig(Strict):
    criterion: Literal[CRITERIA] = "bic"
    # 'sweep': every K x covariance type by EM; 'variational': one Bayesian mixture per
    # covariance type at the largest K, which leaves unneeded components near zero weight
    method: Literal[METHODS] = "sweep"
    weight_threshold: float = Field(default=0.01, ge=0, lt=1)
    prior: PriorConfig = PriorConfig()


class OutputConfig(Strict):
    path: PathSetting
    probabilities: bool = False
    overwrite: bool = False
    performance_report: bool = True
    progress: bool = True
    # Without a terminal, progress lines on stderr at most this often (seconds; 0: every pass).
    progress_interval: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    # What run.log keeps of other libraries' records (Dask, distributed): dgmm's own are all
    # kept; "info" adds distributed's scheduler and worker chatter.
    library_log: Literal["warning", "info", "debug"] = "warning"


class LocalClusterConfig(Strict):
    """A LocalCluster started by the run; it listens on 127.0.0.1 unless told otherwise."""

    type: Literal["local"] = "local"
    n_workers: int = Field(default=2, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str | float | None = "auto"
    processes: bool = True
    host: str = "127.0.0.1"
    dashboard_address: str | None = "127.0.0.1:8787"

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _no_bool_memory(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError(f"{v!r} is not a memory size; use e.g. '2GiB'")
        return v

    @field_validator("memory_limit")
    @classmethod
    def _check_memory_limit(cls, v: str | int | float | None) -> str | int | float | None:
        try:
            n = local_worker_limit(v, 1)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ValueError(
                f"'{v}' is not a memory size; use e.g. '2GiB', '512MiB', a number of bytes, a "
                "fraction of the machine's memory (0.25), 'auto', or null (no limit)"
            ) from None
        if n is not None and n < 64 * 2**20:
            raise ValueError(f"'{v}' is {n} bytes per worker; a worker needs at least 64 MiB")
        return v

    @field_validator("host")
    @classmethod
    def _check_host(cls, v: str) -> str:
        if not v or "://" in v or "/" in v:
            raise ValueError(f"'{v}' is not a host name or address, e.g. 127.0.0.1")
        return v


class TLSConfig(Strict):
    """Certificates for a ``tls://`` scheduler: they become a `distributed.Security`."""

    ca_file: PathSetting
    cert: PathSetting
    key: PathSetting | None = None  # None: the key is in the ``cert`` file

    @model_validator(mode="after")
    def _files_exist(self) -> TLSConfig:
        for name in ("ca_file", "cert", "key"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ValueError(f"{name} '{value}' does not exist")
        return self


class AddressClusterConfig(Strict):
    """An existing scheduler (``tcp://`` or, with ``tls`` certificates, ``tls://``)."""

    type: Literal["address"]
    address: str
    timeout: float = Field(default=30.0, gt=0)
    tls: TLSConfig | None = None

    @model_validator(mode="after")
    def _tls_matches_address(self) -> AddressClusterConfig:
        is_tls = self.address.startswith("tls://")
        if is_tls and self.tls is None:
            raise ValueError(
                f"address '{self.address}' is tls:// but no certificates are given: set "
                "cluster.tls.ca_file, cluster.tls.cert (and cluster.tls.key)"
            )
        if self.tls is not None and not is_tls:
            raise ValueError(
                f"cluster.tls is set but address '{self.address}' is not tls://; use "
                "tls://host:port so the certificates are used"
            )
        return self


class JobqueueClusterConfig(Strict):
    """A dask-jobqueue cluster (SLURM / PBS); ``options`` go to its constructor."""

    type: Literal["slurm", "pbs"]
    jobs: int = Field(default=1, ge=1)
    options: dict[str, Any] = {}
    timeout: float = Field(default=600.0, gt=0)


ClusterConfig = Annotated[
    LocalClusterConfig | AddressClusterConfig | JobqueueClusterConfig, Field(discriminator="type")
]


class RunConfig(Strict):
    """A whole run."""

    data: DataConfig
    model: ModelConfig
    selection: SelectionConfig = SelectionConfig()
    output: OutputConfig
    cluster: ClusterConfig = LocalClusterConfig()
    dask: dict[str, Any] = {}

    @field_validator("dask", mode="before")
    @classmethod
    def _check_dask(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return check_dask_settings(v)

    @field_validator("cluster", mode="before")
    @classmethod
    def _local_by_default(cls, v: Any) -> Any:
        if isinstance(v, dict) and "type" not in v:
            return {"type": "local", **v}
        return v

    def fit_settings(self) -> FitSettings:
        """The fitting settings of this run, as `dgmm.select` takes them (``settings=``)."""
        from dgmm.selection import Retry
        from dgmm.settings import FitSettings  # the fitting stack: only when a run fits

        m, sel = self.model, self.selection
        variational = sel.method == "variational"
        return FitSettings(
            m.n_components,
            m.covariance_types,
            criterion=sel.criterion,
            n_init=m.n_init,
            init_params=m.init,
            tol=m.tol,
            reg_covar=m.reg_covar,
            max_iter=m.max_iter,
            random_state=m.random_state,
            strategy=m.strategy,
            sample_size=m.sample_size,
            method=sel.method,
            prior=sel.prior.model_dump() if variational else None,
            weight_threshold=sel.weight_threshold,
            screen_cells=m.screen_cells,
            retry=None if m.retry is None else Retry(m.retry.factor, m.retry.max_reg_covar),
        )

    def result_hash(self) -> str:
        """Hash of what determines the result (not the cluster, overwrite or display options)."""
        keep = self.model_dump(mode="json")
        keep.pop("cluster")
        keep.pop("dask")
        for k in (
            "overwrite",
            "performance_report",
            "progress",
            "progress_interval",
            "library_log",
        ):
            keep["output"].pop(k)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def local_worker_limit(memory_limit: str | float | None, n_workers: int) -> int | None:
    """Bytes each LocalCluster worker may use, as Dask reads the setting (None: no limit)."""
    import logging

    from distributed.worker_memory import parse_memory_limit

    if isinstance(memory_limit, bool) or (
        isinstance(memory_limit, (int, float)) and memory_limit < 0
    ):
        raise ValueError(memory_limit)
    quiet = logging.getLogger("dgmm.quiet")
    quiet.disabled = True
    if memory_limit == "auto":
        return parse_memory_limit("auto", 1, n_workers, logger=quiet)
    return parse_memory_limit(memory_limit, 1, logger=quiet)


def worker_memory_bytes(v: str | int | float) -> int:
    """Bytes of a memory size given as a number or a string such as '2GiB' (ValueError if not)."""
    from dask.utils import parse_bytes

    if isinstance(v, bool):
        raise ValueError(v)
    try:
        n = parse_bytes(v)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ValueError(v) from None
    if n <= 0:
        raise ValueError(v)
    return int(n)


def _flatten(settings: dict[str, Any], defaults: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested settings, down to the level where Dask's defaults stop nesting."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and _default(dotted, defaults) not in (None, {}):
            sub = _default(dotted, defaults)
            if isinstance(sub, dict):
                out.update(_flatten(value, defaults, dotted + "."))
                continue
        out[dotted] = value
    return out


def _default(dotted: str, defaults: Any) -> Any:
    """Dask's default at a dotted key ('-' and '_' alike), or None if there is no such key."""
    node = defaults
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        match = [k for k in node if k.replace("_", "-") == part.replace("_", "-")]
        if not match:
            return None
        node = node[match[0]]
    return node


def _free_form(dotted: str, defaults: Any) -> bool:
    """Whether a key lives under a mapping whose default is empty (any sub-key allowed)."""
    parts = dotted.split(".")
    return any(_default(".".join(parts[:i]), defaults) == {} for i in range(1, len(parts)))


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict) or not node:
        return [prefix.rstrip(".")]
    return [k for key, sub in node.items() for k in _all_keys(sub, f"{prefix}{key}.")]


def check_dask_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Dask settings as dotted keys, each an existing Dask key with a value of its kind.

    Time and size settings must parse as Dask parses them; an unknown key names the nearest
    known one.
    """
    import dask.config
    import distributed  # noqa: F401  (registers the distributed defaults)
    from dask.utils import parse_timedelta

    import dgmm.em  # noqa: F401  (registers dgmm's own Dask settings, e.g. dgmm.stall-timeout)

    defaults = dask.config.merge(*dask.config.defaults)
    flat = _flatten(settings, defaults)
    for key, value in flat.items():
        default = _default(key, defaults)
        if default is None and not _free_form(key, defaults):
            if key.replace("_", "-") in {k.replace("_", "-") for k in _all_keys(defaults)}:
                continue  # a key whose default is None takes any value
            close = difflib.get_close_matches(key, _all_keys(defaults), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown Dask setting '{key}'{hint}")
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"Dask setting '{key}' takes true or false, got {value!r}")
        elif isinstance(default, str) and _is_timedelta(default):
            try:
                parse_timedelta(value)
            except (ValueError, TypeError, KeyError):
                raise ValueError(
                    f"Dask setting '{key}' takes a time such as '{default}', got {value!r}"
                ) from None
        elif isinstance(default, str) and _is_bytes(default):
            try:
                worker_memory_bytes(value)
            except ValueError:
                raise ValueError(
                    f"Dask setting '{key}' takes a size such as '{default}', got {value!r}"
                ) from None
        elif isinstance(default, (int, float)) and not isinstance(value, (int, float)):
            raise ValueError(f"Dask setting '{key}' takes a number, got {value!r}")
    return flat


def _is_timedelta(text: str) -> bool:
    from dask.utils import parse_timedelta

    if not any(c.isalpha() for c in text):
        return False
    try:
        parse_timedelta(text)
    except (ValueError, TypeError, KeyError):
        return False
    return True


def _is_bytes(text: str) -> bool:
    if not text[:1].isdigit() or not any(c.isalpha() for c in text):
        return False
    try:
        worker_memory_bytes(text)
    except ValueError:
        return False
    return True


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"duplicate key '{key}' at line {key_node.start_mark.line + 1}; "
                "each key may appear once"
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely (no Python tags, no duplicate keys)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file '{path}' is not UTF-8 text (byte {e.start}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file '{path}': {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except ConfigError:
        raise
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        if isinstance(e, yaml.constructor.ConstructorError) and "tag:yaml.org,2002:python/" in what:
            tag = what.rsplit("'", 2)[-2].replace("tag:yaml.org,2002:", "!!")
            raise ConfigError(
                f"'{path}' uses the Python tag '{tag}'{at}; the config is read with a safe "
                "loader that builds no Python objects: use plain values, lists and mappings"
            ) from None
        raise ConfigError(f"'{path}' is not valid YAML{at}: {what}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"'{path}' must hold a mapping of sections, got {type(data).__name__}")
    _check_expanded_size(data, f"'{path}'")
    return data


# A run config is a few dozen values; YAML aliases nested in each other can make a few lines
# stand for billions of them, which copying the config would build.
MAX_CONFIG_VALUES = 100_000


def _check_expanded_size(data: Any, what: str) -> None:
    """Refuse a document whose values, aliases expanded, exceed `MAX_CONFIG_VALUES` (the walk
    stops there, so a bomb costs no more than that)."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{what} expands to more than {MAX_CONFIG_VALUES} values (YAML anchors and "
                "aliases repeated inside each other?); a run config is a few dozen values"
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) on top of the file."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            what = " ".join(str(getattr(e, "problem", None) or e).split())
            raise ConfigError(f"override '{item}': the value is not valid YAML ({what})") from None
        _check_expanded_size(value, f"override '{dotted}'")
        node[leaf] = value
    return out


def _format(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif not isinstance(err.get("input"), (dict, list)) and "got" not in msg:
        msg += f" (got {err['input']!r})"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a run configuration; raises `ConfigError` (one line)."""
    data = apply_overrides(read_yaml(path), overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid config '{path}': {_format(e)}") from None
