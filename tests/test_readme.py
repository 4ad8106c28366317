"""The README's code runs as written: every Python block is executed in order (in a folder
holding the ``data.zarr`` and ``data.parquet`` it names), and every line ``EXPR  # VALUE`` whose
comment starts with a Python literal is a claim: ``EXPR`` must equal it. The command synopses
name only subcommands, options and make targets that exist."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import build_parser

from .helpers import claim, code_blocks, run_checking_claims, write_example_data

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return code_blocks(README, language)


def test_every_python_block_runs_and_its_claims_hold(tmp_path, monkeypatch):
    blocks = _blocks("python")
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    write_example_data()
    namespace: dict = {}
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what is claimed is checked; warnings are not
        for block in blocks:
            checked += run_checking_claims(block, namespace)
    assert checked >= 2  # the seed example's choice, the variational weights
    assert list(namespace["gm"].feature_names_in_) == ["a", "b", "c"]
    assert Path("model/model.json").exists()


def test_the_readme_is_short():
    """What it is, why, install, quick starts, figures, links: the rest is in the docs."""
    assert len(README) <= 10_000


def test_the_command_synopses_name_what_exists():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    synopsis = next(b for b in _blocks("bash") if "dgmm run CONFIG" in b)
    for line in synopsis.splitlines():
        words = line.split("#")[0].split()
        assert words and words[0] == "dgmm", line
        if words[1].startswith("--"):
            assert words[1] in parser._option_string_actions, line
            continue
        assert words[1] in commands, line
        sub = commands[words[1]]
        for option in re.findall(r"--[a-z-]+", " ".join(words[2:])):
            assert option in sub._option_string_actions, (line, option)
    makefile = (ROOT / "Makefile").read_text()
    for block in _blocks("bash"):
        for target in re.findall(r"^make ([a-z-]+)", block, re.M):
            assert re.search(rf"^{target}:", makefile, re.M), target
        for path in re.findall(r"(?:configs|docker)/[\w./-]+\.ya?ml", block):
            made = path.startswith(("docker/config/", "docker/data/"))  # the block makes them
            assert made or (ROOT / path).exists(), path


@pytest.mark.parametrize("comment", ["# 4: the six", "# {'a': 1}", "# a fitted model"])
def test_claims_are_read_from_comments(comment):
    """The claim reader itself: a literal is a claim, prose is not."""
    expected = {"# 4: the six": 4, "# {'a': 1}": {"a": 1}, "# a fitted model": None}[comment]
    assert claim(comment) == expected
    assert np.int64(4) == claim("# 4")


def test_a_false_claim_fails():
    assert run_checking_claims("x = 1\nx + 1  # 2: two", {}) == 1
    with pytest.raises(AssertionError, match="gives 2, not 3"):
        run_checking_claims("x = 1\nx + 1  # 3", {})


def test_every_command_and_option_has_help_and_make_data_defaults_match_the_config():
    from pipelines.schema import GenerateConfig

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == {
        "run",
        "validate",
        "init",
        "make-data",
        "summary",
        "predict",
        "store",
        "diff",
    }
    for name, sub in commands.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, (name, action.dest)
        text = sub.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, name
    make_data = {a.dest: a.default for a in commands["make-data"]._actions}
    for field in ("seed", "chunk_rows", "dtype", "separation"):
        assert make_data[field] == GenerateConfig.model_fields[field].default, field
