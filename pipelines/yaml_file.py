"""A config file read safely: no Python tags, no duplicate keys, no alias bombs; and
``section.key=value`` overrides from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["apply_overrides", "read_yaml"]


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
