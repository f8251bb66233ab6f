"""Extraction: run a teacher once over a dataset and write its outputs into the feature store.

Work is divided into chunks of consecutive images. A rank owns the chunks with
``chunk % world_size == rank``; for each pending chunk, DataLoader workers read the images by
random access from the tar shards, draw the K views from (seed, key, view index), and render them
at each resolution; the main process runs the teacher and encodes each forward batch where it ran
(``Codec.encode_torch`` on a GPU, numpy on a CPU); a pool of writer threads compresses (zstd),
writes and fsyncs chunks, several in flight, and marks each done only once its data is durable.
A killed run resumes with exactly the chunks not marked done, and the batch composition of a
chunk never depends on what ran before, so results are identical.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eupe.data.shards import ShardReader, expand_shards, index_shards
from eupe.models.features import Encoder, teacher_batch
from eupe.models.teachers import create_teacher
from eupe.paths import require_writable
from eupe.store.claims import claim_rank
from eupe.store.codecs.base import Codec
from eupe.store.codecs.registry import get_codec
from eupe.store.layout import (DEFAULT_IMAGES_PER_CHUNK, FAILED, MAX_RESOLUTION, MAX_VIEWS_PER_IMAGE, OK, READ_ERROR,
                               StoreError, StoreWriteError, is_url)
from eupe.store.store import FeatureStore, StoreMismatchError, StoreParams
from eupe.store.teacher_group.group import TeacherGroup
from eupe.store.teacher_group.identity import TeacherIdentity
from eupe.store.teacher_group.writer import ChunkResult
from eupe.views.kernels import warm_up_kernels
from eupe.views.policy import ViewPolicy, sample_views
from eupe.views.renderer import render_views
from eupe.views.source import DEFAULT_MAX_PIXELS, ImageDecodeError, SourceImage, open_image
from eupe.views.spec import VIEW_DIM, views_to_array

REMOTE_WAIT_ENV = "EUPE_REMOTE_WAIT_S"  # how long ranks > 0 wait for rank 0 to create a remote store
REMOTE_WAIT_S = 600.0
DEFAULT_VIEWS = 4  # views per image of a new store


@dataclass(kw_only=True)
class ExtractConfig:
    """Settings of one ``eupe-cache extract`` run (one or several teachers, one store); built by keyword."""

    teachers: list[str]
    data: str
    out: str
    views: int | None = None  # None: the existing store's K (nothing added), else DEFAULT_VIEWS
    resolutions: list[int] = field(default_factory=list)  # empty: each teacher's native one
    codec: str = "compact"
    weights: str | None = None
    batch_size: int = 32  # views per teacher forward
    num_workers: int = 2
    seed: int | None = None  # None: the existing store's, else derived from the teacher names (derived_seed)
    limit: int | None = None
    images_per_chunk: int | None = None  # None: the existing store's, else DEFAULT_IMAGES_PER_CHUNK
    rank: int = 0
    world_size: int = 1
    device: str | None = None
    test_scale: bool = False  # tiny random-init teachers (tests)
    policy: ViewPolicy = field(default_factory=ViewPolicy)
    retry_failed: bool = False  # redo chunks holding images that failed with a read error
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # larger source images are recorded as failed, never decoded
    writers: int | None = None  # writer threads (zstd + write + fsync); None: default_writers()
    views_given: bool | None = None  # whether --views was passed (set by resolve_params before it fills views)

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
    retried: int = 0  # chunks reset by --retry-failed
    added_views: str = ""  # "K..K2-1" when this run grew the teacher's views (a new view block)
    not_done: int = 0  # chunks of this teacher still not done store-wide after this rank's work

    def line(self) -> str:
        per_value = self.bytes_written / self.values if self.values else float("nan")
        text = (f"{self.teacher}: {self.images} images ({self.failed} failed), {self.views} views, "
                f"{self.bytes_written / 1e6:.1f} MB written, {per_value:.3f} B/value, {self.elapsed_s:.1f} s")
        if self.added_views:
            text += f"; views {self.added_views} added"
        if self.retried:
            text += f"; {self.retried} chunk(s) with read errors retried"
        if self.not_done:
            text += f"; {self.not_done} chunk(s) still not done store-wide (other ranks, or re-run this command)"
        return text


# -- store preparation ---------------------------------------------------------------------------


def derived_seed(teachers: list[str]) -> int:
    """The default view seed of a new store: a hash of its teachers' names, so the proxy's store
    (Stage 2) draws other views than its teachers' store (Stage 1) and the proxy is never distilled
    on exactly the views it was trained on."""
    digest = hashlib.sha256(("eupe-views:" + ",".join(sorted(teachers))).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def resolve_params(cfg: ExtractConfig) -> None:
    """Fill what the command line left open from the store already at ``--out`` (its views per image,
    seed and chunk size), else the defaults of a new store (DEFAULT_VIEWS, :func:`derived_seed`,
    DEFAULT_IMAGES_PER_CHUNK)."""
    if cfg.views_given is None:
        cfg.views_given = cfg.views is not None
    if cfg.seed is not None and cfg.images_per_chunk is not None and cfg.views is not None:
        return
    existing = FeatureStore.existing_params(cfg.out)
    if cfg.views is None:  # growing a store's views takes an explicit --views
        cfg.views = existing.views_per_image if existing is not None else DEFAULT_VIEWS
    if cfg.seed is None:
        cfg.seed = existing.seed if existing is not None else derived_seed(cfg.teachers)
    if cfg.images_per_chunk is None:
        cfg.images_per_chunk = existing.images_per_chunk if existing is not None else DEFAULT_IMAGES_PER_CHUNK


def open_or_create_store(cfg: ExtractConfig, progress: bool = True) -> FeatureStore:
    """Open the store at ``cfg.out`` (checking views, dataset and shards) or create it atomically."""
    require_writable(cfg.out, "--out", "extract writes into the store (chunks, claims, view blocks): choose a "
                     "writable --out, or run extract where the store is writable")
    resolve_params(cfg)
    shards = expand_shards(cfg.data)
    if is_url(cfg.out) and cfg.rank != 0:
        wait_for_rank0(f"the store {cfg.out}", lambda: FeatureStore.exists(cfg.out))
    store = FeatureStore.open_or_create(cfg.out, cfg.params(), shards, cfg.limit,
                                        index=lambda: index_shards(shards, progress=progress))
    store.relocate(shards)  # by content: copies elsewhere serve; shards that changed would mix two datasets
    return store


def wait_for_rank0(what: str, ready: Callable[[], bool]) -> None:
    """On object storage only rank 0 creates the store and each teacher group (there is no atomic
    rename nor exclusive create to settle a race); other ranks wait here until it has."""
    limit = float(os.environ.get(REMOTE_WAIT_ENV, REMOTE_WAIT_S))
    deadline = time.monotonic() + limit
    while not ready():
        if time.monotonic() > deadline:
            raise StoreError(f"waited {limit:.0f} s for rank 0 to create {what}: on object storage rank 0 creates "
                             f"the store and its teachers; start rank 0 (or raise ${REMOTE_WAIT_ENV})")
        time.sleep(0.5)


def check_request(cfg: ExtractConfig, teachers: list[Encoder]) -> None:
    """Every size and resolution checked before any store is created or written."""
    if cfg.views is not None and not 1 <= cfg.views <= MAX_VIEWS_PER_IMAGE:
        raise StoreError(f"--views {cfg.views} is outside 1..{MAX_VIEWS_PER_IMAGE}")
    if len(set(cfg.resolutions)) != len(cfg.resolutions):
        raise StoreError(f"--resolution lists a value twice: {','.join(map(str, cfg.resolutions))}")
    for teacher in teachers:
        for resolution in list(cfg.resolutions) or [teacher.spec.resolution]:
            if not 0 < resolution <= MAX_RESOLUTION:
                raise StoreError(f"--resolution {resolution} is outside 1..{MAX_RESOLUTION} pixels")
            try:
                teacher.check_input(resolution, resolution)
            except ValueError as err:
                raise StoreError(f"--resolution {resolution}: {err}") from None


def teacher_identity(teacher: Encoder, resolutions: list[int], codec: Codec) -> TeacherIdentity:
    return TeacherIdentity(
        name=teacher.spec.name, fingerprint=teacher.fingerprint, preprocessing=teacher.spec.describe(),
        resolutions=tuple(resolutions), grids=tuple(teacher.spec.grid(r, r) for r in resolutions),
        dim=teacher.dim, summary_dim=teacher.summary_dim, codec=codec.to_dict(),
    )


# -- reading and rendering (DataLoader workers) --------------------------------------------------


@dataclass
class ChunkPixels:
    """The rendered views of a piece of a chunk: images ``first..first+len(status)-1`` of it."""

    chunk: int
    first: int  # position of the piece's first image inside its chunk
    views: np.ndarray  # [c, K, VIEW_DIM]
    status: np.ndarray  # [c] uint8
    errors: list[str]
    pixels: dict[int, torch.Tensor]  # resolution -> [n_ok * K, 3, resolution, resolution]


class ChunkImages(Dataset):
    """Item j = the rendered views of piece j: a run of images of one chunk holding about one teacher
    batch of views, so a worker never holds a whole chunk of float32 pixels (256 images x 4 views at
    448 px would be 2.5 GB)."""

    def __init__(self, group: TeacherGroup, chunks: list[int], resolutions: list[int],
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, batch_size: int = 32) -> None:
        store = group.store
        self.views = range(group.view_start, group.view_stop)  # the global views this block holds
        self.index = store.shard_index()
        per_piece = max(1, batch_size // len(self.views))
        self.pieces = [(c, rows.start, range(first, min(first + per_piece, rows.stop)))  # (chunk, its first row, rows)
                       for c in chunks for rows in [store.chunk_rows(c)]
                       for first in range(rows.start, rows.stop, per_piece)]
        self.resolutions = resolutions
        self.params = store.params
        self.reader = ShardReader(self.index)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.pieces)

    def __getitem__(self, j: int) -> ChunkPixels:
        chunk, chunk_start, rows = self.pieces[j]
        k = len(self.views)
        views = np.full((len(rows), k, VIEW_DIM), np.nan)
        status = np.zeros(len(rows), dtype=np.uint8)
        errors = [""] * len(rows)
        rendered: dict[int, list[torch.Tensor]] = {r: [] for r in self.resolutions}
        for i, row in enumerate(rows):
            image = self._load(row, errors, i)
            if image is None:
                status[i] = FAILED
                continue
            specs = sample_views(self.params.policy, self.params.seed, str(self.index.keys[row]),
                                 image.shape[1], image.shape[2], self.views.stop, first=self.views.start)
            try:  # a JPEG's pixels are decoded (and found corrupt) only here, at the size a view needs
                out = {r: render_views(image, specs, r) for r in self.resolutions}  # resolution r -> [K, 3, r, r]
            except ImageDecodeError as err:
                errors[i], status[i] = err.reason, FAILED
                continue
            views[i] = views_to_array(specs)
            status[i] = OK
            for resolution in self.resolutions:
                rendered[resolution].append(out[resolution])
        pixels = {r: torch.cat(v) if v else torch.zeros(0, 3, r, r) for r, v in rendered.items()}
        return ChunkPixels(chunk, rows.start - chunk_start, views, status, errors, pixels)

    def _load(self, row: int, errors: list[str], i: int) -> SourceImage | None:
        try:
            return open_image(self.reader.read(row), self.max_pixels)
        except ImageDecodeError as err:
            errors[i] = err.reason
        except OSError as err:
            errors[i] = f"{READ_ERROR}: {err}"
        return None


# -- teacher forward -----------------------------------------------------------------------------


class ChunkBuilder:
    """One chunk's encoded components, filled piece by piece: each forward batch is encoded where the
    teacher ran (:func:`encode_batch`) into [C, K, *suffix] host arrays (zeros for failed rows: what
    the codecs encode zeros to). No float32 chunk buffer exists: one batch of features at a time."""

    def __init__(self, group: TeacherGroup, chunk: int, resolutions: list[int]) -> None:
        c, k, codec = len(group.store.chunk_rows(chunk)), group.block_views, group.codec
        self.group, self.chunk, self.filled = group, chunk, 0
        self.views = np.full((c, k, VIEW_DIM), np.nan)
        self.status = np.zeros(c, dtype=np.uint8)
        self.errors = [""] * c
        self.summary = {r: _component_buffers(codec.vector_components(group.summary_dim), c, k) for r in resolutions}
        self.patch = {r: _component_buffers(codec.components(int(np.prod(group.grids[r])), group.dim), c, k)
                      for r in resolutions}

    @property
    def complete(self) -> bool:
        return self.filled == len(self.status)

    def add(self, piece: ChunkPixels, teacher: Encoder, batch_size: int, device: torch.device) -> None:
        """Run the teacher on a piece's views and put their components at the piece's rows."""
        k, n = self.group.block_views, len(piece.status)
        span = slice(piece.first, piece.first + n)
        self.views[span], self.status[span], self.errors[span] = piece.views, piece.status, piece.errors
        ok = piece.first + np.flatnonzero(piece.status == OK)
        rows = (ok[:, None] * k + np.arange(k)).reshape(-1)  # view j of the piece -> image * K + view
        for resolution, pixels in piece.pixels.items():
            for start in range(0, len(pixels), batch_size):
                s, p = teacher_batch(teacher, pixels[start:start + batch_size], device)
                summary, patch = encode_batch(self.group.codec, s, p, on_device=device.type != "cpu")
                _put(self.summary[resolution], rows[start:start + len(s)], summary)
                _put(self.patch[resolution], rows[start:start + len(s)], patch)
        self.filled += n

    def result(self) -> ChunkResult:
        return ChunkResult(self.chunk, self.views, self.status, self.errors, self.summary, self.patch)


def encode_batch(codec: Codec, summary: torch.Tensor, patch: torch.Tensor,
                 on_device: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Components of a forward batch (summary [b, Ds], patch [b, T, D]) as host numpy arrays.

    ``on_device``: quantise with ``Codec.encode_torch`` where the tensors are (a GPU) and move only the
    small integer/fp16 components to the host. Otherwise (a CPU teacher) numpy ``Codec.encode``: 4-20x
    less CPU than torch's CPU kernels for these formulas (bench/cache.py), and bit for bit the bytes
    that encoding a whole chunk gave (every formula is per view)."""
    if not on_device:
        return codec.encode_vector(summary.cpu().numpy()), codec.encode(patch.cpu().numpy())
    with torch.inference_mode():
        parts = codec.encode_vector_torch(summary), codec.encode_torch(patch)
        return tuple({n: v.cpu().numpy() for n, v in d.items()} for d in parts)


