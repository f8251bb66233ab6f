"""Targets behind one interface: cached in the store, or computed online by the teacher.

The trainer checks that the store matches its config and dataset (teachers, weights
fingerprints, view policy, image keys) and refuses it naming every difference, and refuses an
incomplete store unless ``data.allow_incomplete``. Targets are normalized with frozen
per-coordinate statistics of their own (teacher, resolution): for a stored resolution those of
``eupe-cache stats`` (computed once by the main process when absent or stale); for a resolution the
store lacks, statistics of the online teacher over the first micro-batches of the run. Either way
the trainer freezes them in the run directory (``stats/{teacher}_r{resolution}.npz``) when the run
starts and reloads them on resume (eupe.distill.rundir). When a
(view, resolution) is not in the store, the data loader hands the rendered teacher input to
``OnlineTeacher``, which returns targets normalized the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from eupe.config import ConfigError
from eupe.data.shards import expand_shards
from eupe.distill.config import TrainConfig
from eupe.distill.data import DistillDataset, normalize
from eupe.fileio import atomic_write
from eupe.models import Encoder, create_teacher, teacher_weights_path
from eupe.models.weights import file_sha256
from eupe.paths import require_writable
from eupe.store import (FeatureStore, RunningMoments, StoreMismatchError, TeacherGroup, compute_stats, load_stats,
                        save_stats)
from eupe.views import ViewPolicy

Stats = dict[str, torch.Tensor]


def store_problems(cfg: TrainConfig, store: FeatureStore) -> list[str]:
    """Every way the store differs from what the config and dataset expect."""
    problems = []
    present = store.teacher_names()
    for teacher in cfg.teachers:
        if teacher.name not in present:
            problems.append(f"teacher {teacher.name!r} is not in the store (it has {', '.join(present) or 'none'})")
            continue
        expected = _expected_fingerprint(teacher)
        stored = store.teacher(teacher.name).attrs["weights_sha256"]
        if expected is not None and expected != stored:
            problems.append(f"teacher {teacher.name!r}: weights sha256 {expected[:16]}... differ from the store's {stored[:16]}...")
    if cfg.view_policy:
        wanted = ViewPolicy.from_dict(cfg.view_policy)
        if wanted.fingerprint() != store.attrs["view_policy_sha256"]:
            problems.append(f"view policy differs: store has {store.attrs['view_policy']}, config has {wanted.to_dict()}")
    problems += _shard_problems(cfg, store)
    return problems


def _expected_fingerprint(teacher) -> str | None:
    """The fingerprint the config's teacher would have, when its weights are available here."""
    if teacher.test_scale:
        return create_teacher(teacher.name, teacher.weights, test_scale=True).fingerprint
    path = teacher_weights_path(teacher.name, teacher.weights)
    return file_sha256(path) if path is not None else None


def _shard_problems(cfg: TrainConfig, store: FeatureStore) -> list[str]:
    """data.shards (where the images are now) against the store's record of their content: the sizes
    and head/tail hashes recorded at extraction, O(shards) small reads, no re-indexing. Without
    data.shards the recorded paths are read: only their existence is checked here."""
    if not cfg.data.shards:
        missing = [s for s in store.shards if "://" not in s and not Path(s).is_file()]
        if not missing:
            return []
        more = f", and {len(missing) - 1} more" if len(missing) > 1 else ""
        return [f"shard {missing[0]} (recorded in the store) is missing{more}; if the shards moved, set "
                "data.shards=PATTERN naming them where they are now (their content is checked against the store's "
                "record)"]
    shards = expand_shards(cfg.data.shards)
    if not cfg.data.check_keys:
        return [] if len(shards) == len(store.shards) else store.shard_problems(shards)  # the count only
    return store.shard_problems(shards)


def open_store(cfg: TrainConfig) -> FeatureStore:
    """The config's ``data.store``; a missing one is a ConfigError naming the key and how to make it."""
    if not cfg.data.store.strip():
        raise ConfigError("data.store is not set: set data.store=PATH of the feature store the teachers were "
                          "extracted into (eupe-cache extract ... --out PATH), e.g. `eupe-train --stage "
                          f"{cfg.stage} ... data.store=teachers.zarr`")
    try:
        return FeatureStore.open(cfg.data.store)
    except FileNotFoundError as err:
        raise ConfigError(f"data.store={cfg.data.store!r}: {err}; write it first ({_extract_command(cfg)}) or "
                          "set data.store=PATH of an existing feature store") from None


def _extract_command(cfg: TrainConfig) -> str:
    """The ``eupe-cache extract`` line that writes the store this config trains on."""
    words = ["eupe-cache extract"]
    for teacher in cfg.teachers:
        weights = teacher.weights or ("STAGE1_RUN" if teacher.name == "proxy" else None)
        words.append(f"--teacher {teacher.name}" + (f" --weights {weights}" if weights else ""))
    words.append(f"--data '{cfg.data.shards}'" if cfg.data.shards else "--data SHARDS")
    return " ".join([*words, f"--out {cfg.data.store}"])


