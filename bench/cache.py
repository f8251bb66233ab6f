"""Feature-store benchmark on real ViT features (dinov2s_imgfocus over views of the bundled photos).

For each codec: stored bytes per feature value and per-token cosine to the raw float32 teacher
output (through the real extractor and store), extraction throughput vs teacher-forward-only
throughput, and the time to read + decode one sample's cached targets vs decoding and rendering
its JPEG. Run:  .venv/bin/python bench/cache.py  [--views 5] [--codecs fp16,int8,...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.assets import bundled_photos, imagenet_photos, write_photo_shards  # noqa: E402
from eupe.data import ShardReader  # noqa: E402
from eupe.models import create_teacher  # noqa: E402
from eupe.store.codecs import token_cosine  # noqa: E402
from eupe.models import run_teacher  # noqa: E402
from eupe.store.extract import ExtractConfig, extract_teacher, open_or_create_store  # noqa: E402
from eupe.store.store import FeatureStore  # noqa: E402
from eupe.views import ViewSpec, decode_image, render, render_views, sample_views  # noqa: E402

TEACHER = "dinov2s_imgfocus"


def raw_outputs(store: FeatureStore, teacher, res: int, batch: int) -> tuple[np.ndarray, float]:
    """Raw fp32 outputs [N, K, 1+T, D] on the store's views, and forward-only views/s."""
    reader, k = ShardReader(store.shard_index()), store.params.views_per_image
    pixels = []
    for row, key in enumerate(store.keys):
        image = decode_image(reader.read(row))
        views = sample_views(store.params.policy, store.params.seed, str(key), image.shape[1], image.shape[2], k)
        pixels.append(render_views(image, views, res))
    pixels = torch.cat(pixels)  # [N*K, 3, res, res]
    run_teacher(teacher, pixels[:batch], batch, torch.device("cpu"))  # warm-up
    start = time.perf_counter()
    summary, patch = run_teacher(teacher, pixels, batch, torch.device("cpu"))
    rate = len(pixels) / (time.perf_counter() - start)
    tokens = np.concatenate([summary[:, None], patch], axis=1)  # [N*K, 1+T, D]
    return tokens.reshape(len(store.keys), k, *tokens.shape[1:]), rate


def codec_row(cfg: ExtractConfig, teacher, raw: np.ndarray, forward_rate: float) -> dict:
    store = open_or_create_store(cfg, progress=False)
    summary = extract_teacher(cfg, store, teacher)
    group = store.teacher(TEACHER)
    res = group.resolutions[0]
    decoded = [group.targets(r, res) for r in range(store.num_images)]
    approx = np.stack([np.concatenate([d["summary"][:, None], d["patch"].reshape(*d["patch"].shape[:1], -1, group.dim)], 1)
                       for d in decoded])  # [N, K, 1+T, D]
    cos = token_cosine(raw, approx)
    return {"codec": cfg.codec, "bytes_per_value": summary.bytes_written / summary.values,
            "mean_cos": float(cos.mean()), "min_cos": float(cos.min()),
            "extract_rate": summary.views / summary.elapsed_s, "ratio": summary.views / summary.elapsed_s / forward_rate,
            "read_ms": read_ms(group, res)}


def read_ms(group, res: int, repeats: int = 60) -> float:
    """Median ms to read and decode one (image, view) of cached targets from the store."""
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        row, k = int(rng.integers(group.store.num_images)), int(rng.integers(group.store.params.views_per_image))
        start = time.perf_counter()
        group.targets(row, res, k)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def jpeg_ms(store: FeatureStore, res: int, repeats: int = 60) -> float:
    """Median ms to decode a sample's JPEG and render one of its views."""
    reader = ShardReader(store.shard_index())
    group = store.teacher(TEACHER)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        row, k = int(rng.integers(store.num_images)), int(rng.integers(store.params.views_per_image))
        data, view = reader.read(row), ViewSpec.from_array(group.views(row)[k])
        start = time.perf_counter()
        render(decode_image(data), view, res)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--views", type=int, default=5, help="views per image")
    parser.add_argument("--codecs", default="fp16,int8,int6,int4,compact,tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-side", type=int, default=512, help="downscale photos to this longer side")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    teacher = create_teacher(TEACHER)
    with tempfile.TemporaryDirectory() as tmp:
        photos = bundled_photos() + imagenet_photos()
        write_photo_shards(Path(tmp) / "shards", photos, per_shard=8, max_side=args.max_side)
        data = str(Path(tmp) / "shards" / "photos-{000000..000003}.tar")
        rows = []
        forward_rate = raw = None
        for codec in args.codecs.split(","):
            cfg = ExtractConfig([TEACHER], data, str(Path(tmp) / f"{codec}.zarr"), views=args.views, codec=codec,
                                batch_size=args.batch_size, num_workers=args.workers)
            if raw is None:
                store = open_or_create_store(cfg, progress=False)
                raw, forward_rate = raw_outputs(store, teacher, teacher.spec.resolution, args.batch_size)
            rows.append(codec_row(cfg, teacher, raw, forward_rate))
        jpeg = jpeg_ms(FeatureStore.open(str(Path(tmp) / f"{rows[0]['codec']}.zarr")), teacher.spec.resolution)
    print_table(rows, raw, forward_rate, jpeg, args)


def print_table(rows: list[dict], raw: np.ndarray, forward_rate: float, jpeg: float, args) -> None:
    n, k, t, d = raw.shape
    print(f"machine: {describe()}")
    print(f"teacher {TEACHER} at 224 px: {n} photos x {k} views = {n * k} views, {t} tokens (CLS + 256 patches) x {d}; "
          f"extraction with batch {args.batch_size}, {args.workers} DataLoader worker(s)")
    print(f"teacher forward only: {forward_rate:.1f} views/s; JPEG decode + render one view: {jpeg:.2f} ms (median)")
    print()
    print("| codec | bytes/value | mean token cos | min token cos | read+decode one view (ms) | vs JPEG+render | extraction views/s | vs forward-only |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['codec']} | {r['bytes_per_value']:.3f} | {r['mean_cos']:.5f} | {r['min_cos']:.5f} | "
              f"{r['read_ms']:.2f} | {r['read_ms'] / jpeg:.2f}x | {r['extract_rate']:.1f} | {100 * r['ratio']:.0f}% |")


if __name__ == "__main__":
    main()
