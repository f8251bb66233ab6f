"""Stage 2 with the real offline teachers on the bundled photos: does agreement on held-out views rise?

Caches dinov2s_imgfocus and effnet_lite0 (real pretrained weights) over 25 real photos, trains a
full-size EUPE ViT-T from random init for a few hundred CPU steps against both, and reports the
cosine between the student's head outputs and each teacher's normalized outputs on held-out
views of 6 held-out photos, before and after training.
Run:  .venv/bin/python bench/real_stage2.py  [--steps 300]
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

from eupe.assets import bundled_photos, imagenet_photos, write_photo_shards  # noqa: E402
from eupe.distill.agreement import load_distill_model, teacher_agreement  # noqa: E402
from eupe.distill.config import DataConfig, OptimConfig, TrainConfig  # noqa: E402
from eupe.distill.heads import DistillModel  # noqa: E402
from eupe.distill.loop import train  # noqa: E402
from eupe.distill.stats import teacher_stats  # noqa: E402
from eupe.models.config import StudentConfig, TeacherConfig  # noqa: E402
from eupe.models.students import create_student  # noqa: E402
from eupe.models.teachers import create_teacher  # noqa: E402
from eupe.store.extract import ExtractConfig, extract_teacher, open_or_create_store  # noqa: E402
from eupe.views.source import decode_image  # noqa: E402

TEACHERS = ("dinov2s_imgfocus", "effnet_lite0")


def build_store(tmp: Path, views: int) -> tuple[str, str]:
    photos = bundled_photos() + imagenet_photos()[:14]
    write_photo_shards(tmp / "shards", photos, per_shard=8, max_side=320)
    data = str(tmp / "shards" / "photos-{000000..000003}.tar")
    store_path = str(tmp / "features.zarr")
    for name in TEACHERS:
        cfg = ExtractConfig(teachers=[name], data=data, out=store_path, views=views, num_workers=1)
        extract_teacher(cfg, open_or_create_store(cfg, progress=False), create_teacher(name))
    return data, store_path


def held_out_images() -> list[tuple[str, torch.Tensor]]:
    return [(p.key, decode_image(p.read_bytes())) for p in imagenet_photos()[14:]]


def agreement_table(model: DistillModel, teachers: dict, stats: dict, images, resolution: int) -> dict:
    return {name: teacher_agreement(model, name, teacher, stats[name], images, views=8, student_resolution=resolution)
            for name, teacher in teachers.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=112)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, store = build_store(tmp, args.views)
        stats = {name: teacher_stats(store, name) for name in TEACHERS}
        cfg = TrainConfig(
            stage=2, student=StudentConfig(name="vit_t", resolution=args.resolution),
            teachers=[TeacherConfig(name=n) for n in TEACHERS], data=DataConfig(shards=data, store=store, num_workers=1),
            optim=OptimConfig(lr=1e-3, weight_decay=1e-4, warmup_iters=20), iterations=args.steps,
            global_batch=args.batch, micro_batch=args.batch, head_hidden=384, student_resolutions=[args.resolution],
            mixed_precision="no", checkpoint_every=10**9, out=str(tmp / "run"))
        teachers = {name: create_teacher(name) for name in TEACHERS}
        images = held_out_images()
        torch.manual_seed(cfg.seed)
        initial = DistillModel(create_student("vit_t"), {n: t.dim for n, t in teachers.items()}, cfg.head_hidden).eval()
        before = agreement_table(initial, teachers, stats, images, args.resolution)
        start = time.perf_counter()
        run = train(cfg, say=lambda text: print(text, file=sys.stderr))
        minutes = (time.perf_counter() - start) / 60
        after = agreement_table(load_distill_model(run), teachers, stats, images, args.resolution)
    print(f"machine: {describe()}")
    print(f"Stage 2: ViT-T (5.5M, random init) <- {', '.join(TEACHERS)} cached over 25 real photos x {args.views} views; "
          f"{args.steps} steps of batch {args.batch} at {args.resolution} px in {minutes:.1f} min")
    print("held-out: 8 fresh views (unused seed) of each of 6 held-out labelled photos\n")
    print("| teacher | summary cosine: init -> trained | patch cosine: init -> trained |")
    print("|---|---|---|")
    for name in TEACHERS:
        print(f"| {name} | {before[name]['summary_cos']:.3f} -> {after[name]['summary_cos']:.3f} | "
              f"{before[name]['patch_cos']:.3f} -> {after[name]['patch_cos']:.3f} |")


if __name__ == "__main__":
    main()
