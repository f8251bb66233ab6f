"""Training targets in one place: the store checks at startup, cached targets decoded, online teachers.

Targets reach the loss through one interface, cached in the store or computed online by the teacher:

- Store checks (the trainer, before anything else): ``open_store`` names ``data.store`` when it is
  missing; ``check_store`` refuses a store that does not match the config and dataset (teachers,
  weights fingerprints, view policy, shards) naming every difference; ``check_complete`` refuses an
  incomplete store unless ``data.allow_incomplete``.
- Cached targets: the data loader stacks a micro-batch's stored codec components (int8 codes,
  float16 scales, ...) into :class:`StoredTargets`; :class:`TargetDecoder` decodes and normalizes
  them in one batched call (``Codec.decode_torch``, bit for bit ``Codec.decode``) on their device.
- Online teachers (Stage 3's fallback): when a (view, resolution) is not in the store the loader
  hands the rendered teacher input to :class:`OnlineTeacher`, which returns targets normalized the
  same way; ``online_stats`` fixes the statistics of a resolution the store lacks.

Targets are normalized with frozen per-coordinate statistics of their own (teacher, resolution):
eupe.distill.stats computes, freezes and reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from eupe.config import ConfigError
from eupe.data.shards import expand_shards
from eupe.distill.config import DataConfig, TrainConfig
from eupe.distill.stats import Stats, normalize
from eupe.models.config import TeacherConfig
from eupe.models.features import Encoder, Features
from eupe.models.teachers import create_teacher, teacher_weights_path
from eupe.models.weights import file_sha256
from eupe.store.codecs.base import Codec
from eupe.store.layout import StoreMismatchError
from eupe.store.stats import RunningMoments
from eupe.store.store import FeatureStore
from eupe.views.policy import ViewPolicy

# -- the store checks training does at startup --------------------------------------------------


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
    problems += _shard_problems(cfg.data, store)
    return problems


def _expected_fingerprint(teacher: TeacherConfig) -> str | None:
    """The fingerprint the config's teacher would have, when its weights are available here."""
    if teacher.test_scale:
        return create_teacher(teacher.name, teacher.weights, test_scale=True).fingerprint
    path = teacher_weights_path(teacher.name, teacher.weights)
    return file_sha256(path) if path is not None else None


def _shard_problems(data: DataConfig, store: FeatureStore) -> list[str]:
    """data.shards (where the images are now) against the store's record of their content: the sizes
    and head/tail hashes recorded at extraction, O(shards) small reads, no re-indexing. Without
    data.shards the recorded paths are read: only their existence is checked here."""
    if not data.shards:
        missing = [s for s in store.shards if "://" not in s and not Path(s).is_file()]
        if not missing:
            return []
        more = f", and {len(missing) - 1} more" if len(missing) > 1 else ""
        return [f"shard {missing[0]} (recorded in the store) is missing{more}; if the shards moved, set "
                "data.shards=PATTERN naming them where they are now (their content is checked against the store's "
                "record)"]
    shards = expand_shards(data.shards)
    if not data.check_keys:
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
        extract = _extract_command(cfg.teachers, cfg.data)
        raise ConfigError(f"data.store={cfg.data.store!r}: {err}; write it first ({extract}) or "
                          "set data.store=PATH of an existing feature store") from None


def _extract_command(teachers: Sequence[TeacherConfig], data: DataConfig) -> str:
    """The ``eupe-cache extract`` line that writes the store these teachers and data train on."""
    words = ["eupe-cache extract"]
    for teacher in teachers:
        weights = teacher.weights or ("STAGE1_RUN" if teacher.name == "proxy" else None)
        words.append(f"--teacher {teacher.name}" + (f" --weights {weights}" if weights else ""))
    words.append(f"--data '{data.shards}'" if data.shards else "--data SHARDS")
    return " ".join([*words, f"--out {data.store}"])


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


def check_complete(data: DataConfig, store: FeatureStore, teachers: Sequence[str],
                   say: Callable[[str], None]) -> None:
    """Refuse a store whose extraction is unfinished for ``teachers``, unless data.allow_incomplete (then warn)."""
    missing = {name: n for name, n in missing_images(store, teachers).items() if n}
    if not missing:
        return
    text = ", ".join(f"{n} of {store.num_images} images of {name!r}" for name, n in missing.items())
    if not data.allow_incomplete:
        raise StoreMismatchError(f"feature store {data.store} is incomplete ({text} not extracted yet): "
                                 "finish `eupe-cache extract`, or set data.allow_incomplete=true")
    say(f"warning: training on an incomplete store: {text} not extracted yet (data.allow_incomplete=true)")


