"""Progress of long commands that reads well both on a terminal and in a log file.

``progress(...)`` is the one progress helper of every command (extract, verify, stats, export,
eval, train). On a terminal it is a live tqdm bar. When stderr is not a terminal (a cluster job's
log, ``2> file``) it writes one plain line every ``EUPE_PROGRESS_INTERVAL`` seconds (default 30)
and a last one when done -- ``desc: done/total unit (pct%), rate, elapsed, ETA, postfix`` -- and
never a carriage return. ``TQDM_DISABLE=1`` (tqdm's own variable) and the commands' ``--quiet``
(:func:`set_quiet`) turn both off. This module imports tqdm only when a bar is drawn.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

INTERVAL_ENV = "EUPE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0
_TRUE = ("1", "true", "yes", "on")
_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """No progress output from this process (``--quiet``); results and errors still print."""
    global _quiet
    _quiet = quiet


def interval_s() -> float:
    """Seconds between plain progress lines (``EUPE_PROGRESS_INTERVAL``; a bad value is the default)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S


def silenced() -> bool:
    """True under ``--quiet`` or ``TQDM_DISABLE``."""
    return _quiet or os.environ.get("TQDM_DISABLE", "").strip().lower() in _TRUE


def progress(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
             disable: bool = False, file: IO[str] | None = None) -> Any:
    """A tqdm-like bar (``update``, ``set_postfix``, ``reset``, ``total``, ``close``, context manager).

    ``disable`` (e.g. a rank other than 0) and :func:`silenced` give a bar that prints nothing.
    """
    stream = sys.stderr if file is None else file
    if disable or silenced():
        return LineProgress(total, desc, unit, initial, stream, enabled=False)
    if _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream, disable=False)
    return LineProgress(total, desc, unit, initial, stream)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """Plain progress lines, one per interval and one at the end; the tqdm subset the commands use."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int, file: IO[str],
                 enabled: bool = True) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.file, self.enabled, self.interval = file, enabled, interval_s()
        self.postfix = ""
        self.start_n, self.start_t = initial, time.monotonic()
        self.last_t, self.last_n = self.start_t, None  # no line written yet

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and time.monotonic() - self.last_t >= self.interval:
            self._write()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def reset(self, total: int | None = None) -> None:
        self.n = self.start_n = 0
        self.total = total
        self.start_t = self.last_t = time.monotonic()

    def close(self) -> None:
        """The last line, unless it would repeat the previous one or nothing was done."""
        if self.enabled and self.last_n != self.n and self.n != self.start_n:
            self._write()
        self.enabled = False

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is not None:  # the error is the last word, not a progress line
            self.enabled = False
        self.close()

    def line(self) -> str:
        """``desc: 120/400 step (30%), 3.21 step/s, elapsed 0:37, ETA 1:27, loss=0.1``."""
        from tqdm import tqdm

        elapsed = time.monotonic() - self.start_t
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)" if self.total else \
            f"{self.n} {self.unit}"
        parts = [done, f"{rate:.3g} {self.unit}/s", f"elapsed {tqdm.format_interval(elapsed)}"]
        if self.total and rate > 0:
            parts.append(f"ETA {tqdm.format_interval(max(self.total - self.n, 0) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " * bool(self.desc) + ", ".join(parts)

    def _write(self) -> None:
        self.file.write(self.line() + "\n")
        self.file.flush()
        self.last_t, self.last_n = time.monotonic(), self.n
