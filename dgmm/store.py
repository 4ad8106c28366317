"""A store of finished fits, shared by runs on the same data: a candidate whose full
specification (the data's digest, its cell and restart, every setting its fit depends on) was
fitted before is read back instead of refitted, bitwise what refitting would give.

Each entry is one of dgmm's own files (`dgmm.files`: digested, written atomically), named by a
hash of its specification, so two runs at once may write the same entry safely and a damaged
entry is never trusted. The store keeps at most ``max_bytes``, evicting the entries used least
recently.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._candidates import Candidate
from .files import DamagedFile, NotOwnFile, is_own, read_own, write_own
from .paths import absolute_path
from .settings import FitSettings

__all__ = ["DEFAULT_MAX_BYTES", "ResultStore", "StoreEntry", "default_store_path"]

logger = logging.getLogger(__name__)

ENTRY_KIND = "result"
RUN_KIND = "store-run"
# What a stored fit depends on beyond its specification: bump when the numerics change.
NUMERICS_VERSION = 2
DEFAULT_MAX_BYTES = 10 * 2**30
# A temporary entry file older than this lost its writer (a write takes milliseconds).
STALE_WRITE_SECONDS = 3600.0


def default_store_path() -> Path:
    """``$DGMM_STORE``, else ``$XDG_CACHE_HOME/dgmm/store`` (``~/.cache/dgmm/store``)."""
    given = os.environ.get("DGMM_STORE")
    if given:
        return absolute_path(given, "DGMM_STORE")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return absolute_path(os.path.join(cache, "dgmm", "store"), "the store")


def _versions() -> dict[str, str]:
    """The versions a fit's bits may depend on (dgmm's numerics, numpy's kernels,
    scikit-learn's k-means starts): a store shared by environments never mixes them."""
    import numpy
    import sklearn

    from . import __version__

    return {"dgmm": __version__, "numpy": numpy.__version__, "sklearn": sklearn.__version__}


