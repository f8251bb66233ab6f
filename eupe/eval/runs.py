"""What a training run directory offers evaluation: its adapter heads, teachers and frozen statistics.

A Stage-2/3 run directory (``eupe-train`` output) holds ``student.safetensors``, the adapter
heads, the resolved ``config.yaml`` (teachers with their weights, the feature store) and, for
teacher resolutions the store lacks, ``stats/{teacher}_r{resolution}.npz``. Zero-shot maps the
``pecore_g`` head back to CLIP space with those statistics (``head * std + mean``); agreement
compares every head with its teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from eupe.config import RESOLVED_CONFIG_NAME
from eupe.distill.heads import HEADS_FILENAME

STATS_DIR = "stats"


def is_run_dir(path: str | Path) -> bool:
    """True for a training run directory (a resolved config next to the weights)."""
    path = Path(path)
    return path.is_dir() and (path / RESOLVED_CONFIG_NAME).is_file()


def has_heads(path: str | Path) -> bool:
    return is_run_dir(path) and (Path(path) / HEADS_FILENAME).is_file()


def run_config(path: str | Path) -> dict[str, Any]:
    """The run's resolved config as plain values."""
    return yaml.safe_load((Path(path) / RESOLVED_CONFIG_NAME).read_text()) or {}


def run_teachers(path: str | Path) -> dict[str, str | None]:
    """``{teacher: weights or None}`` the run trained against."""
    return {t["name"]: t.get("weights") for t in run_config(path).get("teachers", [])}


def head_stats(path: str | Path, teacher: str) -> dict:
    """``{resolution: Stats}`` for ``teacher``: the run's store, updated with the run's own ``stats/`` files.

    Raises FileNotFoundError naming both places when neither has any.
    """
    from eupe.distill.stats import load_run_stats, stored_stats
    from eupe.store.store import FeatureStore

    path = Path(path)
    store = run_config(path).get("data", {}).get("store", "")
    found = stored_stats(FeatureStore.open(store), teacher) if store and Path(store).exists() else {}
    for file in sorted((path / STATS_DIR).glob(f"{teacher}_r*.npz")):
        found[int(file.stem.rsplit("_r", 1)[1])] = load_run_stats(file)
    if not found:
        raise FileNotFoundError(f"{path}: no {STATS_DIR}/{teacher}_r*.npz and its store {store!r} is not here "
                                f"(the {teacher} head's outputs are normalized; its statistics are needed)")
    return found
