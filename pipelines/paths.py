"""Output safety: what a command may write, replace or delete, and one writer per output.

Three rules, checked before anything is created:

* no path a command writes, replaces or deletes overlaps a path it reads (equal, inside or
  containing, after resolving symbolic links);
* an existing output is replaced only with permission, and only if it is an output of the same
  kind (a complete dgmm output group, or data made by ``dgmm make-data``): a folder of
  something else, a file, the working directory or one of its parents is never replaced;
* one output has one writer: a lock taken for the whole command refuses a second one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from .schema import ConfigError

# The attribute that marks a Zarr group written by dgmm, and its kinds.
OUTPUT_KIND_ATTR = "dgmm_output"
# A run's output folder is marked by this file; its Zarr group of per-row results is a part of
# it (kind ASSIGNMENTS_KIND), never an output to replace on its own.
MARKER = "dgmm.json"
ASSIGNMENTS_KIND = "run-assignments"


def resolve(path: str | os.PathLike) -> Path:
    """The absolute path with every symbolic link of its existing part resolved."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _overlap(a: Path, b: Path) -> str | None:
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def check_no_overlap(
    writes: Mapping[str, str | os.PathLike | None], reads: Mapping[str, str | os.PathLike | None]
) -> None:
    """Refuse when a path the command writes overlaps a path it reads.

    Parameters
    ----------
    writes, reads : mapping of a name for the message to a path (None entries are skipped)

    Raises
    ------
    ConfigError
        Naming both paths and how they overlap.
    """
    for wname, w in writes.items():
        if w is None:
            continue
        wp = resolve(w)
        for rname, r in reads.items():
            if r is None:
                continue
            how = _overlap(wp, resolve(r))
            if how is not None:
                raise ConfigError(
                    f"{wname} '{w}' {how} {rname} '{r}'; a command never writes over its own "
                    "input: choose an output path outside every input"
                )


def zarr_store_root(path: str | os.PathLike) -> Path:
    """The outermost Zarr group that holds ``path`` (``path`` itself if none does).

    An array read from inside a group makes the whole store an input: writing a sibling into
    the group changes what the input holds.
    """
    p = resolve(path)
    root = p
    for parent in p.parents:
        if not (parent / "zarr.json").is_file() and not (parent / ".zgroup").is_file():
            break
        root = parent
    return root


def _zarr_attrs(path: Path) -> dict | None:
    meta = path / "zarr.json"
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc.get("attributes", {}) if isinstance(doc, dict) else None


def output_kind(path: Path) -> str | None:
    """What dgmm wrote at ``path``: 'run', 'predict' or 'make-data', else None.

    A run output is a folder with the marker file; Zarr outputs carry the kind in their
    attributes. Outputs written before either existed are recognised by their attributes.
    """
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        marker = None
    if isinstance(marker, dict) and marker.get("complete") is True:
        return str(marker.get(OUTPUT_KIND_ATTR))
    attrs = _zarr_attrs(path)
    if attrs is None:
        return None
    if attrs.get(OUTPUT_KIND_ATTR):
        return str(attrs[OUTPUT_KIND_ATTR])
    if attrs.get("generator") == "dgmm make-data":
        return "make-data"
    if attrs.get("complete") is True and "config_hash" in attrs:
        return "run"
    if attrs.get("complete") is True and {"model", "data"} <= set(attrs):
        return "predict"
    return None


def check_output_name(path: str | os.PathLike) -> None:
    """Refuse an output path that names no new folder: empty, '.', '..', the working directory
    or one of its parents."""
    raw = str(path)
    p = Path(raw)
    if raw.strip() == "" or p.name in ("", ".", "..") or raw.endswith(("/.", "/..")):
        raise ConfigError(
            f"output path '{raw}' does not name a folder to create; give a new folder, e.g. "
            "'results/run1'"
        )
    full = resolve(p)
    cwd = resolve(Path.cwd())
    if full == cwd or full in cwd.parents:
        raise ConfigError(
            f"output path '{raw}' is the working directory or one of its parents; give a new "
            "folder inside it, e.g. 'results/run1'"
        )


def check_output_path(
    path: str | os.PathLike,
    overwrite: bool,
    kinds: tuple[str, ...],
    setting: str = "output.overwrite: true (or --set output.overwrite=true)",
    other: str = "output.path",
) -> None:
    """Refuse an output path that cannot be written, or that holds something not to replace.

    Parameters
    ----------
    path : path-like
        The output to create or replace.
    overwrite : bool
        Whether replacing an existing output was asked for.
    kinds : tuple of str
        The output kinds (see `output_kind`) that may be replaced.
    setting, other : str
        How the user asks for overwriting, and the setting that names the path, for messages.
    """
    check_output_name(path)
    raw = str(path)
    p, full = Path(raw), resolve(raw)
    if p.is_symlink() or full.exists() or p.exists():
        _check_replaceable(raw, full, overwrite, kinds, setting, other)
    _check_parent_writable(raw, full)


def _check_replaceable(
    raw: str, full: Path, overwrite: bool, kinds: tuple[str, ...], setting: str, other: str
) -> None:
    if not full.is_dir():
        raise ConfigError(
            f"output path '{raw}' exists and is not a folder; it is never replaced: remove it "
            "yourself or choose another path"
        )
    kind = output_kind(full)
    empty = not any(full.iterdir())
    if kind not in kinds and not empty:
        raise ConfigError(
            f"output path '{raw}' exists and is not a dgmm {' or '.join(kinds)} output; it is "
            "never replaced: choose another path"
        )
    if not overwrite and not empty:
        raise ConfigError(
            f"output '{raw}' already exists; set {setting} to replace it, or choose another {other}"
        )


def _check_parent_writable(raw: str, full: Path) -> None:
    parent = full.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link: nothing can be created through it
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(
            f"output path '{raw}': '{parent}' is not a folder, so nothing can be created in it"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output path '{raw}': the folder '{parent}' is not writable; choose a path you "
            "can write to"
        )


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of an output: hidden, beside it."""
    p = Path(output)
    return p.with_name(f".{p.name}.lock")


@contextlib.contextmanager
def claim(output: str | os.PathLike) -> Iterator[None]:
    """Hold the one-writer lock of ``output`` for the duration of a command.

    The lock is an ``flock`` on a hidden file beside the output, so it is released by the
    operating system when the process dies; a second command for the same output is refused
    while the first runs. The file is removed on exit while still locked; a command that
    opened the removed file sees that and takes the lock anew.
    """
    path = lock_path(resolve(output))
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = _read_holder(path)
            raise ConfigError(
                f"output '{output}' is being written by another dgmm command{holder}; wait for "
                f"it to finish (lock file {path})"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by its last holder: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
