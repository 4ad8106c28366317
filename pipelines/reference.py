"""The configuration reference, generated from the schema: every key of every section with its
type, default, constraints and description, so that the documentation cannot drift from what a
run accepts."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .schema import RunConfig

__all__ = ["config_keys", "config_reference"]

_BOUNDS = {
    annotated_types.Gt: ">",
    annotated_types.Ge: "≥",
    annotated_types.Lt: "<",
    annotated_types.Le: "≤",
}


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The sections (models) an annotation holds: one, or each member of a union."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(args[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in args for m in _models(a)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _type(annotation: Any) -> str:
    """An annotation in words a config writer reads (YAML's vocabulary)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type(a) for a in args))
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (below)"
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
        getattr(annotation, "__name__", str(annotation)), str(annotation)
    )


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(below)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value != {} else "`{}`"


def _constraints(field: FieldInfo) -> str:
    return ", ".join(
        f"{sign} {getattr(m, attr)}"
        for m in field.metadata
        for kind, sign in _BOUNDS.items()
        if isinstance(m, kind)
        for attr in ("gt", "ge", "lt", "le")
        if hasattr(m, attr)
    )


def _sections(
    model: type[BaseModel], prefix: str
) -> Iterator[tuple[str, type[BaseModel], dict[str, FieldInfo]]]:
    """Each section under ``prefix``, depth first: its dotted name, its model, its fields."""
    yield prefix, model, dict(model.model_fields)
    for name, field in model.model_fields.items():
        for sub in _models(field.annotation):
            literal = sub.model_fields.get("type")
            kind = typing.get_args(literal.annotation) if literal is not None else ()
            label = f"{prefix}.{name}" if prefix else name
            if len(_models(field.annotation)) > 1 and kind:
                label += f" (type: {' / '.join(kind)})"
            yield from _sections(sub, label)


def config_keys() -> set[str]:
    """Every key a config may hold, dotted (``model.retry.factor``); ``dask`` and
    ``cluster.options`` hold free mappings and are listed without their keys."""
    keys = set()
    for section, _, fields in _sections(RunConfig, ""):
        base = re.sub(r" \(type: [^)]*\)", "", section)
        keys.update(f"{base}.{name}" if base else name for name in fields)
    return keys


def config_reference() -> str:
    """The reference as Markdown: one table per section."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the schema dgmm checks every config against. A key not listed here "
        "is refused, naming the nearest valid key. Paths are expanded (`~`, `$VARIABLES`) and "
        "made absolute; `--set section.key=value` overrides a key from the command line.",
        "",
    ]
    for section, model, fields in _sections(RunConfig, ""):
        doc = inspect.cleandoc(model.__doc__ or "").replace("\n", " ")
        out += [f"## `{section}`" if section else "## Top level", "", doc, ""]
        out += ["| key | type | default | constraint | description |", "|---|---|---|---|---|"]
        for name, field in fields.items():
            cells = [
                f"`{name}`",
                _type(field.annotation),
                _default(field),
                _constraints(field),
                inspect.cleandoc(field.description or "").replace("\n", " "),
            ]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)
