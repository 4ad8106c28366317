"""One view of every path: expanded and made absolute once, where the user named it.

A relative path means the working directory of the process that reads it. Dask workers run in
folders of their own (often on other hosts), so a path that reaches a task must already be
absolute; every entry point (config, command line, library call) passes what it is given
through `absolute_path` before anything else sees it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["absolute_path"]

_VARIABLE = re.compile(r"\$(\w+)|\$\{([^}]*)\}")


def absolute_path(path: str | os.PathLike, what: str = "path") -> Path:
    """``path`` with ``~`` and environment variables expanded, made absolute.

    Symbolic links are kept (the path names what the user named); only the working directory
    of this process is joined to a relative path.

    Parameters
    ----------
    path : str or path-like
        The path as given.
    what : str, default='path'
        What the path is, for the error message.

    Returns
    -------
    pathlib.Path
        An absolute path.

    Raises
    ------
    ValueError
        When the path is empty or names an environment variable that is not set.

    Examples
    --------
    >>> absolute_path("/data/x.zarr")
    PosixPath('/data/x.zarr')
    >>> absolute_path("~/x.zarr") == Path.home() / "x.zarr"
    True
    """
    raw = os.fspath(path)
    if not str(raw).strip():
        raise ValueError(f"{what} is empty; give a file or folder path")
    for m in _VARIABLE.finditer(raw):
        name = m.group(1) or m.group(2)
        if name not in os.environ:
            raise ValueError(
                f"{what} '{raw}' names the environment variable {name}, which is not set; set "
                "it or write the path out"
            )
    return Path(os.path.abspath(os.path.expanduser(os.path.expandvars(raw))))
