"""Extraction: run a teacher once over a dataset and write its outputs into the feature store.

Work is divided into chunks of consecutive images. A rank owns the chunks with
``chunk % world_size == rank``; for each pending chunk, DataLoader workers read the images by
random access from the tar shards, draw the K views from (seed, key, view index), and render them
at each resolution; the main process runs the teacher; a writer thread encodes and writes the
chunk and then marks it done. A killed run resumes with exactly the chunks not marked done, and
the batch composition of a chunk never depends on what ran before, so results are identical.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eupe.data.shards import ShardReader, expand_shards, index_shards
from eupe.models import Encoder, create_teacher, run_teacher
from eupe.store.codecs import Codec, get_codec
from eupe.store.store import (
    FAILED, OK, STORE_FORMAT, FeatureStore, StoreMismatchError, StoreParams, wait_for,
)
from eupe.store.teacher_group import ChunkResult, TeacherGroup, TeacherIdentity
from eupe.views import VIEW_DIM, ImageDecodeError, ViewPolicy, decode_image, render_views, sample_views, views_to_array


class StoreWriteError(RuntimeError):
    """Writing to the store failed; the chunk being written was not marked done."""


@dataclass
class ExtractConfig:
    """Settings of one ``eupe-cache extract`` run (one or several teachers, one store)."""

    teachers: list[str]
    data: str
    out: str
    views: int = 4
    resolutions: list[int] = field(default_factory=list)  # empty: each teacher's native one
    codec: str = "compact"
    weights: str | None = None
    batch_size: int = 32  # views per teacher forward
    num_workers: int = 2
    seed: int = 0
    limit: int | None = None
    images_per_chunk: int = 16
    rank: int = 0
    world_size: int = 1
    device: str | None = None
    test_scale: bool = False  # tiny random-init teachers (tests)
    policy: ViewPolicy = field(default_factory=ViewPolicy)

    def params(self) -> StoreParams:
        return StoreParams(self.views, self.seed, self.policy, self.images_per_chunk)


@dataclass
class ExtractSummary:
    teacher: str
    images: int = 0
    failed: int = 0
    views: int = 0
    values: int = 0
    bytes_written: int = 0
    elapsed_s: float = 0.0

    def line(self) -> str:
        per_value = self.bytes_written / self.values if self.values else float("nan")
        return (f"{self.teacher}: {self.images} images ({self.failed} failed), {self.views} views, "
                f"{self.bytes_written / 1e6:.1f} MB written, {per_value:.3f} B/value, {self.elapsed_s:.1f} s")


# -- store preparation ---------------------------------------------------------------------------


def open_or_create_store(cfg: ExtractConfig, progress: bool = True) -> FeatureStore:
    """Open the store at ``cfg.out`` (checking it matches) or create it (rank 0; others wait)."""
    shards = expand_shards(cfg.data)
    wanted = {"shards": shards, "limit": cfg.limit}
    if cfg.rank != 0:
        wait_for(lambda: _ready(cfg.out), f"rank 0 to create {cfg.out}")
    elif needs_creation(cfg.out):
        index = index_shards(shards, progress=progress).head(cfg.limit)
        if len(index) == 0:
            raise ValueError(f"no readable images in {cfg.data}: "
                             + "; ".join(f"{f.shard}: {f.reason}" for f in index.failures))
        FeatureStore.create(cfg.out, index, cfg.params(), cfg.limit)
    store = FeatureStore.open(cfg.out, mode="a")
    store.check_params(cfg.params(), wanted)
    return store


def _ready(path: str) -> bool:
    try:
        return bool(FeatureStore.open(path).attrs.get("ready"))
    except (FileNotFoundError, ValueError, KeyError):
        return False


def needs_creation(path: str) -> bool:
    """True when there is no store yet, or only one whose creation was interrupted."""
    import zarr

    try:
        attrs = dict(zarr.open_group(path, mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return True
    if attrs.get("format") != STORE_FORMAT:
        raise StoreMismatchError(f"{path} exists and is not an eupe feature store; choose another --out")
    return not attrs.get("ready")


def teacher_identity(teacher: Encoder, resolutions: list[int], codec: Codec) -> TeacherIdentity:
    for res in resolutions:
        teacher.check_input(res, res)
    return TeacherIdentity(
        name=teacher.spec.name, fingerprint=teacher.fingerprint, preprocessing=teacher.spec.describe(),
        resolutions=tuple(resolutions), grids=tuple(teacher.spec.grid(r, r) for r in resolutions),
        dim=teacher.dim, codec=codec.to_dict(),
    )


def open_or_create_teacher(store: FeatureStore, identity: TeacherIdentity, codec: Codec, rank: int) -> TeacherGroup:
    if identity.name not in store.teacher_names() or "codec" not in _attrs(store, identity.name):
        if rank == 0:
            return TeacherGroup.create(store, identity, codec)
        wait_for(lambda: "codec" in _attrs(store, identity.name), f"rank 0 to create teacher {identity.name}")
    group = store.teacher(identity.name)
    group.check_identity(identity)
    return group


def _attrs(store: FeatureStore, name: str) -> dict:
    import zarr

    try:
        return dict(zarr.open_group(store.group.store, path=f"teachers/{name}", mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return {}


# -- reading and rendering (DataLoader workers) --------------------------------------------------


@dataclass
class ChunkPixels:
    chunk: int
    views: np.ndarray  # [C, K, VIEW_DIM]
    status: np.ndarray  # [C] uint8
    errors: list[str]
    pixels: dict[int, torch.Tensor]  # res -> [n_ok * K, 3, res, res]


class ChunkImages(Dataset):
    """Item j = the rendered views of every image of chunk ``chunks[j]``."""

    def __init__(self, store: FeatureStore, chunks: list[int], resolutions: list[int]) -> None:
        self.index = store.shard_index()
        self.rows = [store.chunk_rows(c) for c in chunks]
        self.chunks = chunks
        self.resolutions = resolutions
        self.params = store.params
        self.reader = ShardReader(self.index)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, j: int) -> ChunkPixels:
        k = self.params.views_per_image
        views = np.full((len(self.rows[j]), k, VIEW_DIM), np.nan)
        status = np.zeros(len(self.rows[j]), dtype=np.uint8)
        errors = [""] * len(self.rows[j])
        rendered: dict[int, list[torch.Tensor]] = {r: [] for r in self.resolutions}
        for i, row in enumerate(self.rows[j]):
            image = self._load(row, errors, i)
            if image is None:
                status[i] = FAILED
                continue
            specs = sample_views(self.params.policy, self.params.seed, str(self.index.keys[row]),
                                 image.shape[1], image.shape[2], k)
            views[i] = views_to_array(specs)
            status[i] = OK
            for res in self.resolutions:
                rendered[res].append(render_views(image, specs, res))  # [K, 3, res, res]
        pixels = {r: torch.cat(v) if v else torch.zeros(0, 3, r, r) for r, v in rendered.items()}
        return ChunkPixels(self.chunks[j], views, status, errors, pixels)

    def _load(self, row: int, errors: list[str], i: int) -> torch.Tensor | None:
        try:
            return decode_image(self.reader.read(row))
        except ImageDecodeError as err:
            errors[i] = err.reason
        except OSError as err:
            errors[i] = f"read error: {err}"
        return None


# -- teacher forward -----------------------------------------------------------------------------


def chunk_result(batch: ChunkPixels, teacher: Encoder, group: TeacherGroup, batch_size: int,
                 device: torch.device) -> ChunkResult:
    """Run the teacher on a chunk and lay the outputs out as [C, K, ...] (zeros for failed rows)."""
    c, k = len(batch.status), group.store.params.views_per_image
    ok = batch.status == OK
    summary, patch = {}, {}
    for res, pixels in batch.pixels.items():
        h, w = group.grids[res]
        summary[res] = np.zeros((c, k, group.dim), np.float32)
        patch[res] = np.zeros((c, k, h * w, group.dim), np.float32)
        if len(pixels):
            s, p = run_teacher(teacher, pixels, batch_size, device)
            summary[res][ok] = s.reshape(-1, k, group.dim)  # [n_ok*K, D] -> [n_ok, K, D]
            patch[res][ok] = p.reshape(-1, k, h * w, group.dim)
    return ChunkResult(batch.chunk, batch.views, batch.status, batch.errors, summary, patch)


# -- the run -------------------------------------------------------------------------------------


def default_device(cfg: ExtractConfig) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    if torch.cuda.is_available():  # one GPU per process on each node
        local_rank = int(os.environ.get("LOCAL_RANK", cfg.rank))
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def extract_teacher(cfg: ExtractConfig, store: FeatureStore, teacher: Encoder, progress=None) -> ExtractSummary:
    """Extract one teacher's pending chunks of this rank into the store.

    ``progress`` is an optional tqdm-like bar: reset to the number of pending images, then updated.
    """
    codec = get_codec(cfg.codec)
    resolutions = list(cfg.resolutions) or [teacher.spec.resolution]
    group = open_or_create_teacher(store, teacher_identity(teacher, resolutions, codec), codec, cfg.rank)
    pending = group.pending_chunks(cfg.rank, cfg.world_size)
    if progress is not None:
        progress.reset(total=sum(len(store.chunk_rows(c)) for c in pending))
    device = default_device(cfg)
    teacher.to(device)
    summary = ExtractSummary(teacher.spec.name)
    start = time.perf_counter()
    before = store.disk_bytes(f"teachers/{teacher.spec.name}") or 0
    with ThreadPoolExecutor(max_workers=1) as writer:
        in_flight: list[Future] = []
        for batch in _batches(store, pending, resolutions, cfg.num_workers):
            result = chunk_result(batch, teacher, group, cfg.batch_size, device)
            in_flight = _drain(in_flight, keep=1)
            in_flight.append(writer.submit(_write, group, result))
            _count(summary, result, resolutions, group)
            if progress is not None:
                progress.update(len(batch.status))
        _drain(in_flight, keep=0)
    summary.elapsed_s = time.perf_counter() - start
    summary.bytes_written = (store.disk_bytes(f"teachers/{teacher.spec.name}") or 0) - before
    return summary


def _batches(store: FeatureStore, chunks: list[int], resolutions: list[int], workers: int) -> Iterator[ChunkPixels]:
    if not chunks:
        return iter(())
    dataset = ChunkImages(store, chunks, resolutions)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        prefetch_factor=2 if workers else None, persistent_workers=False)
    return iter(loader)


def _write(group: TeacherGroup, result: ChunkResult) -> None:
    try:
        group.write_chunk(result)
    except Exception as err:  # noqa: BLE001 - re-raised with the chunk named
        rows = group.store.chunk_rows(result.chunk)
        raise StoreWriteError(
            f"writing chunk {result.chunk} (images {rows.start}..{rows.stop - 1}) failed: {err}; "
            "it was not marked done, re-run the same command to retry"
        ) from err


def _drain(futures: list[Future], keep: int) -> list[Future]:
    while len(futures) > keep:
        futures.pop(0).result()
    return futures


def _count(summary: ExtractSummary, result: ChunkResult, resolutions: list[int], group: TeacherGroup) -> None:
    ok = int((result.status == OK).sum())
    k = group.store.params.views_per_image
    summary.images += ok
    summary.failed += int((result.status == FAILED).sum())
    summary.views += ok * k
    for res in resolutions:
        h, w = group.grids[res]
        summary.values += ok * k * (h * w + 1) * group.dim


def load_teachers(cfg: ExtractConfig) -> list[Encoder]:
    """Build every requested teacher first, so a bad name or missing weights fail before any work."""
    if cfg.weights is not None and len(cfg.teachers) > 1:
        raise ValueError("--weights applies to one teacher; run one extract per teacher when passing weights")
    return [create_teacher(name, cfg.weights, cfg.test_scale) for name in cfg.teachers]
