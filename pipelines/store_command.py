"""``dgmm store``: see and clean the store of fits kept for later runs."""

from __future__ import annotations

import time

from dask.utils import format_bytes

from dgmm.store import ResultStore

from .dask_settings import worker_memory_bytes
from .errors import ConfigError

__all__ = ["store_command"]


def store_command(
    action: str, path: str | None, max_size: str | None, older_than: float | None, everything: bool
) -> int:
    """``dgmm store ls``: the fits a store keeps, by data and stage; ``dgmm store prune``:
    remove the least recently used beyond ``max_size``, those unused for ``older_than`` days,
    or ``everything``."""
    store = ResultStore(path) if path else ResultStore()
    if action == "prune":
        if max_size is None and older_than is None and not everything:
            raise ConfigError("store prune: give --max-size, --older-than or --all")
        try:
            cap = 0 if everything else (None if max_size is None else worker_memory_bytes(max_size))
        except ValueError:
            raise ConfigError(f"--max-size '{max_size}' is not a size, e.g. 5GiB") from None
        if older_than is not None and not older_than >= 0:  # NaN included
            raise ConfigError(f"--older-than {older_than}: give a number of days, 0 or more")
        older = None if older_than is None else older_than * 86400.0
        # only --older-than: no size cap (the config's max_size is not known here)
        removed = store.prune(max_bytes=cap if cap is not None else 2**63, older_than=older)
        print(f"removed {len(removed)} fit(s); {format_bytes(store.nbytes())} left in {store.path}")
        return 0
    entries = store.entries()
    print(f"{store.path}: {len(entries)} fit(s), {format_bytes(sum(e.nbytes for e in entries))}")
    groups: dict[tuple[str, str], list] = {}
    for e in entries:
        groups.setdefault((e.data_digest, e.stage), []).append(e)
    for (digest, stage), group in sorted(groups.items()):
        cells = sorted({(e.cell[0], int(e.cell[1])) for e in group})
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(max(e.last_used for e in group)))
        origins = sorted({e.origin for e in group})
        print(
            f"data {digest[:16]}  {stage:6}  {len(group):4} fit(s)  {len(cells)} cell(s)  "
            f"{format_bytes(sum(e.nbytes for e in group)):>9}  last used {used}  "
            f"from {'; '.join(origins)}"
        )
    return 0
