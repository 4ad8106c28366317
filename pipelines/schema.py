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

from .dask_settings import check_dask_settings, local_worker_limit, worker_memory_bytes
from .errors import ConfigError
from .yaml_file import apply_overrides, read_yaml

if TYPE_CHECKING:
    from dgmm.settings import FitSettings

# Bounds that keep a typo (stop: 1000000000) from exhausting memory before anything runs.
MAX_K_VALUES = 1000
MAX_CANDIDATES = 10_000


class Strict(BaseModel):
    """Base of every section: unknown keys are errors that suggest the nearest valid key."""

    # inf and NaN are refused for every float: no setting means "infinitely large"
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True
    )

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
    """Rows to generate."""
    n_features: int = Field(gt=0)
    """Columns to generate."""
    n_components: int = Field(gt=0)
    """Gaussian components the rows are drawn from."""
    seed: int = 0
    """Seed of the generator: the same seed gives the same rows."""
    chunk_rows: int = Field(default=100_000, gt=0)
    """Rows per stored Zarr chunk."""
    dtype: Literal["float32", "float64"] = "float64"
    """Element type of the stored array."""
    separation: float = Field(default=6.0, gt=0)
    """Distance between component means, in standard deviations."""


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
    """A Zarr array (or a group, with `array`), a Parquet file or folder, a CSV file or glob, or a
    `.npy` file.
    """
    array: str | None = None
    """The array inside a Zarr group (Zarr only)."""
    format: Literal["zarr", "parquet", "csv", "npy"] | None = None  # None: from the path
    """The data's format; null: from the path."""
    columns: list[str] | None = None
    """Parquet or CSV columns to cluster, each numeric; null: all of them."""
    standardize: bool = False
    """Centre and scale every column by its mean and standard deviation (one profile pass; the
    transform is saved with the model and `dgmm predict` applies it).
    """
    chunk_rows: int | None = Field(default=None, gt=0)
    """Rechunk the rows to this many per block; null: as stored."""
    generate: GenerateConfig | None = None
    """Synthetic data to create at `path` when it does not exist."""

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
    """A failed candidate is refitted with `reg_covar` times this."""
    max_reg_covar: float = Field(default=1e-2, gt=0)
    """No retry beyond this `reg_covar`."""


class ModelConfig(Strict):
    """The candidates: every K × covariance type, each with ``n_init`` restarts."""

    n_components: list[StrictInt]
    """The values of K: a list, or `{start, stop, step}` with stop included."""
    covariance_types: list[Literal[COVARIANCE_TYPE_NAMES]] = ["full"]
    """Covariance types to try, each with every K."""
    # scikit-learn's k-means start, five restarts: with multi-resolution EM the restarts cost
    # EM on the sample, and those that trail there stop before the full data
    n_init: int = Field(default=5, ge=1)
    """Restarts per (K, covariance type) cell; the best lower bound is kept."""
    max_iter: int = Field(default=100, ge=0)
    """EM iterations at most per restart."""
    tol: float = Field(default=1e-3, ge=0)
    """Convergence threshold on the change of the mean log-likelihood per row."""
    reg_covar: float = Field(default=1e-6, ge=0)
    """Added to the diagonal of every covariance."""
    init: Literal[INIT_METHODS] = "kmeans"
    """How restarts start (scikit-learn's `init_params`; `k-means||` runs dask-ml's k-means)."""
    random_state: int = Field(default=0, ge=0, lt=2**32)
    """Seed of every random draw: the same config gives the same result."""
    retry: RetryConfig | None = None
    """Refit failed candidates with a larger `reg_covar`; null: a failed candidate is NA."""
    # multi-resolution EM (`dgmm.select(strategy=)`): a few full-data passes instead of tens
    strategy: Literal[STRATEGIES] = "sample"
    """`sample`: multi-resolution EM, fitted on a uniform sample of rows first and finished on all
    rows; `exact`: every restart's EM on all rows.
    """
    sample_size: int | None = Field(default=None, ge=1)
    """Rows of that sample; null: 20 per free parameter of the largest candidate, within 10,000 and
    100,000 rows, each cell fitted on the rows of it that its own default keeps (so a cell's fit
    does not depend on its grid).
    """
    # with strategy sample: stop cells whose criterion, estimated on the sample, clearly trails
    screen_cells: bool = True
    """With `strategy: sample`, stop cells whose criterion, estimated on the sample, clearly trails
    the best's.
    """

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
    """The prior on the weights: a Dirichlet process (stick-breaking) or a Dirichlet distribution.
    """
    weight_concentration_prior: float | None = Field(default=None, gt=0)
    """Its concentration; null: 1 / n_components."""
    mean_precision_prior: float | None = Field(default=None, gt=0)
    """The precision prior on the means; null: 1."""
    degrees_of_freedom_prior: float | None = Field(default=None, gt=0)
    """The Wishart prior's degrees of freedom; null: the number of features."""


