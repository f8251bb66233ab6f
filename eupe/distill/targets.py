"""Targets behind one interface: cached in the store, or computed online by the teacher.

The trainer checks that the store matches its config and dataset (teachers, weights
fingerprints, view policy, image keys) and refuses it naming every difference. Targets are
normalized with the teacher's frozen per-coordinate statistics from ``eupe-cache stats``
(computed first when absent). When a (view, scale) is not in the store, the data loader hands
the rendered teacher input to ``OnlineTeacher``, which returns the same normalized targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from eupe.data.shards import expand_shards, index_shards
from eupe.distill.config import TrainConfig
from eupe.distill.data import normalize
from eupe.models import Encoder, create_teacher, teacher_weights_path
from eupe.models.weights import file_sha256
from eupe.store.stats import compute_stats, load_stats, save_stats
from eupe.store.store import FeatureStore, StoreMismatchError
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
    if cfg.data.check_keys and cfg.data.shards:
        problems += _key_problems(cfg, store)
    return problems


def _expected_fingerprint(teacher) -> str | None:
    """The fingerprint the config's teacher would have, when its weights are available here."""
    if teacher.test_scale:
        return create_teacher(teacher.name, teacher.weights, test_scale=True).fingerprint
    path = teacher_weights_path(teacher.name, teacher.weights)
    return file_sha256(path) if path is not None else None


def _key_problems(cfg: TrainConfig, store: FeatureStore) -> list[str]:
    shards = expand_shards(cfg.data.shards)
    if shards != store.dataset["shards"]:
        return [f"dataset shards differ: store has {len(store.dataset['shards'])} ({store.dataset['shards'][0]} ...), "
                f"config has {len(shards)} ({shards[0]} ...)"]
    index = index_shards(shards).head(store.dataset["limit"])
    if index.keys_sha256() != store.dataset["keys_sha256"]:
        return [f"dataset keys differ from the store's ({len(index)} images now, {store.num_images} in the store)"]
    return []


def check_store(cfg: TrainConfig, store: FeatureStore) -> None:
    problems = store_problems(cfg, store)
    if problems:
        raise StoreMismatchError(f"feature store {cfg.data.store} does not match the training config:\n  "
                                 + "\n  ".join(problems))


def teacher_stats(store_path: str, name: str, say: Callable[[str], None] = print) -> dict[int, Stats]:
    """Frozen normalization statistics per stored resolution, computed and saved when absent."""
    group = FeatureStore.open(store_path).teacher(name)
    out = {}
    for res in group.resolutions:
        stats = load_stats(group, res)
        if stats is None:
            say(f"computing normalization statistics for {name} r{res} (not in the store yet; "
                "`eupe-cache stats` does this ahead of time)")
            writable = FeatureStore.open(store_path, mode="a").teacher(name)
            save_stats(writable, res, compute_stats(writable, res))
            stats = load_stats(writable, res)
        out[res] = {k: torch.from_numpy(np.maximum(v, 1e-6) if k.endswith("_std") else v).float()
                    for k, v in stats.items()}
    return out


def nearest_stats(stats: dict[int, Stats], res: int) -> Stats:
    """Statistics of the stored resolution closest to ``res`` (for online targets)."""
    return stats[min(stats, key=lambda r: abs(r - res))]


@dataclass
class OnlineTeacher:
    """Runs a teacher on rendered inputs and normalizes like the cache; counts fallbacks."""

    encoder: Encoder
    stats: dict[int, Stats]
    calls: int = 0
    samples: int = 0
    _device_stats: dict = field(default_factory=dict)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, res: int) -> dict[str, torch.Tensor]:
        self.calls += 1
        self.samples += len(pixels)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=pixels.is_cuda):  # as the cache was extracted
            out = self.encoder(pixels)
        stats = {k: v.to(pixels.device) for k, v in nearest_stats(self.stats, res).items()}
        return normalize({k: v.float() for k, v in out.items()}, stats)


def online_teachers(cfg: TrainConfig, store: FeatureStore, stats: dict[str, dict[int, Stats]],
                    device: torch.device) -> dict[str, OnlineTeacher]:
    """Teachers that may be needed online: those with a configured scale missing from the store."""
    scales = set(cfg.teacher_scales)
    online = {}
    for teacher in cfg.teachers:
        group = store.teacher(teacher.name)
        if scales - set(group.resolutions):
            encoder = create_teacher(teacher.name, teacher.weights, teacher.test_scale).to(device)
            if encoder.fingerprint != group.attrs["weights_sha256"]:
                raise StoreMismatchError(
                    f"online teacher {teacher.name!r} has weights {encoder.fingerprint[:16]}... but the store "
                    f"was built with {group.attrs['weights_sha256'][:16]}...; fallback targets would not match")
            online[teacher.name] = OnlineTeacher(encoder, stats[teacher.name])
    return online