def _component_buffers(spec: dict, c: int, k: int) -> dict[str, np.ndarray]:
    return {name: np.zeros((c, k, *suffix), dtype) for name, (dtype, suffix) in spec.items()}


def _put(buffers: dict[str, np.ndarray], rows: np.ndarray, parts: dict[str, np.ndarray]) -> None:
    """Copy a batch's components [b, *suffix] into the chunk's buffers at flat (image * K + view) rows."""
    for name, part in parts.items():
        flat = buffers[name].reshape(-1, *buffers[name].shape[2:])  # [C, K, *suffix] -> [C*K, *suffix], a view
        flat[rows] = part


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
    if is_url(cfg.out) and cfg.rank != 0:
        wait_for_rank0(f"teacher {teacher.spec.name} in {cfg.out}", lambda: store.teacher_ready(teacher.spec.name))
    group = store.open_or_create_teacher(teacher_identity(teacher, resolutions, codec), codec)
    summary = ExtractSummary(teacher.spec.name)
    blocks = grow_views(cfg, group, codec, summary)
    claim = claim_rank(group.chunks.claims_dir, cfg.rank, cfg.world_size)
    try:
        for block in blocks:  # the teacher's own views, then each view block
            if cfg.retry_failed:
                summary.retried += retry_read_failures(block, cfg.rank, cfg.world_size)
            _run_chunks(cfg, block, teacher, resolutions, summary, claim, progress)
        summary.not_done = sum(int((~block.chunks.done_flags()).sum()) for block in blocks)
        if not summary.not_done:  # consolidate the image statuses once, for fast `info` and trainer starts
            FeatureStore.open(cfg.out).image_status(group.name, save=True)
        return summary
    finally:
        if claim is not None:
            claim.release()


