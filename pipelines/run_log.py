"""``run.log``: every record of dgmm's own, other libraries' from a level up, appended to a
file dgmm owns and never written through a link."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

__all__ = ["OWN_LOGGERS", "LogFile", "file_log"]

# Loggers whose every record run.log keeps; other libraries' from `output.library_log` up.
OWN_LOGGERS = ("dgmm", "pipelines")


@contextlib.contextmanager
def file_log(path: Path, library_level: str = "warning"):
    """``run.log`` at ``path`` receives the records of the block: all of dgmm's, and other
    libraries' from ``library_level`` up."""
    # appended to, never through a link (O_NOFOLLOW): the log is dgmm's own file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    handler = LogFile(os.fdopen(fd, "a", encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_OwnOr(logging.getLevelName(library_level.upper())))
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        with contextlib.suppress(OSError):  # a full disk fails the last flush too
            handler.stream.close()


class _OwnOr(logging.Filter):
    """dgmm's records, and other libraries' from ``level`` up."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".")[0] in OWN_LOGGERS
        return own or record.levelno >= self.level


class LogFile(logging.StreamHandler):
    """run.log: a record that cannot be written (a full disk) is dropped and remembered, not
    reported with a traceback on the terminal for every line."""

    failed: OSError | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if self.failed is None and isinstance(err, OSError):
            self.failed = err