# -- cached targets: stored codec components, decoded and normalized on their device ------------

Components = dict[str, dict[str, torch.Tensor]]  # "summary"|"patch" -> component name -> [B, *suffix]


def _tree(parts: Components, fn: Callable[[torch.Tensor], torch.Tensor]) -> Components:
    return {kind: {name: fn(t) for name, t in named.items()} for kind, named in parts.items()}


@dataclass
class StoredTargets:
    """One teacher's cached targets for a micro-batch as stored: codec components, not yet decoded."""

    codec: Codec
    resolution: int
    grid: tuple[int, int]  # (h, w) patch grid of the resolution
    parts: Components  # e.g. int8 codes [B, T, D] + float32 scale [B, T]; summary components [B, ...]

    def to(self, device: torch.device) -> "StoredTargets":
        return StoredTargets(self.codec, self.resolution, self.grid,
                             _tree(self.parts, lambda t: t.to(device, non_blocking=True)))

    def pin_memory(self) -> "StoredTargets":
        return StoredTargets(self.codec, self.resolution, self.grid, _tree(self.parts, torch.Tensor.pin_memory))

    @property
    def device(self) -> torch.device:
        return next(iter(self.parts["patch"].values())).device

    def decode(self) -> Features:
        """Raw float32 targets where the components lie: {"summary": [B, Ds], "patch": [B, h, w, D]}."""
        summary = self.codec.decode_vector_torch(self.parts["summary"])  # [B, Ds]
        patch = self.codec.decode_torch(self.parts["patch"])  # [B, T, D]
        return {"summary": summary, "patch": patch.reshape(len(patch), *self.grid, patch.shape[-1])}  # -> [B, h, w, D]


class TargetDecoder:
    """Decodes and normalizes :class:`StoredTargets` on their device; frozen statistics moved there once."""

    def __init__(self, stats: dict[str, dict[int, Stats]]) -> None:
        self.stats = stats  # teacher -> resolution -> {"summary_mean", ...} float32 tensors
        self._on_device: dict[tuple[str, int, torch.device], Stats] = {}

    def __call__(self, teacher: str, stored: StoredTargets) -> Features:
        key = (teacher, stored.resolution, stored.device)
        if key not in self._on_device:
            self._on_device[key] = {k: v.to(stored.device) for k, v in self.stats[teacher][stored.resolution].items()}
        return normalize(stored.decode(), self._on_device[key])


# -- online teachers: Stage 3's fallback where the store lacks a (view, resolution) ------------


class TeacherInputs(Protocol):
    """What ``online_stats`` reads the teacher's inputs from (``DistillDataset`` in training)."""

    def teacher_inputs(self, samples: Sequence[tuple[int, int]], resolution: int) -> torch.Tensor: ...


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


def online_stats(teacher: OnlineTeacher, dataset: TeacherInputs, samples: Sequence[tuple[int, int]], resolution: int,
                 micro_batch: int, device: torch.device) -> dict[str, np.ndarray]:
    """Float64 per-coordinate mean/std of the online teacher at ``resolution`` over (row, view) samples."""
    moments = {"summary": RunningMoments(teacher.encoder.summary_dim), "patch": RunningMoments(teacher.encoder.dim)}
    for start in range(0, len(samples), micro_batch):
        out = teacher.raw(dataset.teacher_inputs(samples[start:start + micro_batch], resolution).to(device))
        for kind, m in moments.items():
            m.update(out[kind].cpu().numpy())  # [B, D] or [B, h, w, D] -> rows of D
    return {f"{kind}_{what}": getattr(m, what) for kind, m in moments.items() for what in ("mean", "std")}


def online_teachers(teachers: Sequence[TeacherConfig], resolutions: Sequence[int], store: FeatureStore,
                    stats: dict[str, dict[int, Stats]], device: torch.device) -> dict[str, OnlineTeacher]:
    """Teachers that may be needed online: those with one of the teacher ``resolutions`` missing from the store."""
    wanted = set(resolutions)
    online = {}
    for teacher in teachers:
        group = store.teacher(teacher.name)
        if wanted - set(group.resolutions):
            encoder = create_teacher(teacher.name, teacher.weights, teacher.test_scale).to(device)
            if encoder.fingerprint != group.attrs["weights_sha256"]:
                raise StoreMismatchError(
                    f"online teacher {teacher.name!r} has weights {encoder.fingerprint[:16]}... but the store "
                    f"was built with {group.attrs['weights_sha256'][:16]}...; fallback targets would not match")
            online[teacher.name] = OnlineTeacher(encoder, stats[teacher.name])
    return online