def check_store(cfg: TrainConfig, store: FeatureStore) -> None:
    """Refuse a store that does not match the config; then read the images from data.shards (a copy
    of the shards elsewhere serves: the dataset's identity is its content)."""
    problems = store_problems(cfg, store)
    if problems:
        raise StoreMismatchError(f"feature store {cfg.data.store} does not match the training config:\n  "
                                 + "\n  ".join(problems))
    if cfg.data.shards:
        store.relocate(expand_shards(cfg.data.shards), check=False)  # checked above


def missing_images(store: FeatureStore, teachers: Sequence[str]) -> dict[str, int]:
    """Per teacher, how many images lie in chunks whose extraction is not done yet (from the
    store's one manifest read, :meth:`FeatureStore.progress`)."""
    return {name: store.num_images - store.teacher(name).chunks.images_done(store.progress(name).done)
            for name in teachers}


def check_complete(cfg: TrainConfig, store: FeatureStore, say: Callable[[str], None]) -> None:
    """Refuse a store whose extraction is unfinished, unless data.allow_incomplete (then warn)."""
    missing = {name: n for name, n in missing_images(store, cfg.teacher_names()).items() if n}
    if not missing:
        return
    text = ", ".join(f"{n} of {store.num_images} images of {name!r}" for name, n in missing.items())
    if not cfg.data.allow_incomplete:
        raise StoreMismatchError(f"feature store {cfg.data.store} is incomplete ({text} not extracted yet): "
                                 "finish `eupe-cache extract`, or set data.allow_incomplete=true")
    say(f"warning: training on an incomplete store: {text} not extracted yet (data.allow_incomplete=true)")


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


@dataclass
class OnlineTeacher:
    """Runs a teacher on rendered inputs and normalizes like the cache; counts fallbacks."""

    encoder: Encoder
    stats: dict[int, Stats]
    calls: int = 0
    samples: int = 0
    _device_stats: dict = field(default_factory=dict)  # (resolution, device) -> stats on that device

    @torch.no_grad()
    def raw(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Un-normalized float32 outputs on [B, 3, t, t] pixels."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=pixels.is_cuda):  # as the cache was extracted
            out = self.encoder(pixels)
        return {k: v.float() for k, v in out.items()}

    def __call__(self, pixels: torch.Tensor, resolution: int) -> dict[str, torch.Tensor]:
        """Targets at ``resolution``, normalized with that resolution's own frozen statistics."""
        self.calls += 1
        self.samples += len(pixels)
        if resolution not in self.stats:
            raise KeyError(f"no normalization statistics for teacher resolution {resolution} "
                           f"(have {sorted(self.stats)})")
        key = (resolution, pixels.device)
        if key not in self._device_stats:  # moved to the device once, not every step
            self._device_stats[key] = {k: v.to(pixels.device) for k, v in self.stats[resolution].items()}
        return normalize(self.raw(pixels), self._device_stats[key])


def online_stats(teacher: OnlineTeacher, dataset: DistillDataset, samples: Sequence[tuple[int, int]], resolution: int,
                 micro_batch: int, device: torch.device) -> dict[str, np.ndarray]:
    """Float64 per-coordinate mean/std of the online teacher at ``resolution`` over (row, view) samples."""
    moments = {"summary": RunningMoments(teacher.encoder.summary_dim), "patch": RunningMoments(teacher.encoder.dim)}
    for start in range(0, len(samples), micro_batch):
        out = teacher.raw(dataset.teacher_inputs(samples[start:start + micro_batch], resolution).to(device))
        for kind, m in moments.items():
            m.update(out[kind].cpu().numpy())  # [B, D] or [B, h, w, D] -> rows of D
    return {f"{kind}_{what}": getattr(m, what) for kind, m in moments.items() for what in ("mean", "std")}


def save_run_stats(path: Path, stats: dict[str, np.ndarray]) -> None:
    """Write statistics as a plain .npz (no pickles), atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would add ".npz" to a name
            np.savez(handle, **stats)

    atomic_write(path, write)


def load_run_stats(path: Path) -> Stats:
    with np.load(path, allow_pickle=False) as data:
        return tensor_stats({k: np.asarray(data[k]) for k in data.files})


def online_teachers(cfg: TrainConfig, store: FeatureStore, stats: dict[str, dict[int, Stats]],
                    device: torch.device) -> dict[str, OnlineTeacher]:
    """Teachers that may be needed online: those with a configured resolution missing from the store."""
    resolutions = set(cfg.teacher_resolutions)
    online = {}
    for teacher in cfg.teachers:
        group = store.teacher(teacher.name)
        if resolutions - set(group.resolutions):
            encoder = create_teacher(teacher.name, teacher.weights, teacher.test_scale).to(device)
            if encoder.fingerprint != group.attrs["weights_sha256"]:
                raise StoreMismatchError(
                    f"online teacher {teacher.name!r} has weights {encoder.fingerprint[:16]}... but the store "
                    f"was built with {group.attrs['weights_sha256'][:16]}...; fallback targets would not match")
            online[teacher.name] = OnlineTeacher(encoder, stats[teacher.name])
    return online
