"""Rank claims: which extraction processes are running on a teacher group, and with what world size.

A rank that starts extracting a teacher writes ``claims/rank-<r>.json`` in the teacher group with
exclusive creation, holding its host, pid, world size and a heartbeat refreshed after every chunk.
A second process with the same rank, or a rank whose ``--world-size`` differs from a running one,
is refused: either would leave chunks that no rank owns. A claim whose process is gone (same host,
dead pid) or whose heartbeat is older than ``stale_after_s`` is taken over, so a killed run resumes.
Claims exist for local stores; on object stores they are skipped (no exclusive create).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from eupe.store.layout import StoreMismatchError, pid_alive

STALE_AFTER_S = 900.0


@dataclass
class Claim:
    """This process's claim on one rank of a teacher's extraction."""

    path: Path
    rank: int
    world_size: int

    def heartbeat(self) -> None:
        os.utime(self.path)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _describe(info: dict) -> str:
    age = time.time() - info.get("heartbeat", 0)
    return f"pid {info.get('pid')} on {info.get('host')}, last active {age:.0f} s ago"


def _live(path: Path, stale_after_s: float) -> dict | None:
    """The claim's content when its process may still run, else None."""
    try:
        info = json.loads(path.read_text())
        info["heartbeat"] = path.stat().st_mtime
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if time.time() - info["heartbeat"] > stale_after_s:
        return None
    if info.get("host") == socket.gethostname() and not pid_alive(int(info["pid"])):
        return None
    return info


def claim_rank(directory: Path | None, rank: int, world_size: int, stale_after_s: float = STALE_AFTER_S) -> Claim | None:
    """Claim ``rank`` in ``directory`` (None for remote stores: no claim) or refuse with the reason."""
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    for other in sorted(directory.glob("rank-*.json")):
        info = _live(other, stale_after_s)
        if info is None or int(info.get("rank", -1)) == rank:
            continue
        if int(info["world_size"]) != world_size:
            raise StoreMismatchError(
                f"rank {info['rank']} of this teacher is running with --world-size {info['world_size']} "
                f"({_describe(info)}), this process has --world-size {world_size}; all ranks must use the same")
    path = directory / f"rank-{rank}.json"
    if path.exists() and _live(path, stale_after_s) is None:
        path.unlink(missing_ok=True)  # left by a process that is gone: take it over
    record = {"rank": rank, "world_size": world_size, "host": socket.gethostname(), "pid": os.getpid(),
              "started": time.time()}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        info = _live(path, stale_after_s) or {"pid": "?", "host": "?", "heartbeat": time.time()}
        raise StoreMismatchError(
            f"rank {rank} is already extracting this teacher ({_describe(info)}); give each process its own "
            f"--rank, or if that process is gone delete {path}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(record))
    return Claim(path, rank, world_size)
