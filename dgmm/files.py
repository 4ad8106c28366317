"""dgmm's own files: marked as dgmm's, written atomically, never through a link.

A file dgmm writes beside a user's files (a checkpoint, the marker of a working folder) starts
with one line ``dgmm <kind> v1 <digest>`` whose XXH3-128 digest covers the rest. So dgmm can
tell its own file from a user's (never overwritten) and a damaged one of its own (set aside,
never trusted) before it reads or replaces anything.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from pathlib import Path

import xxhash

__all__ = ["DamagedFile", "NotOwnFile", "is_own", "read_own", "set_aside", "write_own"]

_VERSION = "v1"


class NotOwnFile(ValueError):
    """A file where dgmm would write one of its own, which dgmm did not write."""


class DamagedFile(ValueError):
    """A file dgmm wrote whose contents no longer match the digest it was written with."""


def _header(kind: str, payload: bytes) -> bytes:
    return f"dgmm {kind} {_VERSION} {xxhash.xxh3_128_hexdigest(payload)}\n".encode()


def is_own(path: Path, kind: str) -> bool:
    """Whether ``path`` is a regular file (not a link) that starts as dgmm's ``kind`` files do."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    if not _regular(fd):
        os.close(fd)
        return False
    with os.fdopen(fd, "rb") as f:
        return f.readline(200).startswith(f"dgmm {kind} ".encode())


def _regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def read_own(path: Path, kind: str) -> bytes:
    """The payload of dgmm's file ``path`` of this kind, checked against its digest.

    Raises
    ------
    NotOwnFile
        The path is a link, not a regular file, or not a dgmm file of this kind.
    DamagedFile
        It is one, but truncated or changed since it was written.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise NotOwnFile(f"'{path}' cannot be opened as a file ({e.strerror})") from None
    if not _regular(fd):
        os.close(fd)
        raise NotOwnFile(f"'{path}' is not a regular file")
    with os.fdopen(fd, "rb") as f:
        first, payload = f.readline(200), f.read()
    words = first.decode("ascii", "replace").split()
    if len(words) != 4 or words[:2] != ["dgmm", kind]:
        raise NotOwnFile(f"'{path}' is not a dgmm {kind} file")
    if words[2] != _VERSION or first != _header(kind, payload):
        raise DamagedFile(f"'{path}' does not match the digest it was written with")
    return payload


def write_own(path: Path, kind: str, payload: bytes) -> None:
    """Write dgmm's file ``path`` atomically: a new temporary file beside it (created
    exclusively), synced, then renamed over ``path``.

    Anything at ``path`` that is not dgmm's file of this kind (a link included: it is never
    followed) is refused (`NotOwnFile`) and left as it was.
    """
    if os.path.lexists(path) and not is_own(path, kind):
        raise NotOwnFile(
            f"'{path}' exists and is not a dgmm {kind} file; dgmm never overwrites it: give "
            "another path, or remove it yourself"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_header(kind, payload))
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def set_aside(path: Path) -> Path:
    """Rename a damaged file of dgmm's out of the way (``<name>.damaged-<time>``); returns
    the new name. Nothing is deleted."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for i in range(1000):
        new = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{i}" if i else ""))
        if not os.path.lexists(new):
            os.rename(path, new)
            return new
    raise FileExistsError(f"no free name to set '{path}' aside")
