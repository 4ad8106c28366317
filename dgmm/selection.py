"""Model selection: every K × covariance type × restart fitted in lockstep, scored, and chosen.

`Sweep` is the one EM engine: `GaussianMixture.fit` is its one-cell case and `select` the
many-cell case. Every pass over the data serves every candidate still running; a candidate that
fails is recorded with its reason (NA) and optionally retried with a larger ``reg_covar``; with a
checkpoint path the state is saved after every pass so a killed sweep resumes where it stopped,
on the same data only. After EM one scoring pass gives every fitted restart its log-likelihood and
the entropy term of ICL.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._candidates import STATUSES, Candidate, Retry, best_restart
from ._checkpoint import CHECKPOINT_KIND
from ._progress import PassReport, ProgressFn, Reporter
from ._reduce import weights_digest
from ._sweep import Sweep, plan_sample, starts_on_sample
from .bayesian import BayesianGaussianMixture
from .criteria import CRITERIA, effective_components, information_criteria
from .em import (
    DataPasses,
)
from .estimator import GaussianMixture, from_candidate
from .files import NotOwnFile, is_own
from .inputs import load_input
from .options import METHODS, STRATEGIES
from .params import n_parameters
from .paths import absolute_path
from .sampling import RowSample
from .settings import FitSettings
from .store import NUMERICS_VERSION, ResultStore, as_store, fit_settings_key, reuse_report
from .validation import (
    ColumnProfile,
    check_constant_columns,
    check_n_components,
    check_profile,
)
from .variational import PriorSpec, check_prior_spec

__all__ = [
    "CHECKPOINT_KIND",
    "CRITERIA",
    "METHODS",
    "STATUSES",
    "STRATEGIES",
    "PassReport",
    "Retry",
    "SelectionResult",
    "information_criteria",
    "profile",
    "select",
]


@dataclass
class SelectionResult:
    """What `select` found: every restart of every cell, scored, and the chosen model.

    Attributes
    ----------
    results : list of dict
        One row per restart (cell by cell, in the order asked): ``n_components``,
        ``covariance_type``, ``restart``, ``log_likelihood`` (total, of the final parameters),
        ``n_parameters``, ``bic``, ``aic``, ``icl``, ``n_iter``, ``converged``, ``reg_covar``,
        ``retries``, ``best_in_cell`` (the restart `GaussianMixture` would keep), ``status``
        (one of `STATUSES`: converged, not converged, failed, degenerate, stopped, cell
        stopped), ``error`` (None, or why the restart failed or was stopped, for people; its
        scores are then None),
        ``sample_iter`` (EM iterations on the sample, ``strategy='sample'``), ``reused``
        (with a ``store``: the run whose stored fit was read back, or None) and
        ``estimate`` (a cell stopped after the sample: its BIC, AIC and ICL estimated there;
        a variational one's also its ``effective_components`` and ``weights`` there).
        Variational rows add ``lower_bound``, ``effective_components`` and ``weights``.
    criterion : str
    best_params_ : dict
        ``n_components`` and ``covariance_type`` of the selected cell; a variational
        selection adds ``effective_components``, the components whose weight exceeds
        ``weight_threshold`` (the K it chose).
    best_estimator_ : GaussianMixture
        The selected cell's best restart, fitted.
    n_passes_ : int
        Passes over the data the selection made (profile, initialisation, EM, scoring).
    resumed_from : int or None
        Passes of the checkpoint it resumed from, if it did.
    sample : RowSample or None
        The uniform sample of rows the selection drew (every row kept with the same
        probability; `RowSample.x` holds them in row order): for 'kmeans' or 'k-means++' init
        on Dask or Zarr input, or ``strategy='sample'``. None when it drew none.
    reuse : dict or None
        With a ``store``: ``reused`` (candidates read back), ``fitted`` (the others),
        ``origins`` (the runs the reused fits came from, with counts), ``changed`` (the
        fitting settings that differ from the last selection on the same data, in words, or
        None) and ``store`` (its folder).
    """

    results: list[dict]
    criterion: str
    best_params_: dict
    best_estimator_: Any
    n_passes_: int
    resumed_from: int | None = None
    profile: ColumnProfile | None = None
    candidates: list[Candidate] = field(default_factory=list, repr=False)
    settings: FitSettings = field(default_factory=FitSettings, repr=False)
    feature_names: tuple[str, ...] | None = field(default=None, repr=False)
    sample: RowSample | None = field(default=None, repr=False)
    reuse: dict | None = field(default=None, repr=False)

    def estimator(self, n_components: int, covariance_type: str):
        """The fitted `GaussianMixture` of a cell's best restart (what that estimator fits).

        Raises
        ------
        ValueError
            If the cell was not in the sweep or every restart of it failed.
        """
        group = [c for c in self.candidates if c.cell == (covariance_type, n_components)]
        if not group:
            raise ValueError(f"no cell ({covariance_type!r}, K={n_components}) in this selection")
        best = best_restart(group)
        if best is None:
            raise ValueError(
                f"every restart of ({covariance_type!r}, K={n_components}) failed: {group[0].error}"
            )
        cls = BayesianGaussianMixture if self.settings.variational else GaussianMixture
        gm = cls(
            n_components,
            covariance_type=covariance_type,
            reg_covar=best.state.reg_covar,
            **self.settings.estimator_params(),
        )
        n_features = best.state.params.n_features
        return from_candidate(best, gm, n_features, self.n_passes_, self.feature_names)

    def cells(self) -> list[dict]:
        """The best restart of every cell (the mclust table's entries), NA rows included (a cell
        stopped after EM on the sample by the restart that holds its estimated criteria)."""
        out: dict[tuple[str, int], dict] = {}
        for row in self.results:
            key = (row["covariance_type"], row["n_components"])
            held = out.get(key)
            if (
                held is None
                or row["best_in_cell"]
                or (not held["best_in_cell"] and row["estimate"] and not held["estimate"])
            ):
                out[key] = row
        return list(out.values())

    def __repr__(self) -> str:
        """One line: the choice, its criterion and the size of the table (`to_pandas`)."""
        cells = self.cells()
        failed = sum(r["error"] is not None for r in cells)
        chosen = ", ".join(f"{k}={v!r}" for k, v in self.best_params_.items())
        value = next(
            (
                r[self.criterion]
                for r in cells
                if r["error"] is None
                and r["n_components"] == self.best_params_["n_components"]
                and r["covariance_type"] == self.best_params_["covariance_type"]
            ),
            None,
        )
        shown = "" if value is None else f" {self.criterion}={value:.6g};"
        return (
            f"SelectionResult(best: {chosen};{shown} {len(cells)} cell(s), {failed} NA, "
            f"{len(self.results)} restart(s); the table: .to_pandas())"
        )

    def to_pandas(self):
        """The results as a pandas DataFrame (pandas is optional)."""
        import pandas as pd

        return pd.DataFrame(self.results)


def _rows(
    cands: list[Candidate], n_features: int, n: int, weight_threshold: float | None = None
) -> list[dict]:
    """One row per restart; criteria use the number of rows ``n`` (as scikit-learn's do).

    A variational fit (``weight_threshold`` given) is scored as its posterior-mean mixture
    with its effective components (weight above the threshold) counted as parameters; its rows
    add ``lower_bound``, ``effective_components`` and the ``weights``.
    """
    cells: dict[tuple[str, int], list[Candidate]] = {}
    for c in cands:
        cells.setdefault(c.cell, []).append(c)
    best = {cell: best_restart(group) for cell, group in cells.items()}
    rows = []
    for c in cands:
        ok = c.error is None and c.log_likelihood is not None
        k = c.n_components
        extra = {}
        if weight_threshold is not None:
            fitted = c.state is not None and c.error is None
            k = effective_components(c.state.params, weight_threshold) if fitted else k
            extra = {
                "lower_bound": c.state.lower_bound if fitted else None,
                "effective_components": k if fitted else None,
                "weights": [float(v) for v in c.state.params.weights] if fitted else None,
            }
        p = n_parameters(c.covariance_type, k, n_features)
        crit = (
            information_criteria(c.log_likelihood, p, n, c.entropy)
            if ok
            else dict.fromkeys(CRITERIA)
        )
        rows.append(
            {
                "n_components": c.n_components,
                "covariance_type": c.covariance_type,
                "restart": c.restart,
                "log_likelihood": c.log_likelihood if ok else None,
                "n_parameters": p,
                **crit,
                "n_iter": c.state.n_iter if c.state else None,
                "sample_iter": c.sample_iter,
                "reused": c.reused,
                "converged": c.state.converged if c.state and ok else None,
                "reg_covar": c.state.reg_covar if c.state else c.reg_covar,
                "retries": c.retries,
                "best_in_cell": best[c.cell] is c,
                "status": c.status,
                "error": c.error,
                "estimate": c.estimate,
                **extra,
            }
        )
    return rows


def _failures(rows: list[dict]) -> str:
    """Why every candidate failed, in one line: each kind of failure counted, with the first
    restart's reason as its example."""
    kinds: dict[str, list[dict]] = {}
    for r in rows:
        if r["error"]:  # stopped restarts are counted too: none of them can be selected
            kinds.setdefault(r["status"], []).append(r)
    parts = []
    for kind, group in sorted(kinds.items(), key=lambda item: -len(item[1])):
        r = group[0]
        parts.append(
            f"{len(group)} {kind} (e.g. {r['covariance_type']} K={r['n_components']}, restart "
            f"{r['restart']}: {r['error']})"
        )
    failed = sum(len(g) for g in kinds.values())
    return f"every candidate failed ({failed} of {len(rows)} restarts): {'; '.join(parts)}"


def profile(X: Any, name: str = "X") -> ColumnProfile:
    """One pass over the data: rows with NaN/inf, column ranges, means and standard deviations,
    and a digest of the bytes (`ColumnProfile`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features), Dask array, Zarr array, DataFrame or path
    name : str, default='X'
        What error messages call the data.

    Returns
    -------
    ColumnProfile
        ``mean`` and ``std`` standardise the data; `select` takes it as ``profile=`` and then
        makes no profile pass of its own.
    """
    return DataPasses.over(load_input(X, None, name)).profile()


def select(
    X: Any,
    n_components: int | Sequence[int] = range(1, 11),
    covariance_types: str | Sequence[str] = ("full",),
    *,
    criterion: str = "bic",
    n_init: int = 1,
    init_params: str = "kmeans",
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    random_state: int | None = None,
    sample_weight: Any = None,
    retry: Retry | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_key: dict | None = None,
    store: ResultStore | str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    profile: ColumnProfile | None = None,
    screen_degenerate: bool = True,
    strategy: str = "exact",
    sample_size: int | None = None,
    method: str = "sweep",
    prior: dict | None = None,
    weight_threshold: float = 0.01,
    screen_cells: bool = True,
    name: str = "X",
    settings: FitSettings | None = None,
) -> SelectionResult:
    """Fit every K × covariance type × restart in lockstep and choose by an information criterion.

    Every pass over the data serves every candidate still running, so a sweep reads the data
    about as often as its slowest candidate's fit. Each cell's restarts are drawn from
    ``random_state`` exactly as ``GaussianMixture(K, covariance_type=..., n_init=...,
    random_state=...)`` draws them, so the selected model is bitwise the one that estimator fits.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features), Dask array, Zarr array, DataFrame or path
        As for `GaussianMixture.fit`: the fitted estimators of a DataFrame, Parquet or CSV
        table have its column names in ``feature_names_in_``.
    n_components : int or sequence of int, default=range(1, 11)
    covariance_types : str or sequence of {'full', 'tied', 'diag', 'spherical'}
    criterion : {'bic', 'aic', 'icl'}, default='bic'
        Lower is better. ICL is BIC minus twice the classification entropy (mclust).
    n_init, init_params, tol, reg_covar, max_iter, random_state
        As in `GaussianMixture`, for every cell.
    sample_weight : array-like of shape (n_samples,), default=None
    retry : Retry or None
        Refit failed restarts with a larger ``reg_covar``; None records them as NA.
    checkpoint : path, default=None
        Save the state after every pass; a rerun with the same settings on the same data
        resumes from it. The data is profiled first (one pass: NaN/inf, constant columns and a
        digest of its bytes) so that a checkpoint of other data is never resumed.
    checkpoint_key : dict, default=None
        More that a resumed checkpoint must match (e.g. a configuration's hash).
    store : ResultStore or path, default=None
        Fits of earlier selections to reuse (`dgmm.store.ResultStore`, or its folder): a
        candidate fitted before on the same data (by digest: the data is profiled first)
        under every setting its fit depends on is read back, bitwise what refitting would
        give, and every fit made is kept there. Cells are screened on the sample over this
        selection's grid, as a fresh selection would. Needs an integer ``random_state``.
        ``reuse`` of the result counts what was reused and names a changed setting.
    progress : callable, default=None
        ``progress(report)`` with a `PassReport` after every pass over the data (an EM pass
        after its M-step), and once when a checkpoint is resumed.
    profile : ColumnProfile, default=None
        The data's `profile`, if already taken: it stands for the profile pass (counted as
        pass 1) and binds a checkpoint by its digest. For data transformed after profiling,
        pass ``profile.affine(center, scale)`` (its digest joins the transform's to the raw rows').
    screen_degenerate : bool, default=True
        Record restarts whose fit is a spurious maximum as NA (``error`` starts with
        ``degenerate:``, see `GaussianParams.degenerate`), so no cell or selection is made of
        them. False keeps every fit as scikit-learn's loop would.
    strategy : {'exact', 'sample'}, default='exact'
        'exact' runs every restart's EM on all rows, as `GaussianMixture` does. 'sample'
        (multi-resolution EM) draws a uniform sample of rows in one pass, initialises and fits
        every candidate to convergence on it in memory, stops restarts whose log-likelihood
        there clearly trails their cell's best (3 standard errors of the per-row difference;
        ``error`` says so), and continues the others on all rows from their sample fit under
        the same convergence test, so the fixed point is the full-data EM's. Full-data passes
        then number a few instead of tens. A cell on data less than twice its rows of the
        sample runs 'exact'.
    sample_size : int, default=None
        Rows of that sample, which Dask input's 'kmeans' and 'k-means++' initialisations also
        run scikit-learn on; None: 20 per free parameter of the largest candidate, within
        10 000 and 100 000 rows (and 256 MiB), each cell fitted on the rows of it that its own
        default keeps (a fit that does not depend on the grid; variational: all of it).
    screen_cells : bool, default=True
        With ``strategy='sample'``, also stop whole cells whose criterion on all rows,
        estimated from their fit on the sample, trails the best cell's by more than 3 standard
        errors (with and without the correction for fitting on the sample): their rows say why
        and carry no scores. With ``method='variational'`` the cells are the covariance types,
        each judged by its effective mixture. False keeps every cell to the end (the whole
        table).
    method : {'sweep', 'variational'}, default='sweep'
        'sweep' fits every K × covariance type by EM. 'variational' fits one
        `BayesianGaussianMixture` per covariance type at the largest K (``n_init`` restarts,
        the best by lower bound); components the data do not need keep weights near 0. Types
        are then compared by ``criterion`` on each fit's posterior-mean mixture, counting the
        parameters of its effective components (weight above ``weight_threshold``): a
        variational bound drops constants that differ between covariance types, so bounds
        are compared within a type only. ``tol`` is then on the bound, a total (scikit-learn's
        convention: a variational fit prunes unneeded components while its bound barely
        changes, so a tolerance per row would stop it before they drain). With
        ``strategy='sample'`` and ``screen_cells``, types whose criterion trails clearly on
        the sample stop there, as cells of the sweep do.
    prior : dict, default=None
        `BayesianGaussianMixture` prior settings for 'variational' (``weight_concentration_
        prior_type``, ``weight_concentration_prior``, ``mean_precision_prior``,
        ``mean_prior``, ``degrees_of_freedom_prior``, ``covariance_prior``).
    weight_threshold : float, default=0.01
        The weight above which a variational fit's component counts as used.
    name : str, default='X'
        What error messages call the data.
    settings : FitSettings, default=None
        All the fitting settings above (``n_components`` to ``screen_cells``, ``retry``)
        as one validated object, e.g. a configuration's: then leave those keywords at their
        defaults.

    Returns
    -------
    SelectionResult

    Raises
    ------
    DataError
        Rows with NaN/inf, identical rows or constant columns, named (by column name where
        the data has them). Constant columns are found before any fit for in-memory input,
        and for Dask or Zarr input by the pass that draws the sample or profiles the data
        (a checkpoint, ``strategy='sample'``, 'kmeans' or 'k-means++' init); otherwise, when
        every candidate fails as degenerate, one more pass names them.
    ValueError
        Bad parameters or data, or when every candidate failed: each kind of failure
        counted, with an example (a degenerate fit names the columns along which a
        component's covariance is singular, and what to do).

    Examples
    --------
    >>> import numpy as np
    >>> from dgmm import select
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (200, 2)), rng.normal(8, 1, (200, 2))])
    >>> found = select(X, n_components=range(1, 4), covariance_types=["full", "diag"],
    ...                random_state=0)
    >>> found.best_params_
    {'n_components': 2, 'covariance_type': 'diag'}
    """
    given = FitSettings(
        n_components,
        covariance_types,
        criterion=criterion,
        n_init=n_init,
        init_params=init_params,
        tol=tol,
        reg_covar=reg_covar,
        max_iter=max_iter,
        random_state=random_state,
        strategy=strategy,
        sample_size=sample_size,
        method=method,
        prior=prior,
        weight_threshold=weight_threshold,
        screen_cells=screen_cells,
        screen_degenerate=screen_degenerate,
        retry=retry,
    )
    if settings is None:
        settings = given
    elif not isinstance(settings, FitSettings):
        raise TypeError(f"settings must be a FitSettings; got {type(settings).__name__}")
    elif given != FitSettings():
        default = FitSettings().key()
        changed = [k for k, v in given.key().items() if default[k] != v]
        raise TypeError(
            "select: give the fitting settings as keywords or as settings=, not both "
            f"(keywords given: {changed})"
        )
    if checkpoint is not None:
        checkpoint = absolute_path(checkpoint, "checkpoint")
        if os.path.lexists(checkpoint) and not is_own(checkpoint, CHECKPOINT_KIND):
            raise NotOwnFile(
                f"checkpoint '{checkpoint}' exists and is not a dgmm checkpoint; it is never "
                "overwritten: give another checkpoint path, or remove it yourself"
            )
    store = as_store(store)
    if store is not None and not isinstance(settings.random_state, (int, np.integer)):
        warnings.warn(
            f"store: random_state={settings.random_state!r} draws new starts on every call, so "
            "no fit can be reused; give an integer random_state to use the store",
            UserWarning,
            stacklevel=2,
        )
        store = None
    data = load_input(X, sample_weight, name)
    n_samples, n_features = data.x.shape
    check_n_components(max(settings.n_components), n_samples)
    spec = None
    if settings.variational:
        for t in settings.covariance_types:
            spec = check_prior_spec(PriorSpec(**(settings.prior or {})), t, n_features)
    passes = DataPasses.over(data)
    passes.name, passes.columns = name, data.feature_names
    cands = settings.candidates()
    passes.sampling = plan_sample(
        passes,
        settings.cells,
        settings.sample_size,
        settings.random_state,
        per_cell=not settings.variational,
    )
    reporter = None
    if progress is not None:
        reporter = Reporter(progress, passes, settings, n_samples)
        reporter.candidates = cands
    key = {}
    # EM starts on the sample, or k-means seeds on it (Dask and Zarr input): drawn first
    multi = starts_on_sample(settings.strategy, passes.sampling, n_samples)
    seeds_on_sample = data.x_mem is None and settings.init_params in ("kmeans", "k-means++")
    if profile is not None:
        if profile.n != n_samples or profile.lo.shape != (n_features,):
            raise ValueError(
                f"profile: it describes {profile.n} rows × {profile.lo.size} features, not the "
                f"{n_samples} × {n_features} of {name}"
            )
        passes.use_profile(profile)
        passes.resume(1)  # the given profile stands for the profile pass
    else:
        # the sample pass profiles too: where the run draws a sample, it is the profile pass
        # (and it is drawn first, so constant columns are named before any fit)
        if multi or seeds_on_sample:
            passes.sample()
            profile = passes.sample_profile
        elif checkpoint is not None or store is not None:  # both are bound to the digest
            profile = passes.profile()
    if profile is not None:
        check_profile(profile, data.x.dtype, name, data.feature_names)
    elif data.ranges is not None and n_samples > 1:  # in memory: load_input took the ranges
        check_constant_columns(*data.ranges, n_samples, name, data.feature_names)
    data_key = {}
    if profile is not None and (checkpoint is not None or store is not None):
        data_key = {
            "shape": list(data.x.shape),
            "dtype": str(data.x.dtype),
            "row_chunks": [int(c) for c in data.x.chunks[0]],
            "digest": f"{profile.digest:032x}",
            # named columns: the same bytes under other names are other data
            **({"columns": list(data.feature_names)} if data.feature_names else {}),
            # other weights are other data: fits and checkpoints are bound to them too
            **(
                {}
                if data.w is None
                else {"weights": weights_digest(data.w_mem if data.w_mem is not None else data.w)}
            ),
        }
    if checkpoint is not None:
        key = {
            **settings.key(passes.sampling.size),
            **data_key,
            "numerics": NUMERICS_VERSION,  # a checkpoint of other arithmetic is not resumed
            **(checkpoint_key or {}),
        }
    base = {}
    if store is not None:
        base = {
            "data": {**data_key, "in_memory": data.x_mem is not None},
            "settings": fit_settings_key(settings),
            # its seed and size; each fit's own rows of it join its spec (`candidate_spec`)
            "sample": {
                "seed": passes.sampling.seed,
                "size": passes.sampling.size
                if settings.sample_size is not None or settings.variational
                else None,
            }
            if multi or seeds_on_sample
            else None,
        }
    sweep = Sweep(
        passes,
        cands,
        settings,
        x_mem=data.x_mem,
        w_mem=data.w_mem,
        checkpoint=checkpoint,
        key=key,
        progress=reporter,
        prior=spec,
        store=store,
        store_base=base,
        origin="" if store is None else store.origin,
    )
    sweep.run()
    reuse = None if store is None else reuse_report(store, base, settings, cands)
    rows = _rows(cands, n_features, n_samples, settings.used_weight)
    ok = [r for r in rows if r["best_in_cell"] and r["error"] is None]
    if not ok:
        if profile is None and data.x_mem is None and any(c.degenerate for c in cands):
            # constant columns make every cell degenerate: one more pass names them
            check_profile(passes.profile(), data.x.dtype, name, data.feature_names)
        raise ValueError(_failures(rows))
    criterion = settings.criterion
    chosen = min(ok, key=lambda r: r[criterion])
    result = SelectionResult(
        rows,
        criterion,
        {"n_components": chosen["n_components"], "covariance_type": chosen["covariance_type"]},
        None,
        passes.n_passes,
        sweep.resumed_from,
        profile,
        cands,
        settings,
        data.feature_names,
        passes.drawn_sample,
        reuse,
    )
    result.best_estimator_ = best = result.estimator(
        chosen["n_components"], chosen["covariance_type"]
    )
    if settings.variational:  # the components the choice really uses (weight above the threshold)
        result.best_params_["effective_components"] = chosen["effective_components"]
    if not best.converged_ and settings.max_iter > 0:
        warnings.warn(
            f"The selected fit ({chosen['covariance_type']}, K={chosen['n_components']}) did "
            f"not converge in max_iter={settings.max_iter} iterations; its {criterion.upper()} may "
            "still change. Increase max_iter or tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return result
