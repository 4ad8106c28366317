"""The documentation says what the code does.

- Every Python block of every page runs, in order, and its ``EXPR  # LITERAL`` claims hold.
- Every YAML config shown validates against the schema.
- The configuration reference lists every key the schema takes, each described, and every key
  of every shipped config.
- The API reference covers every public name.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import yaml

import dgmm
from pipelines.reference import config_keys, config_reference
from pipelines.schema import RunConfig

from .helpers import ROOT, code_blocks, run_checking_claims, write_example_data

DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
SHIPPED_CONFIGS = [*sorted((ROOT / "configs").glob("*.yaml")), ROOT / "pipelines" / "starter.yaml"]


def _with_python() -> list[Path]:
    return [p for p in PAGES if code_blocks(p.read_text(encoding="utf-8"), "python")]


def test_the_pages_hold_code_to_check():
    assert len(_with_python()) >= 2
    assert any(code_blocks(p.read_text(encoding="utf-8"), "yaml") for p in PAGES)


@pytest.mark.parametrize("page", _with_python(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_python_block_of_a_page_runs_and_its_claims_hold(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_example_data()
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what is claimed is checked; warnings are not
        for block in code_blocks(page.read_text(encoding="utf-8"), "python"):
            run_checking_claims(block, namespace, str(page.relative_to(DOCS)))


def _merged(block: dict, tmp_path: Path) -> dict:
    """A config shown in part (a section or two), completed with the least a run needs."""
    base = {
        "data": {"path": str(tmp_path / "x.zarr")},
        "model": {"n_components": [1, 2]},
        "output": {"path": str(tmp_path / "out")},
    }
    return {**base, **block}


def test_every_yaml_config_shown_validates(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # certificates under ~/certs, as shown
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "client.pem", "client-key.pem"):
        (tmp_path / "certs" / name).write_text("-")
    shown = 0
    for page in [ROOT / "README.md", *PAGES]:
        for block in code_blocks(page.read_text(encoding="utf-8"), "yaml"):
            config = _merged(yaml.safe_load(block), tmp_path)
            RunConfig.model_validate(config)
            shown += 1
    assert shown >= 3


def _keys(mapping: dict, prefix: str = "") -> set[str]:
    """Dotted keys of a config; the free mappings (``dask``, ``cluster.options``) stop there."""
    out = set()
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        out.add(dotted)
        if isinstance(value, dict) and dotted not in ("dask", "cluster.options"):
            if dotted != "model.n_components":  # {start, stop, step}: a range, not keys
                out |= _keys(value, dotted + ".")
    return out


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_the_reference_lists_every_key_of_a_shipped_config(config):
    text = re.sub(r"^(\s*)# (\w+:)", r"\1\2", config.read_text(), flags=re.M)  # starter's
    keys = _keys(yaml.safe_load(text.replace("DATA_PATH", "x").replace("OUTPUT_PATH", "y")))
    assert keys <= config_keys(), sorted(keys - config_keys())


def test_the_reference_describes_every_key_of_the_schema():
    reference = config_reference()
    sections = re.split(r"^## ", reference, flags=re.M)[1:]
    rows = {}
    for section in sections:
        title = re.sub(r" \(type: [^)]*\)", "", section.splitlines()[0].strip("` "))
        title = "" if title == "Top level" else title.replace("`", "")
        for line in section.splitlines():
            m = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
            if m:
                cells = [c.strip() for c in m.group(2).split(" | ")]
                rows[f"{title}.{m.group(1)}" if title else m.group(1)] = cells
    assert set(rows) == config_keys()
    undescribed = sorted(k for k, cells in rows.items() if not cells[-1])
    assert not undescribed, f"keys without a description: {undescribed}"


def test_the_api_reference_covers_every_public_name():
    api = (DOCS / "api.rst").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   ([\w.]+)\s*$", api, flags=re.M))
    missing = sorted(set(dgmm.__all__) - listed)
    assert not missing, f"public names missing from docs/api.rst: {missing}"
    public_modules = {
        p.stem
        for p in (ROOT / "dgmm").glob("*.py")
        if not p.stem.startswith("_") and "__all__" in p.read_text(encoding="utf-8")
    }
    assert not sorted(public_modules - listed), sorted(public_modules - listed)


def test_a_false_claim_in_a_page_fails():
    with pytest.raises(AssertionError, match="gives 2, not 3"):
        run_checking_claims("x = 1\nx + 1  # 3", {}, "page")
