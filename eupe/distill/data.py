"""The training data stream: images and cached targets joined by image key, in a fixed order.

The order is a pure function of (seed, step): epoch ``e`` visits the usable images in a seeded
permutation, each image uses view ``k`` drawn from (seed, epoch, row) among its K stored views,
and step ``s`` fixes the student's and the teacher's scale. Rank ``r`` of ``W`` takes its
micro-batches from each global batch by position, so a resumed run restarts at its step with
exactly the samples an uninterrupted run would have seen. Workers re-render the stored view for
the student, read + decode + normalize the cached targets, or render the teacher's input when a
(view, scale) is not in the store (the trainer then runs the teacher online).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eupe.data.shards import ShardReader
from eupe.store.store import OK, FeatureStore
from eupe.store.teacher_group import TeacherGroup
from eupe.views import ViewSpec, decode_image, render

Sample = tuple[int, int, int, int]  # (row, view, student_res, teacher_res; 0 = each teacher's stored one)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class Plan:
    """Which samples each rank sees at each step (holds one epoch's permutation at a time)."""

    rows: np.ndarray  # usable image rows
    views_per_image: int
    seed: int
    global_batch: int
    micro_batch: int
    world_size: int
    student_scales: tuple[int, ...]
    teacher_scales: tuple[int, ...]  # empty: every teacher at its (first) stored resolution

    @property
    def accumulation(self) -> int:
        per_step = self.micro_batch * self.world_size
        if self.global_batch % per_step:
            raise ValueError(f"global_batch {self.global_batch} is not a multiple of micro_batch "
                             f"{self.micro_batch} x {self.world_size} processes")
        return self.global_batch // per_step

    def scales(self, step: int) -> tuple[int, int]:
        """(student scale, teacher scale or 0) of a step, drawn independently."""
        rng = _rng("scales", self.seed, step)
        student = int(rng.choice(self.student_scales))
        return student, int(rng.choice(self.teacher_scales)) if self.teacher_scales else 0

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
        s_res, t_res = self.scales(step)
        batches = []
        for micro in range(self.accumulation):
            start = step * self.global_batch + (micro * self.world_size + rank) * self.micro_batch
            batches.append([(*self.sample(p), s_res, t_res) for p in range(start, start + self.micro_batch)])
        return batches


class StepBatches(torch.utils.data.Sampler):
    """Batch sampler: the micro-batches of steps start..stop-1 for one rank."""

    def __init__(self, plan: Plan, rank: int, start: int, stop: int) -> None:
        self.plan, self.rank, self.start, self.stop = plan, rank, start, stop

    def __iter__(self) -> Iterator[list[Sample]]:
        for step in range(self.start, self.stop):
            yield from self.plan.micro_batches(step, self.rank)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.plan.accumulation


class DistillDataset(Dataset):
    """Renders the student's view and loads each teacher's targets (or its input pixels)."""

    def __init__(self, store_path: str, teachers: Sequence[str], stats: dict[str, dict[int, dict]]) -> None:
        self.store_path = store_path
        self.teachers = list(teachers)
        self.stats = stats  # teacher -> res -> {"summary_mean", ...} float32 tensors
        self._store: FeatureStore | None = None
        self._reader: ShardReader | None = None
        self._groups: dict[str, TeacherGroup] = {}

    def _open(self) -> FeatureStore:
        if self._store is None:  # opened lazily, once per worker process
            self._store = FeatureStore.open(self.store_path)
            self._reader = ShardReader(self._store.shard_index())
            # kept for the worker's life: they cache array handles and shard indexes
            self._groups = {t: self._store.teacher(t) for t in self.teachers}
        return self._store

    def __getitems__(self, samples: list[Sample]) -> dict:
        self._open()
        first = self._groups[self.teachers[0]]
        items = [self._item(self._groups, first, *sample) for sample in samples]
        return collate(items)

    def __getitem__(self, sample: Sample) -> dict:
        return self.__getitems__([sample])

    def __len__(self) -> int:
        return self._open().num_images

    def _item(self, groups, first, row: int, k: int, s_res: int, t_res: int) -> dict:
        image = decode_image(self._reader.read(row))
        view = ViewSpec.from_array(first.views(row)[k])
        item = {"pixels": render(image, view, s_res), "row": row, "view": k}
        for name, group in groups.items():
            res = t_res or group.resolutions[0]
            if res in group.resolutions:
                targets = group.targets(row, res, k)
                item[f"target/{name}"] = normalize(
                    {key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in targets.items()},
                    self.stats[name][res])
            else:
                item[f"input/{name}"] = render(image, view, res)
        return item


def normalize(features: dict[str, torch.Tensor], stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(x - mean) / std per coordinate, with the teacher's frozen statistics."""
    return {kind: (features[kind] - stats[f"{kind}_mean"]) / stats[f"{kind}_std"] for kind in ("summary", "patch")}


def collate(items: list[dict]) -> dict:
    batch: dict = {"pixels": torch.stack([i["pixels"] for i in items]),
                   "row": torch.tensor([i["row"] for i in items]), "view": torch.tensor([i["view"] for i in items])}
    for key in items[0]:
        if key.startswith("target/"):
            batch[key] = {kind: torch.stack([i[key][kind] for i in items]) for kind in ("summary", "patch")}
        elif key.startswith("input/"):
            batch[key] = torch.stack([i[key] for i in items])
    return batch


def make_loader(dataset: DistillDataset, plan: Plan, rank: int, start: int, stop: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_sampler=StepBatches(plan, rank, start, stop), num_workers=workers,
                      collate_fn=_already_collated, prefetch_factor=4 if workers else None,
                      persistent_workers=False)


def _already_collated(batch: dict) -> dict:
    return batch  # __getitems__ returns a collated batch


def usable_rows(store: FeatureStore, teachers: Sequence[str]) -> np.ndarray:
    """Rows whose image decoded and whose targets are complete for every teacher."""
    ok = np.ones(store.num_images, dtype=bool)
    for name in teachers:
        group = store.teacher(name)
        ok &= group.status() == OK
        done = np.repeat(group.done_flags(), store.params.images_per_chunk)[: store.num_images]
        ok &= done
    return np.flatnonzero(ok)
