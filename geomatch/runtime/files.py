"""Files that appear whole or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_file"]


@contextlib.contextmanager
def atomic_file(path, mode: str = "w", **open_kwargs):
    """Open a temporary file next to ``path`` for writing; on success it is
    given the usual permissions (0666 minus the umask) and renamed to
    ``path``, on an exception it is removed and ``path`` is left as it was.

    >>> with atomic_file("out.json") as f:     # doctest: +SKIP
    ...     f.write("{}")
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=d)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
