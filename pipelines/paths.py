"""Output safety: what a command may write, replace or delete, and one writer per output.

Four rules, checked before anything is created:

* no path a command writes, replaces or deletes overlaps a path it reads (equal, inside or
  containing, after resolving symbolic links);
* an existing output is replaced only with permission, and only if it is an output of the same
  kind (a complete dgmm output group, or data made by ``dgmm make-data``): a folder of
  something else, a file, the working directory or one of its parents is never replaced;
* one output has one writer: a lock taken for the whole command refuses a second one;
* dgmm owns only what it created: a companion folder beside an output (a run's ``.work``, the
  ``.partial`` of predict and make-data) holds a marker naming its output, the lock file names
  itself dgmm's, and anything else found under those names is refused, never deleted or
  written through.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from dgmm.files import DamagedFile, NotOwnFile, read_own, write_own

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
    writes: Mapping[str, str | os.PathLike | None],
    reads: Mapping[str, str | os.PathLike | None],
    hint: str = "a command never writes over its own input: choose an output path outside "
    "every input",
) -> None:
    """Refuse when a path the command writes overlaps a path it reads.

    Parameters
    ----------
    writes, reads : mapping of a name for the message to a path (None entries are skipped)
    hint : str
        What to do, ending the message.

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
                raise ConfigError(f"{wname} '{w}' {how} {rname} '{r}'; {hint}")


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


_LOCK_TAG = b"dgmm lock"


def _open_lock(path: Path, output: str | os.PathLike) -> int:
    """Open the lock file without following a link, and only if it is a regular file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        what = "a symbolic link" if path.is_symlink() else f"not a file ({e.strerror})"
        raise ConfigError(
            f"the lock file '{path}' of output '{output}' is {what}; dgmm writes its lock only "
            "as a file of its own: remove it"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(
            f"the lock file '{path}' of output '{output}' is not a regular file; remove it"
        )
    return fd


@contextlib.contextmanager
def claim(output: str | os.PathLike) -> Iterator[None]:
    """Hold the one-writer lock of ``output`` for the duration of a command.

    The lock is an ``flock`` on a hidden file beside the output, so it is released by the
    operating system when the process dies; a second command for the same output is refused
    while the first runs. The file is removed on exit while still locked; a command that
    opened the removed file sees that and takes the lock anew. A file of that name that dgmm
    did not write (or a link) is refused and left as it is.
    """
    path = lock_path(resolve(output))
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = _open_lock(path, output)
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
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by its last holder: lock the new one
    held = os.read(fd, 4096)
    if held and not held.startswith(_LOCK_TAG):  # empty: created just now, or by a crash
        os.close(fd)
        raise ConfigError(
            f"'{path}' (the lock file of output '{output}') exists and was not written by "
            "dgmm; it is never overwritten: remove it, or choose another output path"
        )
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _LOCK_TAG + f" of {output}\npid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            text = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""
    pid = text.rsplit("pid ", 1)[-1].strip() if text.startswith("dgmm lock") else ""
    return f" (pid {pid})" if pid.isdigit() else ""


# The marker file of a companion folder: dgmm's own file (`dgmm.files`) naming the output.
OWNER_FILE = ".dgmm-owner"
_OWNER_KIND = "companion"


def _owner_of(folder: Path) -> dict | None:
    try:
        doc = json.loads(read_own(folder / OWNER_FILE, _OWNER_KIND))
    except (NotOwnFile, DamagedFile, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def check_companion(folder: Path, output: str | os.PathLike, role: str) -> bool:
    """Whether ``folder`` exists as dgmm's ``role`` folder of ``output``; refuse anything else.

    Raises
    ------
    ConfigError
        When something that dgmm did not create for this output is there (a file, a link, a
        user's folder, another output's companion), or dgmm's folder is on another file
        system than the output's folder (publishing could not rename it into place).
    """
    if not os.path.lexists(folder):
        return False
    owner = None if folder.is_symlink() or not folder.is_dir() else _owner_of(folder)
    if owner != {"role": role, "output": str(output)}:
        raise ConfigError(
            f"'{folder}' exists and was not made by dgmm as the {role} folder of '{output}'; "
            "dgmm never deletes what it did not create: move it away, or choose another "
            "output path"
        )
    if os.stat(folder).st_dev != os.stat(folder.parent).st_dev:
        raise ConfigError(
            f"'{folder}' is on another file system than '{folder.parent}'; the {role} folder "
            "must be beside the output on the same one: remove the mount or choose another path"
        )
    return True


def claim_companion(folder: Path, output: str | os.PathLike, role: str, fresh: bool) -> None:
    """Make ``folder`` dgmm's ``role`` folder of ``output``: reuse it if it already is (or, with
    ``fresh``, remove and recreate it), else create it exclusively with its marker."""
    if check_companion(folder, output, role):
        if not fresh:
            return
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.mkdir(folder)  # exclusive: a folder that appeared meanwhile is not taken over
    body = json.dumps({"role": role, "output": str(output)}).encode()
    try:
        write_own(folder / OWNER_FILE, _OWNER_KIND, body)
    except BaseException:  # a full disk, a signal: leave no folder that looks like a user's
        shutil.rmtree(folder, ignore_errors=True)
        raise


def remove_companion(folder: Path, output: str | os.PathLike, role: str) -> None:
    """Delete dgmm's ``role`` folder of ``output`` (only if it is that)."""
    if check_companion(folder, output, role):
        shutil.rmtree(folder)


def check_no_links(folder: Path, names: tuple[str, ...]) -> None:
    """Refuse symbolic links at the names dgmm writes inside its own folder: a log or report
    written there must never go through a link into someone else's file."""
    for name in names:
        if (folder / name).is_symlink():
            raise ConfigError(
                f"'{folder / name}' is a symbolic link; dgmm never writes through links: remove it"
            )
