"""The run configuration: a strict schema, a safe YAML reader, overrides and a stable hash.

Precedence: command-line ``--set`` override → YAML → schema default. Unknown keys are errors that
name the closest valid key; duplicate YAML keys are errors; every error is one line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line."""


class Strict(BaseModel):
    """Base of every section: unknown keys are errors that suggest the nearest valid key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


class DataConfig(Strict):
    """Where the rows are: a Zarr array, or a group and the array inside it."""

    path: str
    array: str | None = None
    chunk_rows: int | None = Field(default=None, gt=0)
    generate: GenerateConfig | None = None


class RetryConfig(Strict):
    """Retry failed candidates with reg_covar × ``factor`` (1e-6 after 0) up to the cap."""

    factor: float = Field(default=10.0, gt=1)
    max_reg_covar: float = Field(default=1e-2, gt=0)


class ModelConfig(Strict):
    """The candidates: every K × covariance type, each with ``n_init`` restarts."""

    n_components: list[int]
    covariance_types: list[Literal["full", "tied", "diag", "spherical"]] = ["full"]
    n_init: int = Field(default=1, ge=1)
    max_iter: int = Field(default=100, ge=0)
    tol: float = Field(default=1e-3, ge=0)
    reg_covar: float = Field(default=1e-6, ge=0)
    init: Literal["kmeans", "k-means||", "k-means++", "random", "random_from_data"] = "k-means++"
    random_state: int = 0
    retry: RetryConfig | None = None

    @field_validator("n_components", mode="before")
    @classmethod
    def _expand_range(cls, v: Any) -> Any:
        if isinstance(v, dict):
            extra = set(v) - {"start", "stop", "step"}
            if extra or not {"start", "stop"} <= set(v):
                raise ValueError("a range of K is {start: A, stop: B[, step: S]} (stop included)")
            return list(range(v["start"], v["stop"] + 1, v.get("step", 1)))
        if isinstance(v, int):
            return [v]
        return v

    @field_validator("n_components")
    @classmethod
    def _check_ks(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("the list of K is empty; give at least one value")
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


class SelectionConfig(Strict):
    criterion: Literal["bic", "aic"] = "bic"


class OutputConfig(Strict):
    path: str
    probabilities: bool = False
    overwrite: bool = False
    performance_report: bool = True
    progress: bool = True


class LocalClusterConfig(Strict):
    """A LocalCluster started by the run; it listens on 127.0.0.1 unless told otherwise."""

    type: Literal["local"] = "local"
    n_workers: int = Field(default=2, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str | None = "auto"
    processes: bool = True
    host: str = "127.0.0.1"
    dashboard_address: str | None = "127.0.0.1:8787"


class TLSConfig(Strict):
    """Certificates for a ``tls://`` scheduler: they become a `distributed.Security`."""

    ca_file: str
    cert: str
    key: str | None = None  # None: the key is in the ``cert`` file

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

    @field_validator("cluster", mode="before")
    @classmethod
    def _local_by_default(cls, v: Any) -> Any:
        if isinstance(v, dict) and "type" not in v:
            return {"type": "local", **v}
        return v

    def result_hash(self) -> str:
        """Hash of what determines the result (not the cluster, overwrite or display options)."""
        keep = self.model_dump(mode="json")
        keep.pop("cluster")
        keep.pop("dask")
        for k in ("overwrite", "performance_report", "progress"):
            keep["output"].pop(k)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


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
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
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
    return data


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
        node[leaf] = yaml.safe_load(raw)
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
