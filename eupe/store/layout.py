"""Names, errors and small helpers every part of the feature store shares.

This module is the bottom of ``eupe.store``: ``store.py``, ``teacher_group/``, ``manifest.py``,
``stats.py``, ``verify.py`` and ``extract.py`` import from it and it imports none of them, so the
package has no import circle. Nothing outside ``eupe.store`` needs the file names defined here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

STORE_FORMAT = "eupe-feature-store"
STORE_VERSION = 3  # 2: atomic creation, per-chunk manifests, identity fingerprints; 3: float32 target
#                   arrays through the eupe.features zarr codec (plain zarr reads features)
UPGRADABLE_VERSIONS = (2,)  # older formats `eupe-cache upgrade` converts
PENDING, OK, FAILED = 0, 1, 2
READ_ERROR = "read error"  # failure reasons that `extract --retry-failed` retries (the bytes could not be read)

IMAGE_ROWS_PER_CHUNK = 1 << 16  # images/* arrays: few files even at millions of images
TEACHERS = "teachers"
MANIFEST = "manifest"  # per teacher: [n_chunks, n_arrays, 3] uint64 (bytes, digest, index digest)
CLAIMS_DIR = ".eupe-claims"  # per-rank claims of running extractions (not a zarr node)
STAGING_PREFIX = ".eupe-staging-"  # atomic creation: built under this name, then renamed

DEFAULT_IMAGES_PER_CHUNK = 256  # a new store's chunk: 1.28M images -> 5k chunks, ~4.5e4 files per teacher
MAX_VIEWS_PER_IMAGE = 1024
MAX_RESOLUTION = 4096


class StoreError(ValueError):
    """A user-fixable problem with a feature store; the message says what and how to fix it."""


class StoreMismatchError(StoreError):
    """An existing store does not match what the caller asked for; the message says what differs."""


class StoreIntegrityError(StoreError):
    """Stored data or attributes no longer match what was written (missing, moved or altered)."""


class StoreLookupError(StoreError, KeyError):
    """An image key, view, resolution or teacher that is not in the store; the message says what is."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreWriteError(RuntimeError):
    """Writing to the store failed; the chunk being written was not marked done."""


TARGET_ZSTD_LEVEL = 1  # codec components of new stores: vs level 3, on real paper-sized tokens (T=1024,
#                        D=1536) `compact` decodes 13-15% faster and is 1-5% smaller; `int8` alike


def compressors(level: int = 3) -> list:
    """zstd, then a crc32c checksum of the compressed chunk (a flipped byte fails on read)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=level), Crc32cCodec()]


def canonical(value: Any) -> str:
    """Deterministic JSON text of a value (sorted keys), the input of every fingerprint."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def differences(stored: dict, wanted: dict, where: str) -> list[str]:
    """Human-readable list of keys whose values differ between two identity dicts."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        if canonical(stored.get(key)) != canonical(wanted.get(key)):
            out.append(f"{where}.{key}: store has {_short(stored.get(key))}, requested {_short(wanted.get(key))}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def fsync_paths(paths: list[Path | None]) -> None:
    """Flush written files to disk so a completion record never precedes its data."""
    for path in paths:
        if path is not None and path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def changed_keys(written: dict, now: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (what an edit of attributes changed)."""
    out = []
    for key in sorted(set(written) | set(now)):
        a, b = written.get(key), now.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, path + ".")
        elif canonical(a) != canonical(b):
            out.append(path)
    return out


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_name(name: str) -> str:
    """A hidden sibling name to build ``name`` under before it is renamed into place; it names this
    host and pid, so :func:`remove_stale_staging` can find what a killed creation left."""
    import socket
    import uuid

    return f".{name}{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_staging(final: Path) -> None:
    """Staged copies of ``final`` left by killed creations on this host (their pid is gone)."""
    import shutil
    import socket

    prefix = f".{final.name}{STAGING_PREFIX}{socket.gethostname()}-"
    for path in final.parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def publish_dir(staged: Path, final: Path) -> None:
    """Rename a fully built directory into place (replacing an empty one). If another process won
    the race, ``final`` is a complete zarr node: drop our copy and keep theirs."""
    import shutil

    try:
        staged.rename(final)
    except OSError:
        if not (final / "zarr.json").is_file():
            raise
        shutil.rmtree(staged, ignore_errors=True)  # ours, never published
    fsync_dir(final.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_url(path: str | Path) -> bool:
    return "://" in str(path)


FAILPOINT_ENV = "EUPE_FAILPOINT"


def failpoint(name: str) -> None:
    """Fault injection (bench/faults.py, tests): SIGKILL this process when $EUPE_FAILPOINT == name.

    Named points: store-fingerprint, store-staged, teacher-fingerprint, teacher-staged, block-staged,
    chunk-data, chunk-done, stats-arrays (the *-fingerprint points come before a new store's,
    teacher's or view block's fingerprint is written, the last step of creating it, also on object
    storage; block-staged comes after a view block is built, before it is renamed into place).
    """
    if os.environ.get(FAILPOINT_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
