"""Writes ``user-guide/configuration-reference.md`` from the config schema before each build
(`pipelines.reference.config_reference`), so the reference is what a run accepts."""

from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx


def _write(app: Sphinx) -> None:
    from pipelines.reference import config_reference

    target = Path(app.srcdir) / "user-guide" / "configuration-reference.md"
    text = config_reference() + "\n"
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", _write)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
