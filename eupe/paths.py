"""Operating-system problems on a user's paths (read-only media, permissions, full disks, a FIFO
where a file belongs) as user errors: one sentence naming the path and the fix.

:func:`require_writable` refuses early, before any work, a directory that cannot be written
(``os.access`` honours read-only mounts, permissions and immutable directories);
:func:`os_error_message` words any ``OSError`` whose errno means "fix your path", which
``eupe.cli_support`` prints as one ``Error:`` line with exit status 2.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["USER_ERRNOS", "PathError", "is_user_os_error", "os_error_message", "require_writable"]

_NOT_WRITABLE = "write it somewhere writable (another location, or fix the permissions)"
_NO_SPACE = "free space there or choose another location, then re-run the same command (finished work is kept)"
# errno -> the fix; an OSError with one of these is about the user's path, not a bug
USER_ERRNOS: dict[int, str] = {
    errno.EROFS: _NOT_WRITABLE, errno.EACCES: _NOT_WRITABLE, errno.EPERM: _NOT_WRITABLE,
    errno.ENOSPC: _NO_SPACE, errno.EDQUOT: _NO_SPACE,
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EISDIR: "it is a directory where a file is expected: name the file",
    errno.ENXIO: "it is a FIFO or device, not a regular file: pass a regular file",
    errno.ELOOP: "it is a loop of symbolic links: fix the links or pass the real path",
    errno.ENAMETOOLONG: "choose a shorter path",
}


class PathError(Exception):
    """A user's path cannot be used as asked (not writable, not a regular file...); says how to fix it."""


def is_user_os_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in USER_ERRNOS


def os_error_message(err: OSError) -> str:
    """``<strerror>: <path>; <fix>`` for an OSError on a user's path."""
    where = f": {err.filename}" if err.filename is not None else ""
    if err.filename2 is not None:
        where += f" -> {err.filename2}"
    return f"{err.strerror or err}{where}; {USER_ERRNOS.get(err.errno, 'check the path')}"


def _reason(directory: Path) -> str:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"


def require_writable(path: str | Path, what: str, fix: str) -> None:
    """Refuse ``path`` (or, while it does not exist yet, its nearest existing parent directory) when
    this process cannot create files in it. URLs are left to their filesystem."""
    if "://" in str(path):
        return
    target = Path(os.path.abspath(os.path.expanduser(path)))
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():
        return  # a file where a directory belongs: the caller's own check names it
    if not os.access(target, os.W_OK | os.X_OK):
        where = "" if target == Path(os.path.abspath(path)) else f" (in {target})"
        raise PathError(f"{what} {path} cannot be written{where}: {_reason(target)}; {fix}")
