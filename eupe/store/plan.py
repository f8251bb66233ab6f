"""Paper-scale planning: store size, files, read bandwidth and CPU cores per GPU, from costs measured here.

:func:`measure_costs` writes a few realistic feature views (spatially smooth low-rank tokens,
log-normal channel scales, a few outlier channels, as ViT features have) of every teacher shape
with every codec into a temporary real feature store through the real writer, then times on one
CPU thread (median CPU time of single calls): encode + compress + write per view (mean), reading
one (image, view) of stored components
(what the trainer's loader does when the step decodes on the GPU), reading + decoding it (decode
on the CPU), and the student image path (JPEG decode + ``render`` of one augmented view at the
student resolution, on a real bundled photo when one is installed). Stored bytes per view come
from the store's own manifest. :func:`estimate` turns those per-view costs into the figures of a
run (``N`` images x ``K`` views, a student rate per GPU, GPUs) with plain arithmetic.

Reads are timed with the temporary store hot in the page cache: storage latency and bandwidth are
not included (the bandwidth the store must deliver is printed instead).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from eupe.store.codecs.haar import grid_shape
from eupe.store.codecs.registry import get_codec
from eupe.store.layout import StoreError
from eupe.store.stats import DEFAULT_SAMPLE, RunningMoments
from eupe.store.teacher_group.identity import TeacherIdentity, chunk_array_names
from eupe.store.teacher_group.writer import ChunkResult

MAX_VALUES_PER_VIEW = 32 * 1024 * 1024  # T*D; larger views would not fit the measurement in memory
_IMAGES, _VIEWS, _READS = 2, 2, 15  # the temporary store: 2 images x 2 views per shape; timed reads (median)


@dataclass(frozen=True)
class Shape:
    """One teacher's output per view: ``tokens`` patch tokens of width ``dim`` and one summary token."""

    name: str
    tokens: int
    dim: int
    summary_dim: int

    def check(self) -> None:
        if min(self.tokens, self.dim, self.summary_dim) < 1 or self.tokens * self.dim > MAX_VALUES_PER_VIEW:
            raise StoreError(f"shape {self.name}: tokens x dim must be positive and at most {MAX_VALUES_PER_VIEW} "
                             f"values per view, got {self.tokens} x {self.dim}")

    @property
    def values(self) -> int:
        return self.tokens * self.dim + self.summary_dim


@dataclass
class ViewCost:
    """Measured per-view costs of one teacher shape with one codec (CPU ms on one thread)."""

    bytes_per_view: float
    encode_ms: float  # codec encode + zstd + write of one view (extraction's CPU cost)
    read_ms: float  # read + decompress one (image, view) of stored components (decode on the GPU)
    read_decode_ms: float  # the same plus Codec.decode to float32 (decode on the CPU)
    stats_ms: float  # `eupe-cache stats` per sampled view: read + decode + float64 moments (one thread)
    files_per_chunk: int  # files one chunk of images holds for this teacher (arrays + manifest)


@dataclass(kw_only=True)
class Costs:
    """Everything :func:`estimate` needs, measured by :func:`measure_costs`."""

    shapes: list[Shape]
    codecs: list[str]
    per_view: dict[str, dict[str, ViewCost]]  # shape name -> codec -> costs
    render_ms: float  # JPEG decode + render of one augmented view at the student resolution
    render_source: str  # which image was rendered
    seconds: float = 0.0  # how long measuring took
    notes: list[str] = field(default_factory=list)


