"""Extraction throughput against the teacher's forward alone, at a real teacher's size.

The issue's GPU target: extraction (render in DataLoader workers, teacher forward, encode on the
device, zstd + write + fsync in the writer pool) keeps >= 90% of the views/s of the teacher's
forward alone. This builds the registered teacher's full-size architecture with random weights
(``--teacher pecore_g``: a PE-G-sized ViT; no weights file is needed for a throughput figure),
writes real webdataset shards of the bundled photos (resized to ``--max-side``), then measures,
side by side on the same device:

- forward only: ``teacher_batch`` on random pixels of ``--batch-size`` views, views/s;
- extraction: the real extractor (``extract_teacher``) into a new store, views/s over the run.

On a machine without a GPU, ``--test-scale`` runs the same code with the tiny test-scale teacher
(a smoke run; the ratio then says little). Run on a GPU box, for example::

    .venv/bin/python bench/extract_gpu.py --teacher pecore_g --resolution 448 --images 512 \\
        --batch-size 64 --workers 12 --codec compact
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.assets import bundled_photos, encode_jpeg, imagenet_photos  # noqa: E402
from eupe.data.shards import write_shards  # noqa: E402
from eupe.models.build import head_kwargs, random_backbone  # noqa: E402
from eupe.models.features import Encoder, teacher_batch  # noqa: E402
from eupe.models.teachers import create_teacher, teacher_spec  # noqa: E402
from eupe.store.extract import ExtractConfig, default_device, extract_teacher, open_or_create_store  # noqa: E402


def full_size_random(name: str) -> Encoder:
    """The teacher's full-size timm architecture with random weights (throughput only)."""
    spec = teacher_spec(name)
    backbone, fingerprint = random_backbone(spec.timm_name, {**head_kwargs(spec), **spec.timm_kwargs}, seed=None)
    return Encoder(spec, backbone, fingerprint).eval().requires_grad_(False)


def forward_views_per_s(teacher: Encoder, resolution: int, batch: int, device: torch.device, seconds: float) -> float:
    """Views/s of the teacher alone on random pixels (after two warm-up batches)."""
    pixels = torch.rand(batch, 3, resolution, resolution)
    for _ in range(2):
        teacher_batch(teacher, pixels, device)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        summary, _ = teacher_batch(teacher, pixels, device)
        summary.sum().item()  # waits for the device
        done += batch
    return done / (time.perf_counter() - start)


def extraction_views_per_s(teacher: Encoder, args: argparse.Namespace, root: Path) -> tuple[float, str]:
    photos = bundled_photos() + imagenet_photos()
    encoded = [encode_jpeg(p.path, args.max_side) for p in photos]
    samples = ((f"{photos[i % len(photos)].key}-{i}", encoded[i % len(photos)], "jpg", -1) for i in range(args.images))
    (root / "shards").mkdir()
    shards = write_shards(samples, str(root / "shards" / "photos-%06d.tar"), 64)  # unique keys, photos repeat
    data = str(root / "shards" / f"photos-{{000000..{len(shards) - 1:06d}}}.tar")
    cfg = ExtractConfig(teachers=[args.teacher], data=data, out=str(root / "store.zarr"), views=args.views,
                        resolutions=[args.resolution], codec=args.codec, batch_size=args.batch_size,
                        num_workers=args.workers, images_per_chunk=args.images_per_chunk, device=args.device,
                        writers=args.writers)
    store = open_or_create_store(cfg, progress=False)
    summary = extract_teacher(cfg, store, teacher)
    return summary.views / summary.elapsed_s, summary.line()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="pecore_g", help="registered teacher (its full-size architecture)")
    parser.add_argument("--test-scale", action="store_true", help="tiny test-scale teacher (CPU smoke run)")
    parser.add_argument("--resolution", type=int, default=448, help="teacher input resolution")
    parser.add_argument("--images", type=int, default=256, help="images extracted")
    parser.add_argument("--views", type=int, default=4, help="views per image")
    parser.add_argument("--codec", default="compact")
    parser.add_argument("--batch-size", type=int, default=64, help="views per teacher forward")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers rendering views")
    parser.add_argument("--writers", type=int, default=None, help="writer threads (default: the extractor's)")
    parser.add_argument("--images-per-chunk", type=int, default=64)
    parser.add_argument("--max-side", type=int, default=640, help="longer side of the source JPEGs")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the forward-only measurement")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    teacher = create_teacher(args.teacher, test_scale=True) if args.test_scale else full_size_random(args.teacher)
    params = sum(p.numel() for p in teacher.parameters()) / 1e6
    device = default_device(ExtractConfig(teachers=[args.teacher], data="", out="", device=args.device))
    teacher.to(device)
    print(f"teacher {args.teacher}{' (test scale)' if args.test_scale else ' (full size, random weights)'}: "
          f"{params:.0f}M parameters on {device}, {args.resolution} px, batches of {args.batch_size} views, "
          f"codec {args.codec}, {args.workers} render workers")
    forward = forward_views_per_s(teacher, args.resolution, args.batch_size, device, args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        extraction, line = extraction_views_per_s(teacher, args, Path(tmp))
    print(f"  forward only: {forward:8.1f} views/s")
    print(f"  extraction:   {extraction:8.1f} views/s ({line})")
    print(f"  extraction / forward only: {extraction / forward:.0%} (target >= 90%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
