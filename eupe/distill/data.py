"""The training data stream: images and cached targets joined by image key, in a fixed order.

The order is a pure function of (seed, step): epoch ``e`` visits the usable images in a seeded
permutation, each image uses view ``k`` drawn from (seed, epoch, row) among its K stored views,
and step ``s`` fixes the student's and the teacher's resolution. Rank ``r`` of ``W`` takes its
micro-batches from each global batch by position, so a resumed run restarts at its step with
exactly the samples an uninterrupted run would have seen. Workers re-render the stored view for
the student, read the cached targets' stored codec components (``TeacherGroup.reader.read_parts``: int8
codes, float16 scales, ...), or render the teacher's input when a (view, resolution) is not in the
store (the trainer then runs the teacher online). The components of a micro-batch are stacked into
``StoredTargets`` and decoded + normalized by ``TargetDecoder`` (both in eupe.distill.targets) in one
batched call (``Codec.decode_torch``, the same formulas as ``Codec.decode``, bit for bit): on the training
step's device when the trainer asks (a GPU: only the small components cross worker processes and
the host-to-device copy), or in the worker (``DistillDataset(decode=True)``, the default; on CPU
the workers decode in parallel with the step).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eupe.config import ConfigError
from eupe.data.shards import ShardReader, expand_shards
from eupe.distill.targets import Components, StoredTargets, TargetDecoder
from eupe.models.features import Features
from eupe.store.layout import StoreMismatchError
from eupe.store.store import FeatureStore
from eupe.store.teacher_group.group import TeacherGroup
from eupe.views.kernels import warm_up_kernels
from eupe.views.renderer import render
from eupe.views.source import open_image
from eupe.views.spec import ViewSpec

Sample = tuple[int, int, int, int]  # (row, view, student_resolution, teacher_resolution; 0 = each teacher's stored one)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(kw_only=True)
class Plan:
    """Which samples each rank sees at each step (holds one epoch's permutation at a time)."""

    rows: np.ndarray  # usable image rows
    views_per_image: int
    seed: int
    global_batch: int
    micro_batch: int
    world_size: int
    student_resolutions: tuple[int, ...]
    teacher_resolutions: tuple[int, ...]  # empty: every teacher at its (first) stored resolution
    parts: tuple[np.ndarray, ...] = ()  # data mixture: each part's usable rows (empty: all rows, uniform)
    weights: tuple[float, ...] = ()  # each part's share of every global batch (sums to 1)

    @property
    def accumulation(self) -> int:
        per_step = self.micro_batch * self.world_size
        if self.global_batch % per_step:
            raise ValueError(f"global_batch {self.global_batch} is not a multiple of micro_batch "
                             f"{self.micro_batch} x {self.world_size} processes")
        return self.global_batch // per_step

    def resolutions(self, step: int) -> tuple[int, int]:
        """(student resolution, teacher resolution or 0) of a step, drawn independently."""
        rng = _rng("scales", self.seed, step)  # the stream's old label: the same draws as before the rename
        student = int(rng.choice(self.student_resolutions))
        return student, int(rng.choice(self.teacher_resolutions)) if self.teacher_resolutions else 0

    def _permutation(self, epoch: int) -> np.ndarray:
        cached = getattr(self, "_cached", None)
        if cached is None or cached[0] != epoch:
            self._cached = cached = (epoch, _rng("epoch", self.seed, epoch).permutation(self.rows))
        return cached[1]

    def sample(self, position: int) -> tuple[int, int]:
        """(row, view) at a position of the infinite stream."""
        epoch, offset = divmod(position, len(self.rows))
        row = int(self._permutation(epoch)[offset])
        return row, int(_rng("view", self.seed, epoch, row).integers(self.views_per_image))

    def micro_batches(self, step: int, rank: int) -> list[list[Sample]]:
        s_resolution, t_resolution = self.resolutions(step)
        mixed = self.step_samples(step) if self.parts else None
        batches = []
        for micro in range(self.accumulation):
            first = (micro * self.world_size + rank) * self.micro_batch  # position inside the global batch
            positions = range(first, first + self.micro_batch)
            samples = [mixed[i] for i in positions] if mixed else [self.sample(step * self.global_batch + i)
                                                                  for i in positions]
            batches.append([(*sample, s_resolution, t_resolution) for sample in samples])
        return batches

    def first_samples(self, n: int) -> list[tuple[int, int]]:
        """The first ``n`` (row, view) samples of the schedule (steps in order, all ranks)."""
        if not self.parts:
            return [self.sample(p) for p in range(n)]
        out: list[tuple[int, int]] = []
        step = 0
        while len(out) < n:
            out += self.step_samples(step)
            step += 1
        return out[:n]

    def _part_permutation(self, part: int, epoch: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_part_cache", {})
        if (part, epoch) not in cache:
            if len(cache) > 2 * len(self.parts):  # a step touches at most two epochs of a part
                cache.clear()
            cache[(part, epoch)] = _rng("part", self.seed, part, epoch).permutation(self.parts[part])
        return cache[(part, epoch)]

    def _part_count(self, part: int, step: int) -> int:
        """Samples part ``part`` contributed to steps 0..step-1: floor of cumulative shares, summing to step x B."""
        total = step * self.global_batch
        edge = lambda k: total if k == len(self.weights) else int(total * sum(self.weights[:k]))  # noqa: E731
        return edge(part + 1) - edge(part)

    def step_samples(self, step: int) -> list[tuple[int, int]]:
        """The global batch of a mixture step: each part's next rows (its own epochs), then shuffled.

        Part k has taken ``_part_count(k, step)`` samples before this step, so the batch is a pure
        function of (seed, step) and the long-run shares equal the weights to within one sample.
        """
        samples = []
        for k, rows in enumerate(self.parts):
            start, stop = self._part_count(k, step), self._part_count(k, step + 1)
            for position in range(start, stop):
                epoch, offset = divmod(position, len(rows))
                row = int(self._part_permutation(k, epoch)[offset])
                samples.append((row, int(_rng("view", self.seed, k, epoch, row).integers(self.views_per_image))))
        order = _rng("mix", self.seed, step).permutation(len(samples))
        return [samples[i] for i in order]


class StepBatches(torch.utils.data.Sampler):
    """Batch sampler: the micro-batches of steps start..stop-1 for one rank."""

    def __init__(self, plan: Plan, rank: int, start: int, stop: int) -> None:
        self.plan, self.rank, self.start, self.stop = plan, rank, start, stop

    def __iter__(self) -> Iterator[list[Sample]]:
        for step in range(self.start, self.stop):
            yield from self.plan.micro_batches(step, self.rank)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.plan.accumulation


@dataclass
class Batch:
    """One micro-batch: the student's pixels and, per teacher, cached targets or the teacher's input.

    A cached teacher is in ``targets`` (decoded and normalized in the loader) or in ``stored``
    (components, for ``TargetDecoder`` on the step's device); an uncached one in ``inputs``.
    """

    pixels: torch.Tensor  # [B, 3, s, s] the student's view, in [0, 1]
    rows: torch.Tensor  # [B] store rows
    views: torch.Tensor  # [B] stored view index of each row
    targets: dict[str, Features] = field(default_factory=dict)  # teacher -> normalized cached targets
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # teacher -> [B, 3, t, t] (not cached)
    stored: dict[str, StoredTargets] = field(default_factory=dict)  # teacher -> stored components (not decoded)

    def __len__(self) -> int:
        return len(self.pixels)

    def _map(self, fn, stored) -> "Batch":
        return Batch(fn(self.pixels), fn(self.rows), fn(self.views),
                     {n: {k: fn(v) for k, v in f.items()} for n, f in self.targets.items()},
                     {n: fn(v) for n, v in self.inputs.items()}, {n: stored(s) for n, s in self.stored.items()})

    def to(self, device: torch.device) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=True), lambda s: s.to(device))

    def pin_memory(self) -> "Batch":
        """Page-locked copy (DataLoader ``pin_memory``): the host-to-device copies then run asynchronously."""
        return self._map(torch.Tensor.pin_memory, StoredTargets.pin_memory)


