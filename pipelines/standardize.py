"""The column transform of ``data.standardize``: saved beside the model as
``standardize.json``, checked field by field when read back, applied lazily to new rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError

__all__ = ["STANDARDIZE_FILE", "read_transform", "standardize"]

STANDARDIZE_FILE = "standardize.json"


def read_transform(path: Path, n_features: int) -> dict:
    """The column transform in a ``standardize.json`` beside a model, checked before use.

    Parameters
    ----------
    path : Path
        The ``standardize.json`` file.
    n_features : int
        The model's number of features: the length of both lists.

    Returns
    -------
    transform : dict
        ``{"center": [...], "scale": [...]}`` of floats, for `standardize`.

    Raises
    ------
    ConfigError
        Naming the file and the field when it is not UTF-8 JSON, not an object with exactly
        ``center`` and ``scale``, or when a list has the wrong length, a value that is not a
        finite number, or (``scale``) one that is not a positive normal float.
    """
    import json

    try:
        transform = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # also not UTF-8 and not JSON
        raise ConfigError(
            f"{path}: expected UTF-8 JSON, found {' '.join(str(e).split())}"
        ) from None
    if not isinstance(transform, dict):
        raise ConfigError(f"{path}: expected a JSON object, found a {type(transform).__name__}")
    for key in transform:
        if key not in ("center", "scale"):
            raise ConfigError(f"{path}: {key!r}: expected only the keys 'center' and 'scale'")
    for key in ("center", "scale"):
        if key not in transform:
            raise ConfigError(f"{path}: {key}: expected a list of {n_features} numbers, found none")
    return {key: _transform_values(path, key, transform[key], n_features) for key in transform}


def _transform_values(path: Path, name: str, values, n_features: int) -> list[float]:
    """One list of `read_transform`: ``n_features`` finite numbers; scales positive and normal
    (a subnormal scale divides rows into infinities)."""
    if not isinstance(values, list) or len(values) != n_features:
        found = f"a list of {len(values)}" if isinstance(values, list) else type(values).__name__
        raise ConfigError(f"{path}: {name}: expected a list of {n_features} numbers, found {found}")
    for i, v in enumerate(values):
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        try:
            ok = number and np.isfinite(float(v))
        except OverflowError:  # an integer beyond float64
            ok = False
        if ok and name == "scale":
            ok = float(v) >= np.finfo(np.float64).tiny
        if not ok:
            expected = "a positive normal float" if name == "scale" else "a finite number"
            raise ConfigError(f"{path}: {name}[{i}]: expected {expected}, found {repr(v)[:80]}")
    return [float(v) for v in values]


def standardize(x, transform: dict):
    """``(x − center) / scale`` per column, lazily, in the rows' own float dtype."""
    center = np.asarray(transform["center"], dtype=np.float64)
    scale = np.asarray(transform["scale"], dtype=np.float64)
    return ((x - center) / scale).astype(x.dtype)
