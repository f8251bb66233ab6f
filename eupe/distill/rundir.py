"""The files of a training run directory: written atomically, read tolerantly, checked on resume.

A run directory is the run's only memory between invocations, so nothing in it may be trusted
blindly nor left half-written:

- ``run.json`` (the run's record) holds the resolved config the run started with, the identity
  of its feature store (fingerprint and teachers' weights hashes, not its path), the views per image
  it draws from, and every resume that changed a key allowed to change (``RESUMABLE_KEYS``). A
  re-run whose config or store differs otherwise is refused with the differences, before anything
  is written (``config.yaml`` is then left as it was); allowed changes are recorded and
  ``config.yaml`` then holds the config in force.
- ``stats/{teacher}_r{resolution}.npz``: the normalization statistics the run started with, for
  every teacher resolution (stored or online-only), frozen: a resume uses these even when the store's
  have been recomputed since (another ``--seed``, ``--full``...), and says so.
- ``checkpoints/step_*`` are saved under a temporary name and renamed once complete, with a
  ``step.json`` naming the size and sha256 of each file (``checkpoint_problem`` checks them on resume).
- Every other file is written to a temporary name and renamed (``write_atomic``), except
  ``losses.jsonl``, appended a line per step and read tolerantly (a torn line is dropped on resume);
  JSON files that are empty or torn read as absent (``read_json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eupe.fileio import atomic_write

RUN_RECORD = "run.json"
# keys a resume may change (recorded in run.json): the schedule's length, logging and checkpoint
# cadence, the trackers logged to, data loading, and where the store and shards are (their identity
# is checked by content)
RESUMABLE_KEYS = frozenset({"iterations", "max_steps", "log_every", "checkpoint_every", "keep_checkpoints",
                            "trackers", "tracking_project", "mlflow_uri", "out", "data.num_workers", "data.read_only", "data.allow_incomplete",
                            "data.check_keys", "data.store", "data.shards"})


class RunError(Exception):
    """A run directory cannot be used as it is (damaged file, mismatched resume, diverged run)."""


class NonFiniteLossError(RunError):
    """A loss term became NaN or infinite; training stopped before the step's checkpoint."""


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` durably (flushed to disk) and atomically over ``path``, with the umask's mode."""
    payload = data.encode() if isinstance(data, str) else data

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None when it is absent, empty, torn or not an object."""
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim.lr": 1e-3, "teachers.0.name": "proxy", ...}: nested mappings and lists of mappings as
    dotted keys (the override syntax); other lists are kept whole."""
    out = {}
    for key, value in config.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = {str(i): v for i, v in enumerate(value)}
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resumable(key: str) -> bool:
    """A key a resume may change: ``RESUMABLE_KEYS``, or where a teacher's weights lie (their hash is the
    store's identity, compared separately)."""
    parts = key.split(".")
    return key in RESUMABLE_KEYS or (len(parts) == 3 and parts[0] == "teachers" and parts[2] == "weights")


def config_changes(recorded: dict, now: dict, defaults: dict | None = None) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (recorded value, value now)} of every key that differs. A key the record lacks (added
    to the schema after the run started) is no change while it has its default value (``defaults``)."""
    old, new, default = flatten(recorded), flatten(now), flatten(defaults or {})
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
            and not (k not in old and k in default and new.get(k) == default[k])}


def store_changes(recorded: dict, now: dict) -> list[str]:
    """Sentences naming how the store's identity differs from the one the run started with."""
    problems = []
    if recorded.get("fingerprint") != now.get("fingerprint"):
        problems.append(f"the feature store is another one (identity {str(recorded.get('fingerprint'))[:16]}... "
                        f"when the run started, {str(now.get('fingerprint'))[:16]}... now)")
    for name in sorted(set(recorded.get("teachers", {})) | set(now.get("teachers", {}))):
        old, new = recorded.get("teachers", {}).get(name), now.get("teachers", {}).get(name)
        if old != new:
            problems.append(f"teacher {name!r}: weights {str(old)[:16]}... when the run started, "
                            f"{str(new)[:16]}... now")
    return problems


def check_resume(out: Path, record: dict, config: dict, store: dict,
                 defaults: dict | None = None) -> dict[str, tuple[Any, Any]]:
    """Compare this invocation with the run's record: refuse (RunError listing every difference) when
    the config differs outside ``RESUMABLE_KEYS`` or the store is another one; return the allowed changes."""
    changes = config_changes(record["config"], config, defaults)
    refused = [f"{key}: {old!r} when the run started, {new!r} now" for key, (old, new) in changes.items()
               if not resumable(key)]
    refused += store_changes(record["store"], store) if record.get("store") else []
    if refused:
        raise RunError(f"{out} holds a run started with another config or store; resuming it would mix them: "
                       + "; ".join(refused) + f". Re-run with the run's values (see {out / RUN_RECORD}) or choose a "
                       "new out=")
    return {k: v for k, v in changes.items() if resumable(k)}


def record_resume(path: Path, record: dict, step: int, changes: dict[str, tuple[Any, Any]], date: str) -> dict:
    """Append the allowed changes of this resume to the record (written atomically); returns it."""
    if not changes:
        return record
    entry = {"step": step, "date": date, "changed": {k: {"from": old, "to": new} for k, (old, new) in changes.items()}}
    record = {**record, "resumes": [*record.get("resumes", []), entry]}
    write_json(path, record)
    return record


def frozen_stats_path(out: Path, teacher: str, resolution: int) -> Path:
    return out / "stats" / f"{teacher}_r{resolution}.npz"


def store_identity(store: Any, teachers: list[str]) -> dict:
    """What makes a feature store the same one wherever it lies: its fingerprint and its teachers' weights."""
    return {"fingerprint": store.fingerprint,
            "teachers": {name: store.teacher(name).attrs["weights_sha256"] for name in teachers}}


def previous_record(out: Path, has_checkpoint: bool) -> dict | None:
    """The run's record; for a run written before ``run.json`` existed (or whose record is unreadable),
    its ``config.yaml`` when it has a checkpoint to resume (the store is then not compared)."""
    record = read_json(out / RUN_RECORD)
    if record is not None and isinstance(record.get("config"), dict):
        return record
    config = out / "config.yaml"
    if not has_checkpoint or not config.is_file():
        return None
    import yaml

    try:
        values = yaml.safe_load(config.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        values = None
    if not isinstance(values, dict):
        raise RunError(f"{out} has checkpoints but neither its {RUN_RECORD} nor its config.yaml is readable, so "
                       "nothing says what the run was started with; choose a new out= (or restore config.yaml)")
    return {"config": values, "store": {}, "legacy": True}


def views_record(out: Path, views_file: str) -> int | None:
    """The stored views per image the run started with: from ``views_file``, else from the run's record."""
    for path in (out / views_file, out / RUN_RECORD):
        value = (read_json(path) or {}).get("views_per_image")
        if isinstance(value, int) and value > 0:
            return value
    return None


# -- checkpoints: written under a temporary name, complete with a record of their files ----------

STEP_RECORD = "step.json"  # written last in a checkpoint: its step and the size and sha256 of every file


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(directory: Path) -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} of every file under ``directory``."""
    return {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != STEP_RECORD}


def checkpoint_problem(directory: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (None when its files are all as written). Checkpoints
    written before files were recorded are checked when loaded instead."""
    record = read_json(directory / STEP_RECORD)
    if record is None or not isinstance(record.get("step"), int):
        return f"its {STEP_RECORD} is missing or unreadable (not written completely)"
    for name, expected in record.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['bytes']} were written (truncated?)"
        if _sha256(path) != expected["sha256"]:
            return f"{name} differs from what was written (sha256)"
    return None


def enospc_hint(err: OSError) -> str:
    import errno

    return "free some space, then " if err.errno == errno.ENOSPC else "fix that, then "