class DistillDataset(Dataset):
    """Renders the student's view and loads each teacher's targets (or its input pixels).

    ``store`` is used in this process; DataLoader workers reopen the store lazily from its path.
    With ``decode`` a batch's cached targets are decoded and normalized here (``Batch.targets``);
    without, they stay stored components (``Batch.stored``) for the step's device.
    """

    def __init__(self, store_path: str, teachers: Sequence[str], stats: dict[str, dict[int, dict]],
                 store: FeatureStore | None = None, decode: bool = True) -> None:
        self.store_path = store_path
        self.shards = store.shards if store is not None else None  # where images are read (FeatureStore.relocate)
        self.teachers = list(teachers)
        self.stats = stats  # teacher -> resolution -> {"summary_mean", ...} float32 tensors
        self.decode = decode
        self.decoder = TargetDecoder(stats)
        self._store: FeatureStore | None = store
        self._reader: ShardReader | None = None
        self._groups: dict[str, TeacherGroup] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)  # workers reopen the store from its path
        state.update(_store=None, _reader=None, _groups={})
        return state

    def _open(self) -> FeatureStore:
        if self._store is None:  # opened lazily, once per worker process
            self._store = FeatureStore.open(self.store_path)
            if self.shards is not None:
                self._store.relocate(self.shards, check=False)  # the main process checked them
        if self._reader is None:
            self._reader = ShardReader(self._store.shard_index(keys=False))  # a reader needs no keys
            # kept for the worker's life: they cache array handles and shard indexes
            self._groups = {t: self._store.teacher(t) for t in self.teachers}
        return self._store

    def __getitems__(self, samples: list[Sample]) -> Batch:
        self._open()
        batch = collate([self._item(*sample) for sample in samples], self._groups)
        if self.decode:
            batch.targets = {name: self.decoder(name, stored) for name, stored in batch.stored.items()}
            batch.stored = {}
        return batch

    def __getitem__(self, sample: Sample) -> Batch:
        return self.__getitems__([sample])

    def __len__(self) -> int:
        return self._open().num_images

    def _view(self, row: int, k: int) -> tuple[torch.Tensor, ViewSpec]:
        first = self._groups[self.teachers[0]]
        return open_image(self._reader.read(row), None), ViewSpec.from_array(first.blocks.view_params(row, k))

    def teacher_inputs(self, samples: Sequence[tuple[int, int]], resolution: int) -> torch.Tensor:
        """[B, 3, resolution, resolution] teacher inputs of (row, view) samples, rendered like the cached ones."""
        self._open()
        return torch.stack([render(*self._view(row, k), resolution) for row, k in samples])

    def _item(self, row: int, k: int, s_resolution: int, t_resolution: int) -> dict:
        image, view = self._view(row, k)
        item = {"pixels": render(image, view, s_resolution), "row": row, "view": k, "stored": {}, "inputs": {}}
        for name, group in self._groups.items():
            resolution = t_resolution or group.resolutions[0]
            if resolution in group.resolutions:
                parts = group.reader.read_parts(row, resolution, k)  # checked; fresh arrays from the fast reader
                item["stored"][name] = (resolution, {kind: {n: torch.from_numpy(np.require(a, requirements="C"))
                                                            for n, a in named.items()} for kind, named in parts.items()})
            else:
                item["inputs"][name] = render(image, view, resolution)
        return item


