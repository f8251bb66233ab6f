"""Normalization statistics of the training targets: the store's, and the ones a run freezes.

Targets are normalized per coordinate (``normalize``: ``(x - mean) / std``) with the statistics of
their own (teacher, resolution). For a stored resolution those are ``eupe-cache stats``' (computed
once by the main process when absent or stale: ``ensure_store_stats``); a resolution the store
lacks gets statistics of the online teacher (``eupe.distill.targets.online_stats``). Either way the
trainer freezes them in the run directory (``stats/{teacher}_r{resolution}.npz``, written as plain
``.npz`` by ``save_run_stats``) when the run starts and reads them back from there on resume
(``freeze_store_stats``, ``frozen_run_stats``), saying so when the store's have changed since.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from eupe.distill.rundir import RunError, frozen_stats_path
from eupe.fileio import atomic_write
from eupe.paths import require_writable
from eupe.store.layout import StoreMismatchError
from eupe.store.stats import compute_stats, load_stats, save_stats
from eupe.store.store import FeatureStore
from eupe.store.teacher_group.group import TeacherGroup

Stats = dict[str, torch.Tensor]  # {"summary_mean", "summary_std", "patch_mean", "patch_std"} float32


def normalize(features: dict[str, torch.Tensor], stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(x - mean) / std per coordinate, with the teacher's frozen statistics."""
    return {kind: (features[kind] - stats[f"{kind}_mean"]) / stats[f"{kind}_std"] for kind in ("summary", "patch")}


def tensor_stats(stats: dict[str, np.ndarray]) -> Stats:
    """Float64 statistics as the float32 tensors targets are normalized with (std floored at 1e-6)."""
    return {k: torch.from_numpy(np.maximum(v, 1e-6) if k.endswith("_std") else v).float() for k, v in stats.items()}


def ensure_store_stats(store: FeatureStore, name: str, say: Callable[[str], None] = print,
                       read_only: bool = False) -> dict[int, Stats]:
    """Compute and save the statistics of every stored resolution that lacks them (or whose are stale);
    with ``read_only`` (several trainers sharing one store) refuse instead of writing. Returns the
    statistics per resolution (what :func:`stored_stats` would read again)."""
    group = store.teacher(name)
    writable: TeacherGroup | None = None
    out = {}
    covers = store.progress(name).digest  # the manifest, read once per opened store
    for resolution in group.resolutions:
        stats = load_stats(group, resolution, covers)
        if stats is None:
            if read_only:
                raise StoreMismatchError(
                    f"normalization statistics of {name} r{resolution} are absent or stale in {store.where} and "
                    f"data.read_only=true forbids writing them: run `eupe-cache stats {store.where}` first")
            require_writable(store.where, f"normalization statistics of {name} r{resolution} are absent or stale, "
                             "and the store", f"run `eupe-cache stats {store.where}` where it is writable first")
            say(f"computing normalization statistics for {name} r{resolution} (absent or stale in the store; "
                "`eupe-cache stats` does this ahead of time)")
            writable = writable or store.writable().teacher(name)  # same store, writable
            moments = compute_stats(writable, resolution)
            save_stats(writable, resolution, moments)
            stats = {f"{kind}_{what}": np.asarray(getattr(m, what), np.float64)
                     for kind, m in moments.items() for what in ("mean", "std")}
        out[resolution] = tensor_stats(stats)
    return out


def stored_stats(store: FeatureStore, name: str) -> dict[int, Stats]:
    """Frozen statistics per stored resolution (``ensure_store_stats`` must have run)."""
    group, out, covers = store.teacher(name), {}, store.progress(name).digest
    for resolution in group.resolutions:
        stats = load_stats(group, resolution, covers)
        if stats is None:
            raise StoreMismatchError(f"normalization statistics of {name} r{resolution} are missing in the store")
        out[resolution] = tensor_stats(stats)
    return out


def teacher_stats(store: str | FeatureStore, name: str, say: Callable[[str], None] = print) -> dict[int, Stats]:
    """Frozen normalization statistics per stored resolution, computed and saved when absent."""
    store = FeatureStore.open(store) if not isinstance(store, FeatureStore) else store
    return ensure_store_stats(store, name, say)


def nearest_stats(stats: dict[int, Stats], resolution: int) -> Stats:
    """Statistics of the stored resolution closest to ``resolution`` (evaluation only; training uses its own)."""
    return stats[min(stats, key=lambda r: abs(r - resolution))]


# -- the run directory's frozen statistics: stats/{teacher}_r{resolution}.npz ---------------------


def save_run_stats(path: Path, stats: dict[str, np.ndarray]) -> None:
    """Write statistics as a plain .npz (no pickles), atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would add ".npz" to a name
            np.savez(handle, **stats)

    atomic_write(path, write)


def load_run_stats(path: Path) -> Stats:
    """Statistics written by :func:`save_run_stats`, as float32 tensors."""
    with np.load(path, allow_pickle=False) as data:
        return tensor_stats({k: np.asarray(data[k]) for k in data.files})


def read_frozen(path: Path) -> Stats:
    """Frozen statistics of a run; a damaged file is a RunError naming it."""
    try:
        return load_run_stats(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise RunError(f"{path} (statistics this run started with) is unreadable ({err}); delete it to freeze "
                       "the store's current statistics in its place (the resumed run then normalizes with those)"
                       ) from None


def warn_changed_stats(frozen: Stats, current: Stats | None, teacher: str, resolution: int,
                       say: Callable[[str], None]) -> None:
    """Say so when the store's statistics of (teacher, resolution) differ from the frozen ones."""
    if current is None:
        return
    differ = [k for k in sorted(frozen) if k in current and not torch.equal(frozen[k], current[k])]
    if differ:
        say(f"warning: the store's normalization statistics of {teacher} r{resolution} differ from the ones this "
            f"run started with ({', '.join(differ)}; recomputed since?): keeping the run's own, frozen ones")


def freeze_store_stats(store: FeatureStore, out: Path, name: str, say: Callable[[str], None],
                       read_only: bool = False) -> None:
    """Freeze every stored resolution's statistics of teacher ``name`` in run directory ``out`` (the main
    process, when the run starts: computed in the store first when absent there); those frozen before
    are kept, with a warning when the store's have changed since."""
    group = store.teacher(name)
    paths = {r: frozen_stats_path(out, name, r) for r in group.resolutions}
    missing = [r for r, path in paths.items() if not path.is_file()]
    if missing:
        stats = ensure_store_stats(store, name, say, read_only=read_only)
        for resolution in missing:
            save_run_stats(paths[resolution], {k: v.numpy() for k, v in stats[resolution].items()})
    covers = store.progress(name).digest
    for resolution in sorted(set(paths) - set(missing)):  # frozen before: the store's may have changed since
        current = load_stats(group, resolution, covers)
        warn_changed_stats(read_frozen(paths[resolution]), None if current is None else tensor_stats(current),
                           name, resolution, say)


def frozen_run_stats(store: FeatureStore, out: Path, teachers: Sequence[str]) -> dict[str, dict[int, Stats]]:
    """teacher -> stored resolution -> the statistics frozen in run directory ``out``."""
    return {name: {r: read_frozen(frozen_stats_path(out, name, r)) for r in store.teacher(name).resolutions}
            for name in teachers}
