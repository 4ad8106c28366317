"""Dask settings in a config: memory sizes as Dask reads them, and ``dask:`` keys checked
against Dask's own defaults (an unknown key names the nearest known one)."""

from __future__ import annotations

import difflib
from typing import Any

__all__ = ["check_dask_settings", "local_worker_limit", "worker_memory_bytes"]


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