def spec_hash(spec: dict) -> str:
    """The name of a specification's entry: a hash of its canonical JSON and `_versions`."""
    head = {"numerics": NUMERICS_VERSION, "versions": _versions()}
    text = json.dumps({**head, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StoreEntry:
    """One stored fit, as `ResultStore.entries` lists it."""

    name: str
    stage: str
    data_digest: str
    cell: tuple[str, int]
    restart: int
    origin: str
    nbytes: int
    last_used: float


class ResultStore:
    """Finished fits on disk, keyed by what determines them.

    Parameters
    ----------
    path : path, default=None
        The store's folder; None: `default_store_path` (shared by every run on the machine).
    max_bytes : int, default=DEFAULT_MAX_BYTES
        The most the entries may take; past it the least recently used are removed.
    origin : str, default=None
        What the fits kept from now on say made them (a run's output and config); None: the
        time of the selection.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        origin: str | None = None,
    ):
        self.path = default_store_path() if path is None else absolute_path(path, "store")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive whole number; got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.origin = origin or f"select() at {time.strftime('%Y-%m-%d %H:%M:%S')}"

    def __repr__(self) -> str:
        return f"ResultStore('{self.path}', max_bytes={self.max_bytes})"

    def _entry(self, name: str) -> Path:
        return self.path / "entries" / f"{name}.npz"

    def get(self, spec: dict) -> bytes | None:
        """The payload stored under ``spec``, or None. A damaged entry is removed with one
        warning; a hit is marked used now (for eviction)."""
        path = self._entry(spec_hash(spec))
        if not os.path.lexists(path):
            return None
        try:
            payload = read_own(path, ENTRY_KIND)
        except DamagedFile as e:  # dgmm's own, damaged: never trusted
            logger.warning("store entry ignored and removed: %s", e)
            _remove(path)
            return None
        except (NotOwnFile, OSError) as e:
            if os.path.lexists(path):  # not dgmm's, or unreadable: left as it is
                logger.warning("store entry ignored: %s", e)
            return None  # else removed by another run's eviction meanwhile
        try:
            os.utime(path)
        except OSError:
            pass
        return payload

    def put(self, spec: dict, payload: bytes, origin: str) -> None:
        """Store ``payload`` under ``spec`` (atomically; an equal entry may already be there).
        `prune` keeps the store within ``max_bytes``."""
        meta = {
            "stage": spec.get("stage"),
            "digest": spec.get("data", {}).get("digest"),
            "cell": spec.get("cell"),
            "restart": spec.get("restart"),
            "origin": origin,
        }
        head = json.dumps(meta).encode() + b"\n"
        write_own(self._entry(spec_hash(spec)), ENTRY_KIND, head + payload)

    @staticmethod
    def split(payload: bytes) -> tuple[dict, bytes]:
        """An entry's description and the fit it holds."""
        head, _, body = payload.partition(b"\n")
        return json.loads(head), body

    def entries(self) -> list[StoreEntry]:
        """Every entry, least recently used first (damaged ones skipped)."""
        out = []
        folder = self.path / "entries"
        if not folder.is_dir():
            return out
        for path in folder.glob("*.npz"):
            if not is_own(path, ENTRY_KIND):  # never listed, so never pruned
                continue
            try:
                st = path.stat()
                with open(path, "rb") as f:
                    f.readline(200)
                    meta = json.loads(f.readline(4096))
                out.append(
                    StoreEntry(
                        path.stem,
                        str(meta["stage"]),
                        str(meta["digest"]),
                        tuple(meta["cell"]),
                        int(meta["restart"]),
                        str(meta["origin"]),
                        st.st_size,
                        st.st_mtime,
                    )
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(out, key=lambda e: e.last_used)

    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries())

    def prune(self, max_bytes: int | None = None, older_than: float | None = None) -> list[str]:
        """Remove the least recently used entries until they take at most ``max_bytes`` (the
        store's cap by default), and those unused for ``older_than`` seconds; returns the
        names removed."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        if self._scan() <= cap and older_than is None:
            return []  # under the cap (a sweep's usual case): no entry is opened
        entries = self.entries()
        total = sum(e.nbytes for e in entries)
        now = time.time()
        removed = []
        for e in entries:
            old = older_than is not None and now - e.last_used > older_than
            if (total > cap or old) and _remove(self._entry(e.name)):
                total -= e.nbytes
                removed.append(e.name)
        return removed

    def _scan(self, age: float = STALE_WRITE_SECONDS) -> int:
        """One listing of the entries' folder: removes the temporary files of entries whose
        writer died (`write_own` renames a finished one into place at once: those over ``age``
        seconds old that start as dgmm's entries do), and returns the size of every file named
        as an entry, dgmm's or not (an upper bound on the entries')."""
        total, now = 0, time.time()
        try:
            with os.scandir(self.path / "entries") as listing:
                items = list(listing)
        except OSError:
            return 0
        for item in items:
            try:
                if item.name.endswith(".npz"):  # as `entries` lists them
                    total += item.stat().st_size
                elif fnmatch.fnmatch(item.name, ".*.npz.*.tmp"):
                    old = now - item.stat().st_mtime > age
                    if old and is_own(Path(item.path), ENTRY_KIND):
                        _remove(Path(item.path))
            except OSError:
                continue
        return total

    # -- what the last run on some data asked for (to name what changed)
    def _run_file(self, digest: str) -> Path:
        return self.path / "runs" / f"{digest}.json"

    def last_run(self, digest: str) -> dict | None:
        """The settings and origin of the last run on the data of ``digest``, if any."""
        path = self._run_file(digest)
        try:
            return json.loads(read_own(path, RUN_KIND))
        except (OSError, ValueError):
            return None

    def record_run(self, digest: str, settings: dict, origin: str) -> None:
        text = json.dumps({"settings": settings, "origin": origin, "time": time.time()})
        write_own(self._run_file(digest), RUN_KIND, text.encode())


def _remove(path: Path) -> bool:
    """Remove one of the store's entries; a failure (another user's store folder) is said,
    not raised: it costs space, not the run."""
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        logger.warning("store entry '%s' not removed: %s", path, e)
        return False
    return True


def as_store(store: Any) -> ResultStore | None:
    """`select`'s ``store=``: a `ResultStore`, a folder for one, or None (no store)."""
    if store is None or isinstance(store, ResultStore):
        return store
    if isinstance(store, (str, os.PathLike)):
        return ResultStore(store)
    raise TypeError(f"store must be a ResultStore, a folder or None; got {type(store).__name__}")


# The settings a candidate's fit depends on (besides the data, its cell, its restart and the
# sample): the grid, the criterion and the screening only decide which fits are made.
FIT_SETTINGS = ("init_params", "tol", "reg_covar", "max_iter", "random_state", "retry", "method")


def fit_settings_key(settings: FitSettings) -> dict[str, Any]:
    """The settings every stored fit of a selection is keyed by; ``strategy`` as asked (each
    fit's key holds the one it really ran, `dgmm._reuse.candidate_spec`)."""
    key = settings.key()
    return {
        **{name: key[name] for name in FIT_SETTINGS},
        "prior": key["prior"] if settings.variational else None,
        "strategy": settings.strategy,
    }


def _brief(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _change(key: str, before: Any, now: Any) -> str:
    """A changed setting in words; the sample by its seed and size (None: the default)."""
    if key != "sample" or not (isinstance(before, dict) and isinstance(now, dict)):
        return f"{key} changed {_brief(before)} -> {_brief(now)}"
    if before.get("seed") != now.get("seed"):
        return f"sample seed changed {before.get('seed')} -> {now.get('seed')}"
    size = [_brief(v.get("size") or "default") for v in (before, now)]
    return f"sample size changed {size[0]} -> {size[1]}"


def reuse_report(
    store: ResultStore, base: dict, settings: FitSettings, cands: list[Candidate]
) -> dict[str, Any]:
    """What a selection reused, from which runs, and the fitting settings that changed since
    the last selection on the same data (in words); logged, and recorded as the last run."""
    reused = [c for c in cands if c.reused is not None]
    origins: dict[str, int] = {}
    for c in reused:
        origins[c.reused] = origins.get(c.reused, 0) + 1
    now = {**base["settings"], "sample": base["sample"]}
    digest = base["data"]["digest"]
    last = store.last_run(digest)
    changed = None
    if last is not None and isinstance(last.get("settings"), dict):
        before = last["settings"]
        diffs = [
            _change(k, before.get(k), now.get(k))
            for k in sorted(set(before) | set(now))
            if before.get(k) != now.get(k)
        ]
        changed = "; ".join(diffs) or None
    try:
        store.record_run(digest, now, store.origin)
    except (OSError, NotOwnFile) as e:  # costs the next run's note of what changed, only
        logger.warning("store '%s' not written (%s)", store.path, e)
    fitted = len(cands) - len(reused)
    logger.info(
        "store: %d of %d candidates reused%s; %d fitted",
        len(reused),
        len(cands),
        "" if not origins else " (from " + ", ".join(f"{o}: {n}" for o, n in origins.items()) + ")",
        fitted,
    )
    if changed:
        logger.info("since the last run on this data: %s (%d candidates fitted)", changed, fitted)
    return {
        "store": str(store.path),
        "reused": len(reused),
        "fitted": fitted,
        "origins": origins,
        "changed": changed,
    }
