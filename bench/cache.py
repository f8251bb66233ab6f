"""Feature-store benchmark on real teacher features (views of the bundled photos).

Part 1 (always), for every real teacher here (dinov2s_imgfocus, effnet_lite0) and every codec:
stored bytes per value (zarr zstd at the store's level for codec components + crc32c), per-token
cosine to the raw float32 teacher output in raw space and in the normalized space the loss sees
((x - mean) / std per coordinate, stats of the raw features), the smooth-L1 floor (beta 1) the
codec puts under the loss, and the CPU cost of encode + zstd per view (one thread) against the
teacher's forward time per view; then the default codec: the smallest one keeping normalized
cosine >= 0.999 (patch and summary) on every teacher.

Part 1b (always; alone with ``--write-path``), the extraction write path as it runs now: encode of
each forward batch where the teacher ran (numpy for a CPU teacher; ``Codec.encode_torch`` on a GPU,
timed here on CPU tensors) plus zstd of every component per view (one writer thread), CPU ms per view, for every codec on
dinov2s_imgfocus (as % of its forward) and on synthetic T=1024, D=1536 tokens (``bench/datapath.py``'s
ViT-like features); then zstd throughput of a pool of 1 and 2 writer threads side by side (numcodecs
releases the GIL while compressing, so writers scale with cores).

Part 2 (``--store``): through the real extractor and store for dinov2s_imgfocus: extraction
throughput vs teacher-forward-only throughput, and the time to read + decode one sample's cached
targets vs decoding and rendering its JPEG.

Run:  .venv/bin/python bench/cache.py  [--views 4] [--codecs fp16,int8,...] [--store] [--write-path] [--writers N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # numpy codec timings on one core, as a writer thread

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.assets import bundled_photos, imagenet_photos, write_photo_shards  # noqa: E402
from eupe.data.shards import ShardReader  # noqa: E402
from eupe.models.features import run_teacher  # noqa: E402
from eupe.models.teachers import create_teacher  # noqa: E402
from eupe.store.codecs.metrics import fidelity, token_cosine  # noqa: E402
from eupe.store.codecs.registry import CODECS, get_codec  # noqa: E402
from eupe.store.codecs.storage import stored_nbytes  # noqa: E402
from eupe.store.layout import TARGET_ZSTD_LEVEL  # noqa: E402
from eupe.views.policy import ViewPolicy, sample_views  # noqa: E402
from eupe.views.renderer import render, render_views  # noqa: E402
from eupe.views.source import open_image  # noqa: E402
from eupe.views.spec import ViewSpec  # noqa: E402

if TYPE_CHECKING:
    from eupe.store.extract import ExtractConfig
    from eupe.store.store import FeatureStore

TEACHER = "dinov2s_imgfocus"
REAL_TEACHERS = ("dinov2s_imgfocus", "effnet_lite0")
MIN_NORM_COSINE = 0.999


# -- part 1: codec fidelity on every real teacher ------------------------------------------------


def teacher_features(name: str, views: int, batch: int) -> tuple[np.ndarray, float]:
    """Raw fp32 teacher outputs [V, 1+T, D] (summary first) on ``views`` views per photo; forward ms/view."""
    teacher = create_teacher(name)
    resolution = teacher.spec.resolution
    pixels = []
    for photo in bundled_photos() + imagenet_photos():
        image = open_image(photo.path.read_bytes())
        specs = sample_views(ViewPolicy(), 0, photo.key, image.shape[1], image.shape[2], views)
        pixels.append(render_views(image, specs, resolution))
    pixels = torch.cat(pixels)  # [V, 3, resolution, resolution]
    run_teacher(teacher, pixels[:batch], batch, torch.device("cpu"))  # warm-up
    start = time.process_time()  # CPU time of every thread: what the forward costs, whatever the load
    summary, patch = run_teacher(teacher, pixels, batch, torch.device("cpu"))
    forward_ms = 1000 * (time.process_time() - start) / len(pixels)
    return np.concatenate([summary[:, None], patch], axis=1), forward_ms  # [V, 1+T, D]


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)  # [..., D] -> [n, D]
    return flat.mean(0), np.maximum(flat.std(0), 1e-6)


def _zstd_all(parts: dict) -> int:
    from numcodecs import Zstd

    zstd = Zstd(level=TARGET_ZSTD_LEVEL)  # as the store writes codec components
    return sum(len(zstd.encode(np.ascontiguousarray(p))) for p in parts.values())


def codec_fidelity(codec_name: str, raw: np.ndarray) -> dict:
    """Bytes, raw/normalized fidelity of patch and summary tokens, encode+zstd and decode ms/view."""
    codec, summary, patch = get_codec(codec_name), raw[:, 0], raw[:, 1:]
    start = time.thread_time()  # CPU time of this (single) thread
    parts, vparts = codec.encode(patch), codec.encode_vector(summary)
    _zstd_all(parts), _zstd_all(vparts)
    encode_ms = 1000 * (time.thread_time() - start) / len(raw)
    start = time.thread_time()
    for i in range(len(raw)):  # one view at a time, as a DataLoader worker does
        codec.decode({k: v[i] for k, v in parts.items()}), codec.decode_vector({k: v[i] for k, v in vparts.items()})
    decode_ms = 1000 * (time.thread_time() - start) / len(raw)
    nbytes = stored_nbytes(parts, chunks_views=4) + stored_nbytes(vparts, chunks_views=4)
    return {"codec": codec_name, "bytes_per_value": nbytes / raw.size, "encode_ms": encode_ms, "decode_ms": decode_ms,
            "patch": fidelity(patch, codec.decode(parts), *_stats(patch)),
            "summary": fidelity(summary, codec.decode_vector(vparts), *_stats(summary))}


def passes(row: dict) -> bool:
    return min(row["patch"]["norm_cosine"], row["summary"]["norm_cosine"]) >= MIN_NORM_COSINE


def print_fidelity(name: str, raw: np.ndarray, forward_ms: float, rows: list[dict]) -> None:
    v, t, d = raw.shape
    print(f"\n### {name}: {v} views, {t - 1} patch tokens + summary, D={d}; teacher forward "
          f"{forward_ms:.1f} CPU ms/view (all {torch.get_num_threads()} threads); codec columns: CPU ms of one thread")
    print("| codec | B/value | patch cos raw | patch cos norm (min) | smooth-L1 floor | summary cos raw | "
          "summary cos norm | encode+zstd CPU ms/view (vs forward) | decode CPU ms/view |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, s = r["patch"], r["summary"]
        print(f"| {r['codec']} | {r['bytes_per_value']:.3f} | {p['raw_cosine']:.5f} | {p['norm_cosine']:.5f} "
              f"({p['norm_cosine_min']:.4f}) | {p['smooth_l1']:.5f} | {s['raw_cosine']:.5f} | {s['norm_cosine']:.5f} | "
              f"{r['encode_ms']:.2f} ({100 * r['encode_ms'] / forward_ms:.0f}%) | {r['decode_ms']:.2f} |")


def choose_default(results: dict[str, list[dict]]) -> None:
    """Print the smallest codec (total B/value over teachers) keeping normalized cosine >= 0.999 everywhere."""
    names = [r["codec"] for r in next(iter(results.values()))]
    ok = [n for n in names if all(passes(r) for rows in results.values() for r in rows if r["codec"] == n)]
    total = {n: sum(r["bytes_per_value"] for rows in results.values() for r in rows if r["codec"] == n) for n in ok}
    print(f"\ncodecs with normalized cosine >= {MIN_NORM_COSINE} (patch and summary) on every teacher: "
          + ", ".join(f"{n} ({total[n]:.3f} B/value summed over teachers)" for n in ok))
    for teacher, rows in results.items():
        best = min((r for r in rows if r["codec"] in ok), key=lambda r: r["bytes_per_value"], default=None)
        print(f"  smallest on {teacher}: {best['codec'] if best else 'none'}")
    print(f"default codec: {min(total, key=total.get) if total else 'none'}")


def fidelity_part(args: argparse.Namespace) -> None:
    print(f"machine: {describe()}")
    results = {}
    for name in REAL_TEACHERS:
        raw, forward_ms = teacher_features(name, args.views, args.batch_size)
        if name == TEACHER:
            write_path_part(args, raw, forward_ms)
        results[name] = [codec_fidelity(c, raw) for c in args.codecs.split(",")]
        print_fidelity(name, raw, forward_ms, results[name])
        if name == TEACHER:  # a teacher without a final norm (PE-lang): a few channels 100x the rest
            outliers = raw.copy()
            outliers[..., [7, 100, 300]] *= 100.0
            print_fidelity(f"{name} with channels 7, 100, 300 x100 (outlier test, not a real teacher)",
                           outliers, forward_ms, [codec_fidelity(c, outliers) for c in args.codecs.split(",")])
    choose_default(results)


# -- part 1b: the extraction write path (encode on the teacher's device, zstd in writer threads) ---


def write_cost(codec_name: str, raw: np.ndarray, batch: int) -> dict:
    """CPU ms per view of extraction's encode, per forward batch of ``batch`` views, as numpy (what a CPU
    teacher runs) and as ``encode_torch`` on CPU tensors (the formulas a GPU teacher runs; process CPU
    time: every torch thread), and zstd of every component of one view at a time (thread CPU time:
    one writer thread)."""
    from numcodecs import Zstd

    from eupe.store.extract import encode_batch

    codec, x = get_codec(codec_name), torch.from_numpy(raw)  # [V, 1+T, D], summary first
    times = {}
    for label, on_device in (("numpy_ms", False), ("torch_ms", True)):
        encode_batch(codec, x[:batch, 0], x[:batch, 1:], on_device)  # warm-up
        start = time.process_time()
        parts = [encode_batch(codec, x[i:i + batch, 0], x[i:i + batch, 1:], on_device) for i in range(0, len(x), batch)]
        times[label] = 1000 * (time.process_time() - start) / len(x)
    host = [np.concatenate([p[j][n] for p in parts]) for j in (0, 1) for n in parts[0][j]]
    zstd, start = Zstd(level=TARGET_ZSTD_LEVEL), time.thread_time()
    for i in range(len(x)):
        for component in host:
            zstd.encode(np.ascontiguousarray(component[i]))
    zstd_ms = 1000 * (time.thread_time() - start) / len(x)
    return {"codec": codec_name, **times, "zstd_ms": zstd_ms, "blocks": host}


def pool_views_per_s(blocks: list[np.ndarray], writers: int, repeats: int = 3) -> tuple[float, float]:
    """Views per second (wall) that ``writers`` threads compress with zstd (best of ``repeats``), and the
    CPU seconds the process spent per wall second meanwhile (above 1 only if zstd releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from numcodecs import Zstd

    views, zstd = len(blocks[0]), Zstd(level=TARGET_ZSTD_LEVEL)
    work = lambda i: [zstd.encode(np.ascontiguousarray(b[i])) for b in blocks]  # noqa: E731
    best, busy = float("inf"), 0.0
    with ThreadPoolExecutor(writers) as pool:
        for _ in range(repeats):
            start, cpu = time.perf_counter(), time.process_time()
            list(pool.map(work, [i % views for i in range(4 * views)]))
            wall = time.perf_counter() - start
            busy = max(busy, (time.process_time() - cpu) / wall)
            best = min(best, wall)
    return 4 * views / best, busy


def print_write_path(title: str, rows: list[dict], forward_ms: float | None) -> None:
    print(f"\n### extraction write path, {title}")
    print("| codec | encode numpy (CPU teacher) ms/view | encode torch on CPU (GPU path's formulas) ms/view | "
          "zstd (1 writer thread) ms/view | CPU extraction encode+zstd ms/view | vs teacher forward |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        total = r["numpy_ms"] + r["zstd_ms"]
        share = f"{100 * total / forward_ms:.1f}%" if forward_ms else "n/a"
        print(f"| {r['codec']} | {r['numpy_ms']:.2f} | {r['torch_ms']:.2f} | {r['zstd_ms']:.2f} | "
              f"{total:.2f} | {share} |")


def write_path_part(args: argparse.Namespace, raw: np.ndarray, forward_ms: float) -> None:
    """Part 1b on the real teacher's features ``raw`` [V, 1+T, D] and on synthetic T=1024, D=1536 tokens."""
    from datapath import vit_like

    codecs = args.codecs.split(",")
    print_write_path(f"{TEACHER} ({raw.shape[1] - 1} patch tokens + summary, D={raw.shape[2]}; forward "
                     f"{forward_ms:.1f} CPU ms/view, all {torch.get_num_threads()} threads)",
                     [write_cost(c, raw, args.batch_size) for c in codecs], forward_ms)
    big = vit_like(args.big_views, 1024, 1536)  # [V, T, D]
    big = np.concatenate([big[:, :1], big], axis=1)  # [V, 1+T, D]: a summary token in front
    rows = [write_cost(c, big, 8) for c in codecs]
    print_write_path(f"synthetic ViT-like T=1024, D=1536 ({args.big_views} views; no teacher of that size "
                     "runs here)", rows, None)
    compact = next((r for r in rows if r["codec"] == "compact"), rows[0])
    (one, busy1), (two, busy2) = (pool_views_per_s(compact["blocks"], n) for n in (1, 2))
    print(f"\nzstd of {compact['codec']} components at T=1024, D=1536, side by side: 1 writer {one:.1f} views/s "
          f"({busy1:.2f} CPU s per wall s), 2 writers {two:.1f} views/s ({busy2:.2f} CPU s per wall s; "
          f"{two / one:.2f}x) on {os.cpu_count()} cores")


# -- part 2: the real extractor and store -----------------------------------------------------------


def raw_outputs(store: "FeatureStore", teacher, resolution: int, batch: int) -> tuple[np.ndarray, float]:
    """Raw fp32 outputs [N, K, 1+T, D] on the store's views, and forward-only views/s."""
    reader, k = ShardReader(store.shard_index()), store.params.views_per_image
    pixels = []
    for row, key in enumerate(store.keys):
        image = open_image(reader.read(row))
        views = sample_views(store.params.policy, store.params.seed, str(key), image.shape[1], image.shape[2], k)
        pixels.append(render_views(image, views, resolution))
    pixels = torch.cat(pixels)  # [N*K, 3, resolution, resolution]
    run_teacher(teacher, pixels[:batch], batch, torch.device("cpu"))  # warm-up
    start = time.perf_counter()
    summary, patch = run_teacher(teacher, pixels, batch, torch.device("cpu"))
    rate = len(pixels) / (time.perf_counter() - start)
    tokens = np.concatenate([summary[:, None], patch], axis=1)  # [N*K, 1+T, D]
    return tokens.reshape(len(store.keys), k, *tokens.shape[1:]), rate


def codec_row(cfg: "ExtractConfig", teacher, raw: np.ndarray, forward_rate: float) -> dict:
    from eupe.store.extract import extract_teacher, open_or_create_store

    store = open_or_create_store(cfg, progress=False)
    summary = extract_teacher(cfg, store, teacher)
    group = store.teacher(TEACHER)
    resolution = group.resolutions[0]
    decoded = [group.reader.targets(r, resolution) for r in range(store.num_images)]
    approx = np.stack([np.concatenate([d["summary"][:, None], d["patch"].reshape(*d["patch"].shape[:1], -1, group.dim)], 1)
                       for d in decoded])  # [N, K, 1+T, D]
    cos = token_cosine(raw, approx)
    return {"codec": cfg.codec, "bytes_per_value": summary.bytes_written / summary.values,
            "mean_cos": float(cos.mean()), "min_cos": float(cos.min()),
            "extract_rate": summary.views / summary.elapsed_s, "ratio": summary.views / summary.elapsed_s / forward_rate,
            "read_ms": read_ms(group, resolution)}


def read_ms(group, resolution: int, repeats: int = 60) -> float:
    """Median ms to read and decode one (image, view) of cached targets from the store."""
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        row, k = int(rng.integers(group.store.num_images)), int(rng.integers(group.store.params.views_per_image))
        start = time.perf_counter()
        group.reader.targets(row, resolution, k)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def jpeg_ms(store: "FeatureStore", resolution: int, repeats: int = 60) -> float:
    """Median ms to decode a sample's JPEG and render one of its views."""
    reader = ShardReader(store.shard_index())
    group = store.teacher(TEACHER)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        row, k = int(rng.integers(store.num_images)), int(rng.integers(store.params.views_per_image))
        data, view = reader.read(row), ViewSpec.from_array(group.reader.views(row)[k])
        start = time.perf_counter()
        render(open_image(data), view, resolution)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--views", type=int, default=4, help="views per image")
    parser.add_argument("--codecs", default=",".join(CODECS.names()))
    parser.add_argument("--store", action="store_true", help="also run part 2 (extractor and store)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-side", type=int, default=512, help="downscale photos to this longer side")
    parser.add_argument("--images-per-chunk", type=int, default=4,
                        help="part 2 (a few dozen photos: small chunks, so the writers overlap the teacher)")
    parser.add_argument("--writers", type=int, default=None, help="extraction writer threads (part 2)")
    parser.add_argument("--write-path", action="store_true", help="only part 1b (and part 2 with --store)")
    parser.add_argument("--big-views", type=int, default=16, help="synthetic T=1024, D=1536 views in part 1b")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)  # the teacher forward uses every core
    if args.write_path:
        print(f"machine: {describe()}")
        write_path_part(args, *teacher_features(TEACHER, args.views, args.batch_size))
    else:
        fidelity_part(args)
    if args.store:
        store_part(args)


def store_part(args: argparse.Namespace) -> None:
    from eupe.store.extract import ExtractConfig, open_or_create_store  # part 2 only: the store API may move
    from eupe.store.store import FeatureStore

    teacher = create_teacher(TEACHER)
    with tempfile.TemporaryDirectory() as tmp:
        photos = bundled_photos() + imagenet_photos()
        write_photo_shards(Path(tmp) / "shards", photos, per_shard=8, max_side=args.max_side)
        data = str(Path(tmp) / "shards" / "photos-{000000..000003}.tar")
        rows = []
        forward_rate = raw = None
        for codec in args.codecs.split(","):
            cfg = ExtractConfig(teachers=[TEACHER], data=data, out=str(Path(tmp) / f"{codec}.zarr"),
                                views=args.views, codec=codec, batch_size=args.batch_size, num_workers=args.workers,
                                writers=args.writers, images_per_chunk=args.images_per_chunk)
            if raw is None:
                store = open_or_create_store(cfg, progress=False)
                raw, forward_rate = raw_outputs(store, teacher, teacher.spec.resolution, args.batch_size)
            rows.append(codec_row(cfg, teacher, raw, forward_rate))
        jpeg = jpeg_ms(FeatureStore.open(str(Path(tmp) / f"{rows[0]['codec']}.zarr")), teacher.spec.resolution)
    print_table(rows, raw, forward_rate, jpeg, args)


def print_table(rows: list[dict], raw: np.ndarray, forward_rate: float, jpeg: float, args) -> None:
    from eupe.store.extract import default_writers

    n, k, t, d = raw.shape
    print(f"\nmachine: {describe()}")
    print(f"teacher {TEACHER} at 224 px: {n} photos x {k} views = {n * k} views, {t} tokens (CLS + 256 patches) x {d}; "
          f"extraction with batch {args.batch_size}, {args.workers} DataLoader worker(s), "
          f"{args.writers or default_writers()} writer thread(s), {args.images_per_chunk} images per chunk")
    print(f"teacher forward only: {forward_rate:.1f} views/s; JPEG decode + render one view: {jpeg:.2f} ms (median)")
    print()
    print("| codec | bytes/value | mean token cos | min token cos | read+decode one view (ms) | vs JPEG+render | extraction views/s | vs forward-only |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['codec']} | {r['bytes_per_value']:.3f} | {r['mean_cos']:.5f} | {r['min_cos']:.5f} | "
              f"{r['read_ms']:.2f} | {r['read_ms'] / jpeg:.2f}x | {r['extract_rate']:.1f} | {100 * r['ratio']:.0f}% |")


if __name__ == "__main__":
    main()
