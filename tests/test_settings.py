"""One source of fitting settings: `FitSettings` is what `select`'s keywords, an estimator's
parameters and a config become, and what the engine, the checkpoint key and the result carry.

- `select`'s keyword defaults are `FitSettings`'s; keywords and ``settings=`` fit the same.
- Every fitting key of a config reaches the settings (changing it changes them).
- A checkpoint made under other settings names the setting that changed, by name.
"""

from __future__ import annotations

import inspect
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dgmm
from dgmm.settings import FitSettings
from pipelines.schema import ModelConfig, RunConfig, SelectionConfig

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_select_keyword_defaults_are_the_settings_defaults():
    params = inspect.signature(dgmm.select).parameters
    default = FitSettings()
    for f in fields(FitSettings):
        assert f.name in params, f"select has no keyword {f.name}"
        assert FitSettings(**{f.name: params[f.name].default}) == default, f.name


def _rows(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(0, 1, (120, 2)), rng.normal(6, [1, 2], (120, 2))])


@st.composite
def _fit_kwargs(draw) -> dict:
    return {
        "n_components": draw(st.lists(st.integers(1, 4), min_size=1, max_size=3, unique=True)),
        "covariance_types": draw(
            st.lists(st.sampled_from(["full", "tied", "diag", "spherical"]), min_size=1, max_size=2)
        ),
        "criterion": draw(st.sampled_from(["bic", "aic", "icl"])),
        "n_init": draw(st.integers(1, 2)),
        "init_params": draw(st.sampled_from(["kmeans", "random_from_data", "k-means++"])),
        "tol": draw(st.sampled_from([1e-2, 1e-3])),
        "max_iter": draw(st.integers(1, 20)),
        "random_state": draw(st.integers(0, 50)),
        "screen_degenerate": draw(st.booleans()),
    }


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@SETTINGS
@given(kw=_fit_kwargs(), seed=st.integers(0, 5))
def test_keywords_and_settings_fit_the_same(kw, seed):
    """The same settings given either way: the same table and the same chosen model, bitwise."""
    X = _rows(seed)
    by_keywords = dgmm.select(X, **kw)
    by_object = dgmm.select(X, settings=FitSettings(**kw))
    assert by_keywords.best_params_ == by_object.best_params_
    assert by_keywords.settings == by_object.settings == FitSettings(**kw)
    for a, b in zip(by_keywords.results, by_object.results, strict=True):
        assert a["bic"] == b["bic"] and a["n_iter"] == b["n_iter"] and a["status"] == b["status"]
    assert np.array_equal(by_keywords.best_estimator_.means_, by_object.best_estimator_.means_)


def test_settings_and_keywords_together_are_refused():
    X = _rows(0)
    with pytest.raises(TypeError, match=r"not both \(keywords given: \['tol'\]\)"):
        dgmm.select(X, tol=1e-4, settings=FitSettings())
    with pytest.raises(TypeError, match="settings must be a FitSettings; got dict"):
        dgmm.select(X, settings={"tol": 1e-4})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"tol": -1}, "tol"),
        ({"criterion": "bayes"}, "criterion must be one of"),
        ({"method": "em"}, "method must be one of"),
        ({"weight_threshold": 1.0}, "weight_threshold must be in"),
        ({"prior": {"mean_precision_prior": 1.0}}, "prior is a setting of method='variational'"),
        (
            {"method": "variational", "prior": {"alpha": 1}},
            r"unknown prior setting\(s\) \['alpha'\]",
        ),
        ({"n_components": []}, "n_components must be a whole number"),
        ({"covariance_types": "round"}, "round"),
    ],
)
def test_a_bad_setting_is_refused_by_name(kw, message):
    with pytest.raises(ValueError, match=message):
        FitSettings(**kw)


def test_variational_settings_fit_the_largest_k_once():
    s = FitSettings([2, 5, 3], ["diag", "full", "diag"], method="variational")
    assert s.n_components == (5,) and s.covariance_types == ("diag", "full")
    assert s.cells == [("diag", 5), ("full", 5)] and s.used_weight == 0.01


def _base_config(tmp_path) -> dict:
    return {
        "data": {"path": str(tmp_path / "x.zarr")},
        "model": {"n_components": [1, 2, 3]},
        "output": {"path": str(tmp_path / "out")},
    }


# a value other than the default for every fitting key of the config
_OTHER = {
    "model": {
        "n_components": [2, 4],
        "covariance_types": ["diag"],
        "n_init": 2,
        "max_iter": 7,
        "tol": 1e-5,
        "reg_covar": 1e-4,
        "init": "random",
        "random_state": 9,
        "retry": {"factor": 5.0},
        "strategy": "exact",
        "sample_size": 5000,
        "screen_cells": False,
    },
    "selection": {
        "criterion": "icl",
        "method": "variational",
        "weight_threshold": 0.05,
        "prior": {"mean_precision_prior": 2.0},
    },
}


def test_every_fitting_key_of_a_config_reaches_the_settings(tmp_path):
    """Changing any key of ``model`` or ``selection`` changes the settings a run fits with:
    no key is dropped on the way (a new key without a way into `FitSettings` fails here)."""
    assert set(_OTHER["model"]) == set(ModelConfig.model_fields)
    assert set(_OTHER["selection"]) == set(SelectionConfig.model_fields)
    base = _base_config(tmp_path)
    if_variational = {"selection": {"method": "variational"}}
    for section, values in _OTHER.items():
        for key, value in values.items():
            # a prior and its weight threshold are settings of the variational method
            start = if_variational if key in ("prior", "weight_threshold") else {}
            before = {**base, **{k: dict(v) for k, v in start.items()}}
            after = {**before, section: {**before.get(section, {}), key: value}}
            a = RunConfig.model_validate(before).fit_settings()
            b = RunConfig.model_validate(after).fit_settings()
            assert a != b, f"{section}.{key} does not reach the fitting settings"


def test_a_changed_setting_is_named_when_a_checkpoint_is_not_resumed(tmp_path, caplog):
    X = _rows(1)
    ck = tmp_path / "sweep.ckpt"
    kw = {"n_components": [1, 2], "random_state": 0, "max_iter": 3}
    dgmm.select(X, checkpoint=ck, **kw)
    with caplog.at_level("WARNING", logger="dgmm"):
        dgmm.select(X, checkpoint=ck, tol=1e-4, **kw)
    said = [r.getMessage() for r in caplog.records if "not resuming" in r.getMessage()]
    assert said == [
        "not resuming from the checkpoint: the settings changed (tol 0.001 -> 0.0001) since "
        "it was written; starting afresh"
    ]