def _stack_stored(group: TeacherGroup, stored: list[tuple[int, Components]]) -> StoredTargets:
    resolution, first = stored[0]
    parts = {kind: {n: torch.stack([s[1][kind][n] for s in stored]) for n in named}  # [B, *suffix]
             for kind, named in first.items()}
    return StoredTargets(group.codec, resolution, tuple(group.grids[resolution]), parts)


def collate(items: list[dict], groups: dict[str, TeacherGroup]) -> Batch:
    """Stack per-sample dicts into a Batch (every sample of a micro-batch has the same resolutions)."""
    first = items[0]
    return Batch(
        pixels=torch.stack([i["pixels"] for i in items]),
        rows=torch.tensor([i["row"] for i in items]), views=torch.tensor([i["view"] for i in items]),
        inputs={name: torch.stack([i["inputs"][name] for i in items]) for name in first["inputs"]},
        stored={name: _stack_stored(groups[name], [i["stored"][name] for i in items]) for name in first["stored"]},
    )


def make_loader(dataset: DistillDataset, plan: Plan, rank: int, start: int, stop: int, workers: int,
                pin_memory: bool = False) -> DataLoader:
    """The rank's micro-batches of steps start..stop-1 (``pin_memory``: page-locked, for a GPU step)."""
    if workers:
        warm_up_kernels()  # forked workers inherit the renderer's compiled kernels
    return DataLoader(dataset, batch_sampler=StepBatches(plan, rank, start, stop), num_workers=workers,
                      collate_fn=_already_collated, prefetch_factor=4 if workers else None,
                      persistent_workers=False, pin_memory=pin_memory)