class SelectionConfig(Strict):
    """How the model is chosen: by a criterion over the sweep, or by variational fits."""

    criterion: Literal[CRITERIA] = "bic"
    """What chooses the model (lower is better): BIC, AIC or ICL."""
    # 'sweep': every K x covariance type by EM; 'variational': one Bayesian mixture per
    # covariance type at the largest K, which leaves unneeded components near zero weight
    method: Literal[METHODS] = "sweep"
    """`sweep`: every K × covariance type by EM; `variational`: one Bayesian mixture per covariance
    type at the largest K, which leaves unneeded components near zero weight.
    """
    weight_threshold: float = Field(default=0.01, ge=0, lt=1)
    """Variational: a component counts as used when its weight exceeds this."""
    prior: PriorConfig = PriorConfig()
    """Variational: the priors."""


class OutputConfig(Strict):
    """The run's output folder and what goes into it; the progress shown while it runs."""

    path: PathSetting
    """A new folder: labels (Zarr), the model, report.json, the table and plots."""
    probabilities: bool = False
    """Also write each row's probabilities and uncertainty."""
    overwrite: bool = False
    """Replace an earlier output of a dgmm run at `path`."""
    performance_report: bool = True
    """Save Dask's HTML performance report with the outputs."""
    progress: bool = True
    """A line (or, on a terminal, a bar) per pass over the data."""
    # Without a terminal, progress lines on stderr at most this often (seconds; 0: every pass).
    progress_interval: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Without a terminal, progress lines on stderr at most this often, in seconds (0: every pass;
    run.log keeps every one).
    """
    # What run.log keeps of other libraries' records (Dask, distributed): dgmm's own are all
    # kept; "info" adds distributed's scheduler and worker chatter.
    library_log: Literal["warning", "info", "debug"] = "warning"
    """What run.log keeps of Dask's and distributed's records (dgmm's own are all kept)."""


class StoreConfig(Strict):
    """Fits kept for later runs on the same data (`dgmm.store.ResultStore`): a rerun with a
    larger grid or another criterion fits only what is new."""

    enabled: bool = True
    """Read fits of earlier runs back, and keep this run's."""
    path: PathSetting | None = None
    """The store's folder; null: `$DGMM_STORE`, else `~/.cache/dgmm/store` (shared by every
    run on the machine, whatever its output)."""
    max_size: str | int = "10GiB"
    """The most the store may take; past it the fits used least recently are removed."""

    @field_validator("max_size")
    @classmethod
    def _size(cls, v: str | int) -> str | int:
        try:
            worker_memory_bytes(v)
        except ValueError:
            raise ValueError(
                f"'{v}' is not a size; use e.g. '10GiB' or a number of bytes"
            ) from None
        return v


class LocalClusterConfig(Strict):
    """A LocalCluster started by the run; it listens on 127.0.0.1 unless told otherwise."""

    type: Literal["local"] = "local"
    """A LocalCluster started by the run."""
    n_workers: int = Field(default=2, ge=1)
    """Worker processes (or threads' workers with `processes: false`)."""
    threads_per_worker: int = Field(default=1, ge=1)
    """Threads per worker."""
    memory_limit: str | float | None = "auto"
    """Memory per worker: a size ('2GiB'), bytes, a fraction of the machine's memory, 'auto' or
    null (no limit).
    """
    processes: bool = True
    """Workers as processes (true) or threads of the run's process."""
    host: str = "127.0.0.1"
    """The address every socket of the cluster listens on."""
    dashboard_address: str | None = "127.0.0.1:8787"
    """The Dask dashboard's address; null: none."""

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
    """The certificate authority's certificate."""
    cert: PathSetting
    """The client's certificate."""
    key: PathSetting | None = None  # None: the key is in the ``cert`` file
    """The client's private key; null: it is in the `cert` file."""

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
    """An existing scheduler."""
    address: str
    """The scheduler's address: `tcp://host:port`, or `tls://host:port` with `tls`."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for the scheduler, a first worker, and the workers' checks."""
    tls: TLSConfig | None = None
    """Certificates for a `tls://` scheduler."""

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
    """A dask-jobqueue cluster: `SLURMCluster` or `PBSCluster`."""
    jobs: int = Field(default=1, ge=1)
    """Batch jobs to submit (`cluster.scale(jobs=...)`)."""
    options: dict[str, Any] = {}
    """Passed as they are to the dask-jobqueue cluster's constructor (queue, account, cores,
    processes, memory, walltime, ...).
    """
    timeout: float = Field(default=600.0, gt=0)
    """Seconds to wait for a first worker (jobs may queue)."""


ClusterConfig = Annotated[
    LocalClusterConfig | AddressClusterConfig | JobqueueClusterConfig, Field(discriminator="type")
]


class RunConfig(Strict):
    """A whole run."""

    data: DataConfig
    """Where the rows are."""
    model: ModelConfig
    """The candidates: every K × covariance type, each with `n_init` restarts."""
    selection: SelectionConfig = SelectionConfig()
    """How the model is chosen."""
    output: OutputConfig
    """Where the results go."""
    cluster: ClusterConfig = LocalClusterConfig()
    """Where the passes run; a LocalCluster by default."""
    store: StoreConfig = StoreConfig()
    """Fits kept for later runs on the same data."""
    dask: dict[str, Any] = {}
    """Dask settings as dotted keys, applied with `dask.config.set` (e.g. `dgmm.stall-timeout:
    60s`).
    """

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
        keep.pop("store")  # where fits are kept changes how long a run takes, not its result
        for k in (
            "overwrite",
            "performance_report",
            "progress",
            "progress_interval",
            "library_log",
        ):
            keep["output"].pop(k)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


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
