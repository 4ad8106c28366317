"""``dgmm diff RUN_A RUN_B``: what changed between two finished runs — their configs, their
data, their selections and the cells whose criterion moved."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["diff_runs"]

# A criterion that moved by less than this, relative to its size, has not moved.
MOVED = 1e-9


def _read(run: Path) -> tuple[dict, dict]:
    """A run's report and resolved config; a folder that is not a finished run is refused."""
    try:
        report = json.loads((run / "report.json").read_text(encoding="utf-8"))
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(
            f"'{run}' is not a finished dgmm run (report.json and config.yaml): "
            f"{' '.join(str(e).split())}"
        ) from None
    cells = report.get("cells") if isinstance(report, dict) else None
    ok = (
        isinstance(report, dict)
        and isinstance(config, dict)
        and isinstance(report.get("selected"), dict)
        and isinstance(report.get("data"), dict)
        and isinstance(cells, list)
        and all(
            isinstance(c, dict) and {"covariance_type", "n_components"} <= set(c) for c in cells
        )
        and {"covariance_type", "n_components"} <= set(report["selected"])
    )
    if not ok:
        raise ConfigError(f"'{run}' is not a finished dgmm run: report.json holds no run's report")
    return report, config


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 6 and all(isinstance(v, int) for v in value):
        return f"[{value[0]}, {value[1]}, ... {value[-1]}] ({len(value)} values)"
    return json.dumps(value) if not isinstance(value, str) else value


def _cell_name(row: dict) -> str:
    return f"{row['covariance_type']} K={row['n_components']}"


def _criterion(row: dict, criterion: str) -> float | None:
    value = row.get(criterion)
    return None if value is None or row.get("error") is not None else float(value)


def diff_runs(a: Path, b: Path, limit: int = 20) -> str:
    """What changed from run ``a`` to run ``b``, one finding a line.

    Parameters
    ----------
    a, b : Path
        Two finished runs' output folders.
    limit : int, default=20
        At most this many moved cells are listed (the count is always given).
    """
    report_a, config_a = _read(a)
    report_b, config_b = _read(b)
    lines = [f"A: {a}", f"B: {b}"]
    flat_a, flat_b = _flat(config_a), _flat(config_b)
    changed = [k for k in sorted(set(flat_a) | set(flat_b)) if flat_a.get(k) != flat_b.get(k)]
    if changed:
        lines.append("config:")
        lines += [f"  {k}: {_short(flat_a.get(k))} -> {_short(flat_b.get(k))}" for k in changed]
    else:
        lines.append("config: the same")
    data_a, data_b = report_a.get("data", {}), report_b.get("data", {})
    if data_a.get("digest") and data_a.get("digest") == data_b.get("digest"):
        lines.append(f"data: the same rows (digest {data_a['digest']})")
    else:
        lines.append(
            f"data: different ({data_a.get('path')} {data_a.get('shape')} digest "
            f"{data_a.get('digest')} -> {data_b.get('path')} {data_b.get('shape')} digest "
            f"{data_b.get('digest')})"
        )
    criterion = report_b.get("criterion", "bic")
    sel_a, sel_b = report_a.get("selected", {}), report_b.get("selected", {})

    def chosen(sel: dict, crit: str) -> str:
        value = sel.get(crit)
        return f"{_cell_name(sel)} ({crit} {value:.6g})" if value is not None else _cell_name(sel)

    if _cell_name(sel_a) == _cell_name(sel_b):
        lines.append(f"selection: the same, {chosen(sel_b, criterion)}")
    else:
        crit_a = report_a.get("criterion", "bic")
        lines.append(f"selection: {chosen(sel_a, crit_a)} -> {chosen(sel_b, criterion)}")
    cells_a = {_cell_name(r): r for r in report_a.get("cells", [])}
    cells_b = {_cell_name(r): r for r in report_b.get("cells", [])}
    only_a = [n for n in cells_a if n not in cells_b]
    only_b = [n for n in cells_b if n not in cells_a]
    if only_a:
        lines.append(f"cells only in A: {', '.join(only_a)}")
    if only_b:
        lines.append(f"cells only in B: {', '.join(only_b)}")
    moved = []
    for name in (n for n in cells_b if n in cells_a):
        va, vb = _criterion(cells_a[name], criterion), _criterion(cells_b[name], criterion)
        if va is None or vb is None:
            if (va is None) != (vb is None):
                moved.append(f"  {name}: {va} -> {vb}")
        elif not math.isclose(va, vb, rel_tol=MOVED, abs_tol=0.0):
            moved.append(f"  {name}: {va:.6f} -> {vb:.6f} ({vb - va:+.6g})")
    lines.append(f"cells whose {criterion} moved: {len(moved)} of {len(cells_b)} in both")
    lines += moved[:limit]
    if len(moved) > limit:
        lines.append(f"  ... and {len(moved) - limit} more")
    return "\n".join(lines)