def realistic_views(rng: np.random.Generator, views: int, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """([views, summary_dim], [views, T, D]) float32 features shaped like a ViT's: per-channel offsets and
    log-normal scales with 1% outlier channels, heavy-tailed (Student t, 3 dof) spatially smooth rank-16
    structure plus noise. Calibrated on DINOv2-S (bench/plan.py prints both): neighbour-token correlation
    0.74 for 0.74 real; stored bytes/value within about 20% of the real features' for every codec."""
    h, w = grid_shape(shape.tokens)
    rank, coarse_side = 16, 6
    scale = rng.lognormal(0.0, 0.3, shape.dim)
    scale[rng.choice(shape.dim, max(1, shape.dim // 100), replace=False)] *= 3.0  # outlier channels
    offset = rng.normal(0.0, 0.5, shape.dim) * scale
    coarse = rng.standard_t(3, size=(views, rank, coarse_side, coarse_side))
    ys, xs = np.linspace(0, coarse_side - 1, h), np.linspace(0, coarse_side - 1, w)
    smooth = np.stack([[_bilinear(c, ys, xs) for c in v] for v in coarse])  # [V, rank, h, w]
    smooth = smooth.reshape(views, rank, h * w).transpose(0, 2, 1)  # [V, rank, T] -> [V, T, rank]
    basis = rng.standard_t(3, size=(rank, shape.dim)) / math.sqrt(rank)
    noise = rng.standard_t(3, size=(views, shape.tokens, shape.dim))
    patch = offset + scale * (0.9 * smooth @ basis + 0.35 * noise)
    summary = rng.normal(size=(views, shape.summary_dim)) * rng.lognormal(0.0, 0.3, shape.summary_dim)
    return summary.astype(np.float32), patch.astype(np.float32)


def _bilinear(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """[n, n] -> [len(ys), len(xs)] bilinear interpolation at fractional grid positions."""
    rows = np.stack([np.interp(xs, np.arange(grid.shape[1]), r) for r in grid])  # [n, w]
    return np.stack([np.interp(ys, np.arange(grid.shape[0]), c) for c in rows.T], axis=1)  # [h, w]


def measure_costs(shapes: list[Shape], codecs: list[str], student_resolution: int = 256, seed: int = 0) -> Costs:
    """Per-view costs of every (shape, codec) through a temporary real store, and the render cost."""
    for shape in shapes:
        shape.check()
    names = [s.name for s in shapes]
    if not codecs or not shapes or len(set(codecs)) < len(codecs) or len(set(names)) < len(names):
        raise StoreError(f"plan needs at least one teacher and one codec, each named once (teachers {names}, "
                         f"codecs {codecs})")
    codec_objects = [get_codec(name) for name in codecs]  # unknown names fail before any work
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eupe-plan-") as tmp, _one_thread():
        store = _temporary_store(Path(tmp))
        per_view = {}
        for shape in shapes:
            features = realistic_views(np.random.default_rng(seed), _IMAGES * _VIEWS, shape)  # once per shape
            per_view[shape.name] = {c.name: _measure(store, shape, c, features, np.random.default_rng(seed))
                                    for c in codec_objects}
        render_ms, source = _render_ms(student_resolution, seed)
    return Costs(shapes=shapes, codecs=codecs, per_view=per_view, render_ms=render_ms, render_source=source,
                 seconds=time.perf_counter() - start)


def _temporary_store(root: Path):
    """A real feature store over a one-shard dataset of ``_IMAGES`` small JPEGs."""
    from eupe.data.shards import index_shards, write_shards
    from eupe.store.store import FeatureStore, StoreParams
    from eupe.views.policy import ViewPolicy

    rng = np.random.default_rng(0)
    samples = [(f"img{i}", _jpeg(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "jpg", None)
               for i in range(_IMAGES)]
    shards = write_shards(samples, str(root / "data-%06d.tar"), per_shard=_IMAGES)
    params = StoreParams(_VIEWS, 0, ViewPolicy(), images_per_chunk=_IMAGES)
    return FeatureStore.create(root / "store.zarr", index_shards(shards), params, None)


def _measure(store, shape: Shape, codec, features: tuple[np.ndarray, np.ndarray],
             rng: np.random.Generator) -> ViewCost:
    """Write one chunk of realistic views, then time reads of single (image, view) pairs."""
    from eupe.store.teacher_group.create import create_teacher
    from eupe.views.spec import VIEW_DIM

    h, w = grid_shape(shape.tokens)
    resolution = 16 * max(h, w)  # a label: the store keys targets by resolution
    identity = TeacherIdentity(name=f"{shape.name}-{codec.name}".replace("/", "_"), fingerprint="0" * 64,
                               preprocessing={}, resolutions=(resolution,), grids=((h, w),), dim=shape.dim,
                               summary_dim=shape.summary_dim, codec=codec.to_dict())
    group = create_teacher(store, identity, codec)
    summary, patch = features
    result = ChunkResult(0, np.zeros((_IMAGES, _VIEWS, VIEW_DIM)), np.ones(_IMAGES, np.uint8), [""] * _IMAGES,
                         {resolution: summary.reshape(_IMAGES, _VIEWS, -1)},
                         {resolution: patch.reshape(_IMAGES, _VIEWS, shape.tokens, shape.dim)})
    encode = _cpu_ms(lambda: group.writer.write_chunk(result)) / (_IMAGES * _VIEWS)
    names = group.reader.target_names(resolution)
    columns = [group.array_names.index(n) for n in names["summary"] + names["patch"]]
    stored = float(group.chunks.manifest_rows()[0, columns, 0].sum()) / (_IMAGES * _VIEWS)
    picks = [(int(r), int(k)) for r, k in zip(rng.integers(_IMAGES, size=_READS), rng.integers(_VIEWS, size=_READS))]
    # open files and shard indexes once, as a warm loader has
    group.reader.targets(picks[0][0], resolution, picks[0][1])
    read = _median_ms([lambda r=r, k=k: group.reader.read_parts(r, resolution, k) for r, k in picks])
    decoded = _median_ms([lambda r=r, k=k: group.reader.targets(r, resolution, k) for r, k in picks])
    moments = {"summary": RunningMoments(shape.summary_dim), "patch": RunningMoments(shape.dim)}
    stats = _median_ms([lambda r=r, k=k: _update(moments, group.reader.targets(r, resolution, k)) for r, k in picks])
    files = len(chunk_array_names([resolution], codec, shape.dim, shape.summary_dim, {resolution: (h, w)})) + 1
    return ViewCost(stored, encode, read, decoded, stats, files)


def _update(moments: dict, targets: dict) -> None:
    """What `eupe-cache stats` does per sampled view after reading and decoding it."""
    for kind, m in moments.items():
        m.update(targets[kind])


def _render_ms(resolution: int, seed: int) -> tuple[float, str]:
    """CPU ms to decode a JPEG and render one augmented view at ``resolution`` (a real photo if installed)."""
    from eupe.assets import bundled_photos, encode_jpeg
    from eupe.views.policy import ViewPolicy, sample_views
    from eupe.views.renderer import render
    from eupe.views.source import open_image

    photos = [p for p in bundled_photos() if p.key == "skimage_coffee"]  # 600x400, like an ImageNet photo
    if photos:
        data, source = encode_jpeg(photos[0].path, 500), f"{photos[0].key} photo, 500 px JPEG"
    else:
        rng = np.random.default_rng(seed)
        data, source = _jpeg(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)), "noise JPEG 500x375"
    height, width = open_image(data).shape[1:]
    views = sample_views(ViewPolicy(), seed, "plan", height, width, _READS)
    render(open_image(data), views[0], resolution)  # warm-up
    ms = _median_ms([lambda v=v: render(open_image(data), v, resolution) for v in views])
    return ms, f"{source} ({len(data) / 1e3:.0f} kB) -> {resolution} px"


def _jpeg(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _median_ms(works: list) -> float:
    """Median CPU milliseconds of each call (robust to other processes' load on a shared machine)."""
    return float(np.median([_cpu_ms(work) for work in works]))


def _cpu_ms(work) -> float:
    """CPU milliseconds (all threads of this process) that ``work()`` takes."""
    start = time.process_time()
    work()
    return (time.process_time() - start) * 1e3


class _one_thread:
    """torch on one thread while measuring (per-core costs), restored afterwards."""

    def __enter__(self) -> None:
        import torch

        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        import torch

        torch.set_num_threads(self.threads)


@dataclass(frozen=True, kw_only=True)
class Run:
    """The run being planned."""

    images: int = 1_281_167  # ImageNet-1k train
    views: int = 4
    samples_per_s: float = 3000.0  # per GPU
    gpus: int = 8
    images_per_chunk: int = 16
    image_bytes: int = 110_000  # mean ImageNet-1k train JPEG
    stats_views: int = DEFAULT_SAMPLE  # `eupe-cache stats` default sample


def estimate(run: Run, costs: Costs) -> list[dict]:
    """One row per codec: per-teacher bytes/view and files, store size, read bandwidth and CPU per GPU."""
    chunks = -(-run.images // run.images_per_chunk)
    rows = []
    for codec in costs.codecs:
        per = {s.name: costs.per_view[s.name][codec] for s in costs.shapes}
        view_bytes = sum(c.bytes_per_view for c in per.values())
        cpu_decode = costs.render_ms + sum(c.read_decode_ms for c in per.values())
        gpu_decode = costs.render_ms + sum(c.read_ms for c in per.values())
        rows.append({
            "codec": codec,
            "teachers": {s.name: {**asdict(per[s.name]), "bytes_per_value": per[s.name].bytes_per_view / s.values,
                                  "store_bytes": run.images * run.views * per[s.name].bytes_per_view,
                                  "files": chunks * per[s.name].files_per_chunk,
                                  "stats_s_one_core": run.stats_views * per[s.name].stats_ms / 1e3,
                                  "full_stats_h_one_core": run.images * run.views * per[s.name].stats_ms / 3.6e6}
                         for s in costs.shapes},
            "bytes_per_view": view_bytes,
            "store_bytes": run.images * run.views * view_bytes,
            "read_bytes_per_s_per_gpu": run.samples_per_s * (view_bytes + run.image_bytes),
            "cpu_ms_per_sample": {"decode_on_cpu": cpu_decode, "decode_on_gpu": gpu_decode},
            "cores_per_gpu": {"decode_on_cpu": run.samples_per_s * cpu_decode / 1e3,
                              "decode_on_gpu": run.samples_per_s * gpu_decode / 1e3},
            "extract_cpu_ms_per_view": sum(c.encode_ms for c in per.values()),
        })
    return rows
