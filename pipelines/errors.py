"""The errors the command reports in one line (kept light: the command imports them first)."""


class RunFailed(RuntimeError):
    """A run stopped by an error in the data or the computation; the log has the details."""
