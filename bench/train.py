"""Training-step benchmark: cached targets vs the teacher hosted online vs the student alone.

The same Stage-2 style run (``eupe.distill.loop.train``; student ``vit_t`` by default, teacher
``dinov2s_imgfocus`` with its real weights) at the same batch and resolutions, three ways:

1. cached targets: the store holds the teacher at ``--teacher-resolution`` (224), every step reads them;
2. teacher online: the store holds the teacher only at ``--online-store-resolution`` (112) while
   ``teacher_resolutions=[--teacher-resolution]``, so every step runs the teacher in the training process;
3. student only: the same DistillModel forward / backward / clip / AdamW step on pre-made random
   targets of the right shapes, with no data loading and no teacher (the lower bound).

Step times come from the runs' ``losses.jsonl`` (the first ``--warmup`` steps skipped). Progress
goes to stderr, the table to stdout. CPU defaults run in a few minutes on 2 cores; on a GPU box
scale up, e.g.  python bench/train.py --steps 50 --batch 128 --resolution 256 --images 256 --workers 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.assets import Photo, bundled_photos, imagenet_photos, write_photo_shards  # noqa: E402
from eupe.distill.config import DataConfig, OptimConfig, TrainConfig  # noqa: E402
from eupe.distill.heads import DistillModel  # noqa: E402
from eupe.distill.loop import LOSS_LOG, build_student, lr_at, param_groups, train  # noqa: E402
from eupe.models.teachers import create_teacher, teacher_spec  # noqa: E402
from eupe.models.config import StudentConfig, TeacherConfig  # noqa: E402
from eupe.store.extract import ExtractConfig, extract_teacher, open_or_create_store  # noqa: E402

TEACHER = "dinov2s_imgfocus"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def photos(n: int) -> list[Photo]:
    """``n`` real bundled photos; past the ones installed, repeats under new keys (so new views)."""
    found = bundled_photos() + imagenet_photos()
    if not found:
        raise SystemExit("no bundled photos found (install scikit-image / scikit-learn / matplotlib / foolbox)")
    return [p if i < len(found) else replace(p, key=f"{p.key}_r{i // len(found)}")
            for i, p in ((i, found[i % len(found)]) for i in range(n))]


def build_store(args, data: str, out: str, resolution: int, teacher) -> dict:
    cfg = ExtractConfig(teachers=[TEACHER], data=data, out=out, views=args.views, resolutions=[resolution],
                        codec=args.codec, batch_size=args.extract_batch, num_workers=args.workers,
                        images_per_chunk=args.images_per_chunk)
    store = open_or_create_store(cfg, progress=False)
    summary = extract_teacher(cfg, store, teacher)
    say(f"  {out}: {summary.line()}")
    return {"views": summary.views, "elapsed_s": summary.elapsed_s, "mb": summary.bytes_written / 1e6}


def train_config(args, store: str, data: str, out: str, precision: str) -> TrainConfig:
    return TrainConfig(
        stage=2,
        student=StudentConfig(name=args.student, resolution=args.resolution),
        teachers=[TeacherConfig(name=TEACHER)],
        data=DataConfig(shards=data, store=store, num_workers=args.workers, check_keys=True),
        optim=OptimConfig(lr=2e-5, weight_decay=1e-4, warmup_iters=0),
        iterations=args.steps,
        global_batch=args.batch,
        micro_batch=args.micro_batch or args.batch,
        head_hidden=args.head_hidden,
        student_resolutions=[args.resolution],
        teacher_resolutions=[args.teacher_resolution],
        mixed_precision=precision,
        seed=0,
        out=out,
        log_every=max(1, args.steps),
        checkpoint_every=10 ** 9,  # only the final save (after the last timed step)
        keep_checkpoints=1,
    )


def summarize(records: list[dict], warmup: int, global_batch: int) -> dict:
    timed = records[warmup:]
    steps = [global_batch / r["images_per_s"] for r in timed]
    median = statistics.median(steps)
    return {"step_s": median, "best_s": min(steps), "images_per_s": global_batch / median,
            "wait": statistics.fmean(r["data_wait_fraction"] for r in timed), "timed": len(timed),
            "cache_hits": records[-1]["cache_hits"], "online_fallbacks": records[-1]["online_fallbacks"]}


def run_loop(cfg: TrainConfig, warmup: int) -> dict:
    t0 = time.perf_counter()
    run = train(cfg, say=say)
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (run / LOSS_LOG).read_text().splitlines()]
    if len(records) != cfg.iterations:
        raise RuntimeError(f"{run}: {len(records)} steps logged, expected {cfg.iterations}")
    return {**summarize(records, warmup, cfg.global_batch), "wall_s": wall}


def student_only(cfg: TrainConfig, teacher_dim: int, teacher_grid: int, warmup: int) -> dict:
    """The loop's step (forward, loss, backward, clip, AdamW, .item()) on pre-made targets."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    precision = cfg.mixed_precision if torch.cuda.is_available() else "no"
    micro = cfg.micro_batch
    accumulation = cfg.global_batch // micro
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=accumulation)
    set_seed(cfg.seed)
    model = DistillModel(build_student(cfg), {TEACHER: teacher_dim}, cfg.head_hidden)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                  betas=tuple(cfg.optim.betas))
    model, optimizer = accelerator.prepare(model, optimizer)
    device, resolution = accelerator.device, cfg.student_resolutions[0]
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(micro, 3, resolution, resolution, generator=gen).to(device)
    targets = {TEACHER: {"summary": torch.randn(micro, teacher_dim, generator=gen).to(device),
                         "patch": torch.randn(micro, teacher_grid, teacher_grid, teacher_dim, generator=gen).to(device)}}
    loss = cfg.loss.build(cfg.patch_weights())  # the loop's own loss object
    times = []
    for step in range(cfg.iterations):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.optim, cfg.iterations)
        t0 = time.perf_counter()
        for _ in range(accumulation):
            with accelerator.accumulate(model):
                losses = loss(model(pixels), targets)
                accelerator.backward(losses["total"])
                if accelerator.sync_gradients and cfg.optim.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                optimizer.zero_grad()
            _ = {k: v.item() for k, v in losses.items()}  # the loop syncs on every loss term too
        times.append(time.perf_counter() - t0)
        say(f"  student only: step {step + 1}/{cfg.iterations} {times[-1]:.3f} s")
    accelerator.free_memory()
    median = statistics.median(times[warmup:])
    return {"step_s": median, "best_s": min(times[warmup:]), "images_per_s": cfg.global_batch / median,
            "wait": 0.0, "timed": len(times[warmup:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="vit_t", help="registered student (full size)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per run (iterations)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timings")
    parser.add_argument("--batch", type=int, default=8, help="global batch (images per step)")
    parser.add_argument("--micro-batch", type=int, default=0, help="per-process micro-batch (0: = --batch)")
    parser.add_argument("--resolution", type=int, default=224, help="student resolution")
    parser.add_argument("--teacher-resolution", type=int, default=224, help="teacher resolution the runs train against")
    parser.add_argument("--online-store-resolution", type=int, default=112,
                        help="the only resolution in the online run's store (forces the fallback)")
    parser.add_argument("--views", type=int, default=2, help="stored views per image")
    parser.add_argument("--images", type=int, default=16, help="photos in the dataset (bundled ones repeat past 31)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (extraction and training)")
    parser.add_argument("--head-hidden", type=int, default=3072, help="adapter head width (Stage 2: 3072)")
    parser.add_argument("--codec", default="compact", help="store codec of the cached targets")
    parser.add_argument("--extract-batch", type=int, default=32, help="views per teacher forward when extracting")
    parser.add_argument("--images-per-chunk", type=int, default=16)
    parser.add_argument("--max-side", type=int, default=320, help="downscale photos to this longer side")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    cuda = torch.cuda.is_available()
    precision = "bf16" if cuda else "no"
    teacher_grid = args.teacher_resolution // teacher_spec(TEACHER).patch_size
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="eupe-bench-train-") as tmp, contextlib.redirect_stdout(sys.stderr):
        root = Path(tmp)
        shards = write_photo_shards(root / "shards", photos(args.images), per_shard=8, max_side=args.max_side)
        data = "::".join(shards)
        say(f"building stores: {TEACHER} at {args.teacher_resolution} (cached run) and {args.online_store_resolution} (online run)")
        teacher = create_teacher(TEACHER)
        teacher_dim = teacher.dim
        extract = build_store(args, data, str(root / "cached.zarr"), args.teacher_resolution, teacher)
        build_store(args, data, str(root / "online.zarr"), args.online_store_resolution, teacher)
        del teacher

        say("run 1/3: cached targets")
        cached = run_loop(train_config(args, str(root / "cached.zarr"), data, str(root / "cached"), precision),
                          args.warmup)
        if cached["online_fallbacks"] or not cached["cache_hits"]:
            raise RuntimeError(f"cached run did not read the cache: {cached}")
        say("run 2/3: teacher hosted online")
        online = run_loop(train_config(args, str(root / "online.zarr"), data, str(root / "online"), precision),
                          args.warmup)
        if online["cache_hits"] or not online["online_fallbacks"]:
            raise RuntimeError(f"online run did not fall back to the teacher on every step: {online}")
        say("run 3/3: student only")
        alone = student_only(train_config(args, str(root / "cached.zarr"), data, str(root / "alone"), precision),
                             teacher_dim, teacher_grid, args.warmup)
    print_table(args, precision, extract, cached, online, alone, (load_before, os.getloadavg()[0]))


def print_table(args, precision: str, extract: dict, cached: dict, online: dict, alone: dict,
                load: tuple[float, float]) -> None:
    micro = args.micro_batch or args.batch
    print(f"machine: {describe()}; 1-min load average {load[0]:.1f} at start, {load[1]:.1f} at end "
          f"(other processes share the cores: timings are noisy when it exceeds the core count)")
    print(f"student {args.student} (full size, random init) at {args.resolution} px, {TEACHER} (real weights) targets at "
          f"{args.teacher_resolution} px, global batch {args.batch} (micro-batch {micro}), head width {args.head_hidden}, "
          f"mixed precision {precision}, {args.workers} DataLoader worker(s); {args.images} photos x {args.views} views; "
          f"step times over steps {args.warmup}..{args.steps - 1} ({cached['timed']} steps per run)")
    print(f"cache build ({args.codec}, r{args.teacher_resolution}): {extract['views']} views in {extract['elapsed_s']:.1f} s "
          f"({extract['views'] / extract['elapsed_s']:.1f} views/s, {extract['mb']:.1f} MB)")
    print()
    print("| targets | median step (s) | fastest step (s) | images/s (median) | mean data-wait fraction | "
          "median vs student only | fastest vs student only | cache hits / online fallbacks (images) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [
        (f"cached in the store (r{args.teacher_resolution}, {args.codec})", cached,
         f"{cached['cache_hits']} / {cached['online_fallbacks']}"),
        (f"teacher hosted online (store has r{args.online_store_resolution} only)", online,
         f"{online['cache_hits']} / {online['online_fallbacks']}"),
        ("student only (pre-made random targets, no data, no teacher)", alone, "-"),
    ]
    for name, r, counts in rows:
        print(f"| {name} | {r['step_s']:.3f} | {r['best_s']:.3f} | {r['images_per_s']:.1f} | {r['wait']:.1%} | "
              f"{r['step_s'] / alone['step_s']:.2f}x | {r['best_s'] / alone['best_s']:.2f}x | {counts} |")
    print()
    for label, key in (("median", "step_s"), ("fastest", "best_s")):
        print(f"{label} step time: cached / student-only {cached[key] / alone[key]:.2f}x, "
              f"online / student-only {online[key] / alone[key]:.2f}x, online / cached {online[key] / cached[key]:.2f}x")


if __name__ == "__main__":
    main()
