"""Files that appear whole or not at all."""
from __future__ import annotations

import contextlib
import errno
import os
import secrets

__all__ = ["atomic_file", "create_temp", "TMP_PREFIX"]

#: Prefix of temporary files (readers of a folder skip names starting with ".").
TMP_PREFIX = ".tmp-"


def create_temp(folder, suffix: str = ""):
    """Create a new, empty temporary file in ``folder``: ``(fd, path)``.

    Opened with mode 0666, so the kernel applies the process umask (and any
    default ACL), as for every other file the program writes; unlike
    :func:`tempfile.mkstemp` (always 0600) and without changing the
    process-wide umask, which would race with other threads.
    """
    folder = os.fspath(folder)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", folder)


@contextlib.contextmanager
def atomic_file(path, mode: str = "w", **open_kwargs):
    """Open a temporary file next to ``path`` for writing (created with the
    usual permissions, 0666 minus the umask); on success it is renamed to
    ``path``, on an exception it is removed and ``path`` is left as it was.

    >>> with atomic_file("out.json") as f:     # doctest: +SKIP
    ...     f.write("{}")
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = create_temp(d, os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
