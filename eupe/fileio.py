"""Atomic file writes that honour the user's umask.

Every file the project writes whole (weights, configs, statistics, programs, model cards) goes
through :func:`atomic_write`: the content is written to a temporary name beside the target, given
the mode a plain ``open(path, "w")`` would give (``0o666 & ~umask``), then renamed over the target,
so a reader never sees half a file and a failure leaves the old file (or none) in place.
The explicit mode matters: ``safetensors.torch.save_file`` and ``tempfile.mkstemp`` create files
``0o600`` whatever the umask, which makes a shared results folder unreadable to colleagues.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

__all__ = ["apply_umask", "atomic_write", "current_umask", "default_file_mode", "write_text_atomic"]


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then put it back at once
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask bits."""
    return 0o666 & ~current_umask()


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, give it the umask's mode,
    then rename it to ``path``. On any error the temporary file is removed and ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), atomically, with the umask's mode."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def apply_umask(root: str | Path) -> None:
    """Give every file under ``root`` (a file or a directory) the umask's file mode, for files a
    library wrote with a fixed private mode (Accelerate's checkpoints through safetensors)."""
    root, mode = Path(root), default_file_mode()
    for path in [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file()):
        os.chmod(path, mode)