def grow_views(cfg: ExtractConfig, group: TeacherGroup, codec: Codec, summary: ExtractSummary) -> list[TeacherGroup]:
    """The teacher's blocks, with a view block added when ``--views`` asks for more views than it
    holds (on object storage rank 0 adds it and the other ranks wait)."""
    held = group.blocks.total_views
    if cfg.views < held and cfg.views_given:
        raise StoreMismatchError(f"--views {cfg.views}: teacher {group.name} already holds {held} views per image in "
                                 f"{cfg.out}; --views can only grow a store: pass --views {held} or more, or leave "
                                 "--views out to resume with what it holds")
    if held >= cfg.views:
        return list(group.blocks)
    if is_url(cfg.out) and cfg.rank != 0:
        wait_for_rank0(f"views {held}..{cfg.views - 1} of teacher {group.name} in {cfg.out}",
                       lambda: group.blocks.refresh()[-1].view_stop >= cfg.views)
        return list(group.blocks)
    summary.added_views = f"{held}..{cfg.views - 1}"
    return group.blocks.add_views(cfg.views, codec)


def default_writers() -> int:
    """Writer threads when ``--writers`` is not given: a quarter of the cores, 2..4.

    Each write already compresses its inner chunks on zarr's thread pool (numcodecs' zstd releases
    the GIL), so more writers mostly overlap fsyncs and manifest records; each one costs a chunk of
    host memory (``writers + 1`` chunks of components are held at most)."""
    return max(2, min(4, (os.cpu_count() or 1) // 4))


def _run_chunks(cfg: ExtractConfig, group: TeacherGroup, teacher: Encoder, resolutions: list[int],
                summary: ExtractSummary, claim, progress) -> None:
    """Teacher + encode on the main thread; zstd + write + fsync of chunks on a pool of writer threads.

    At most ``writers`` chunks are queued or being written while the teacher fills the next one, so
    host memory holds at most ``writers + 1`` chunks of encoded components: at 256 images x 4 views x
    T=1024 x D=1536, 3.2 GB per chunk for compact/fp16 (2 B/value), 1.6 GB for int8 (the float32
    chunk it replaces was 6.4 GB). A failed write stops the run (StoreWriteError naming the chunk;
    that chunk is not marked done; chunks already in flight finish and are marked done)."""
    store = group.store
    pending = group.chunks.pending_chunks(cfg.rank, cfg.world_size)
    if progress is not None:
        progress.reset(total=sum(len(store.chunk_rows(c)) for c in pending))
    device = default_device(cfg)
    teacher.to(device)
    writers = cfg.writers or default_writers()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="eupe-writer") as pool:
        in_flight: list[Future] = []
        builder: ChunkBuilder | None = None
        for piece in _batches(group, pending, resolutions, cfg):
            if builder is None:  # pieces come in chunk order, each chunk's in row order
                builder = ChunkBuilder(group, piece.chunk, resolutions)
            builder.add(piece, teacher, cfg.batch_size, device)
            if claim is not None:
                claim.heartbeat()  # per teacher batch (a utime): a slow chunk never looks abandoned
            if progress is not None:
                progress.update(len(piece.status))
            if not builder.complete:
                continue
            result, builder = builder.result(), None
            in_flight = _drain(in_flight, keep=writers - 1, summary=summary)
            in_flight.append(pool.submit(_write, group, result))
            _count(summary, result, resolutions, group)
        _drain(in_flight, keep=0, summary=summary)
    summary.elapsed_s += time.perf_counter() - start


def retry_read_failures(group: TeacherGroup, rank: int, world_size: int) -> int:
    """Mark this rank's done chunks that hold read-error failures as not done; returns how many."""
    status = group.reader.status()
    failed = np.flatnonzero(status == FAILED)
    if not len(failed):
        return 0
    errors = group.array("error")[:]
    per = group.store.params.images_per_chunk
    chunks = sorted({int(r) // per for r in failed if str(errors[r]).startswith(READ_ERROR)})
    mine = [c for c in chunks if c % world_size == rank]
    for chunk in mine:
        group.writer.reset_chunk(chunk)
    return len(mine)


def _batches(group: TeacherGroup, chunks: list[int], resolutions: list[int],
             cfg: ExtractConfig) -> Iterator[ChunkPixels]:
    if not chunks:
        return iter(())
    dataset = ChunkImages(group, chunks, resolutions, cfg.max_pixels, cfg.batch_size)
    workers = cfg.num_workers
    if workers:
        warm_up_kernels()  # forked workers inherit the renderer's compiled kernels
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        prefetch_factor=2 if workers else None, persistent_workers=False)
    return iter(loader)


def _write(group: TeacherGroup, result: ChunkResult) -> int:
    try:
        return group.writer.write_chunk(result)
    except Exception as err:  # noqa: BLE001 - re-raised with the chunk named
        rows = group.store.chunk_rows(result.chunk)
        raise StoreWriteError(
            f"writing chunk {result.chunk} (images {rows.start}..{rows.stop - 1}) failed: {err}; "
            "it was not marked done, re-run the same command to retry"
        ) from err


def _drain(futures: list[Future], keep: int, summary: ExtractSummary) -> list[Future]:
    """Collect finished writes; wait (oldest first) until at most ``keep`` are in flight. A write
    that failed raises here at once, whichever its place in the queue."""
    for future in [f for f in futures if f.done()]:
        summary.bytes_written += future.result()  # raises a failed chunk's StoreWriteError
        futures.remove(future)
    while len(futures) > keep:
        summary.bytes_written += futures.pop(0).result()
    return futures


def _count(summary: ExtractSummary, result: ChunkResult, resolutions: list[int], group: TeacherGroup) -> None:
    ok = int((result.status == OK).sum())
    k = group.block_views
    summary.images += ok
    summary.failed += int((result.status == FAILED).sum())
    summary.views += ok * k
    for resolution in resolutions:
        h, w = group.grids[resolution]
        summary.values += ok * k * (h * w * group.dim + group.summary_dim)


def load_teachers(cfg: ExtractConfig) -> list[Encoder]:
    """Build every requested teacher and check every option first, so mistakes fail before any work."""
    if cfg.weights is not None and len(cfg.teachers) > 1:
        raise StoreError("--weights applies to one teacher; run one extract per teacher when passing weights")
    get_codec(cfg.codec)
    teachers = [create_teacher(name, cfg.weights, cfg.test_scale) for name in cfg.teachers]
    check_request(cfg, teachers)
    return teachers