def _already_collated(batch: Batch) -> Batch:
    return batch  # __getitems__ returns a collated batch


def usable_rows(store: FeatureStore, teachers: Sequence[str], save: bool = False) -> np.ndarray:
    """Rows whose image decoded and whose targets are complete for every teacher (``save``: write the
    store's consolidated status record when it is missing or stale, see ``FeatureStore.image_status``)."""
    return store.usable_rows(list(teachers), save)


def usable_views(store: FeatureStore, teachers: Sequence[str], recorded: int | None,
                 say: Callable[[str], None]) -> int:
    """Views per image a run draws from: every view in the complete view blocks of all its teachers
    (at least the store's first K, whose unfinished rows ``usable_rows`` leaves out). A resumed run
    keeps the number it started with (``recorded``), so its samples stay those of an uninterrupted run."""
    groups = [store.teacher(name) for name in teachers]
    available = min(max(g.blocks.complete_views(store.progress(g.name).done), g.block_views) for g in groups)
    if recorded is not None:
        if recorded > available:
            raise StoreMismatchError(f"this run started with {recorded} views per image but {store.where} now has "
                                     f"{available} complete ones; restore the store or start a new run")
        if recorded < available:
            say(f"resuming with the {recorded} views per image this run started with; the store now holds "
                f"{available} complete ones (a new run uses them)")
        return recorded
    unfinished = [f"{g.name} views {available}..{g.blocks.total_views - 1}" for g in groups
                  if g.blocks.total_views > available]
    if unfinished:
        say(f"not used until their extraction finishes: {', '.join(unfinished)}")
    return available


def mixture_parts(store: FeatureStore, patterns: Sequence[str], rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """Usable rows of each shard pattern (each must name shards of the store's dataset)."""
    shards = store.shards  # where the images are read from (data.shards, else the recorded paths)
    shard_of_row = np.asarray(store.group["images/shard"][:])  # [N] index into the store's shards
    parts = []
    for i, pattern in enumerate(patterns):
        try:
            wanted = expand_shards(pattern)
        except ValueError as err:
            raise ConfigError(f"data.mixture.{i}.shards: {err}") from None
        unknown = [s for s in wanted if s not in shards]
        if unknown:
            raise ConfigError(f"data.mixture.{i}.shards: {unknown[0]} is not one of the store's {len(shards)} shards")
        part = rows[np.isin(shard_of_row[rows], [shards.index(s) for s in wanted])]
        if len(part) == 0:
            raise ConfigError(f"data.mixture.{i}.shards {pattern!r} holds no usable image")
        parts.append(part)
    return tuple(parts)
