"""The errors the command reports in one line (kept light: the command imports them first)."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line."""


class RunFailed(RuntimeError):
    """A run stopped by an error in the data or the computation; the log has the details."""


def disk_full(e: BaseException | None) -> OSError | None:
    """The 'no space left' (or quota) error among ``e`` and what it was raised from or during."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        e = e.__cause__ or e.__context__
    return None
