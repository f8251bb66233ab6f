"""``eupe-demo`` (``make demo``): the whole recipe, for real, on the embedded default.

Real photos from installed packages -> webdataset shards -> two real pretrained teachers
(effnet_lite0, dinov2s_imgfocus) cached in one store -> Stage 1 (a small proxy) -> the proxy
cached -> Stage 2 (an EUPE ViT-T) -> a short Stage 3 whose extra resolutions run the proxy online ->
the evaluation suite (``eupe-eval suite --quick``: kNN on real labels, zero-shot, agreement, every
registered task; the table with the paper's rows) -> the model folder + ExecuTorch export with a
parity check, whose model card lists those figures -> a loss-curve PNG, a PCA PNG and a summary table. Every step calls the same commands a user runs.
"""

from __future__ import annotations

import os

# Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning. On a busy
# 2-core machine spinning threads starve the ones doing work: a ViT-T training step (batch 16,
# 112 px, 2 threads) took 15-30 s instead of 0.5-0.9 s while other processes held the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

import click  # noqa: E402

from eupe.assets import bundled_photos, imagenet_photos, write_photo_shards  # noqa: E402
from eupe.cli_support import run  # noqa: E402

TEACHERS = ("dinov2s_imgfocus", "effnet_lite0")
# Teachers run at their native 224 px; the proxy and the student train at 112 px (7x7 patch grid)
# so the demo fits in a few minutes on 2 CPU cores; the loss upsamples the smaller grid bicubically.
PROXY_RESOLUTION = 112  # proxy resolution (patch 16)
STUDENT_RESOLUTION = 112  # student resolution in Stage 2


@dataclass
class Demo:
    out: Path
    scale: float
    knn_limit: int
    timings: dict[str, float] = field(default_factory=dict)  # wall-clock seconds per step
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per step

    @property
    def data(self) -> str:
        return str(self.out / "shards" / "photos-{000000..000003}.tar")

    def steps(self, n: int) -> int:
        return max(2, int(round(n * self.scale)))

    def step(self, name: str, fn: Callable[[], object]) -> object:
        """Run one step, print and record its wall-clock and CPU seconds (CPU: all threads of this process)."""
        click.secho(f"\n== {name}", bold=True)
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        self.timings[name] = time.perf_counter() - start
        self.cpu[name] = time.process_time() - cpu
        click.secho(f"== {name}: {self.timings[name]:.1f} s ({self.cpu[name]:.1f} s CPU)", bold=True)
        return result


def _cli(main: Callable[[Sequence[str]], int], args: list[str], prog: str) -> None:
    click.echo("$ " + " ".join([prog, *args]))
    status = main(args)
    if status != 0:
        raise click.ClickException(f"`{prog} {' '.join(args)}` failed with status {status}")


def build_shards(demo: Demo) -> None:
    photos = bundled_photos() + imagenet_photos()
    paths = write_photo_shards(demo.out / "shards", photos, per_shard=8, max_side=320)
    click.echo(f"{len(photos)} real photos from installed packages -> {len(paths)} webdataset shards")


def extract(demo: Demo, store: str, teacher: str, *extra: str) -> None:
    from eupe.cache_tools.cli import main

    _cli(main, ["extract", "--teacher", teacher, "--data", demo.data, "--out", store, "--views", "2",
                "--num-workers", "1", *extra], "eupe-cache")


def train(demo: Demo, stage: int, *overrides: str) -> None:
    """eupe-train with the demo's shared settings (batch 16, no checkpoints mid-run, CPU)."""
    from eupe.train.cli import main

    _cli(main, ["--stage", str(stage), f"out={demo.out / f'stage{stage}'}", "global_batch=16", "micro_batch=16",
                "head_hidden=384", "checkpoint_every=1000000", *overrides, f"data.shards={demo.data}",
                "data.num_workers=1", "mixed_precision=no"], "eupe-train")


def from_proxy(demo: Demo) -> list[str]:
    """Stages 2-3: the ViT-T student against the cached proxy."""
    return [f"data.store={demo.out / 'proxy.zarr'}", f"teachers=[{{name: proxy, weights: {demo.out / 'stage1'}}}]",
            "student.name=vit_t"]


def stage1(demo: Demo) -> None:
    teachers = f"teachers={json.dumps([{'name': t} for t in TEACHERS])}"
    train(demo, 1, f"data.store={demo.out / 'teachers.zarr'}", teachers, "proxy.embed_dim=192", "proxy.depth=4",
          "proxy.num_heads=3", "proxy.mlp_ratio=4.0", f"proxy.resolution={PROXY_RESOLUTION}",
          f"student_resolutions=[{PROXY_RESOLUTION}]",
          f"iterations={demo.steps(60)}", "optim.lr=1e-3", "optim.warmup_iters=5", "log_every=10")


def stage2(demo: Demo) -> None:
    train(demo, 2, *from_proxy(demo), f"student.resolution={STUDENT_RESOLUTION}",
          f"student_resolutions=[{STUDENT_RESOLUTION}]", f"iterations={demo.steps(120)}", "optim.lr=1e-3",
          "optim.warmup_iters=10", "log_every=10")


def stage3(demo: Demo) -> None:
    train(demo, 3, *from_proxy(demo), f"init={demo.out / 'stage2'}", "student_resolutions=[96, 112, 128]",
          f"teacher_resolutions=[{PROXY_RESOLUTION}, 128]", f"iterations={demo.steps(20)}", "optim.lr=3e-4",
          "log_every=5")


def main_steps(demo: Demo) -> dict:
    teachers_store, proxy_store = str(demo.out / "teachers.zarr"), str(demo.out / "proxy.zarr")
    demo.step("webdataset shards of real photos", lambda: build_shards(demo))
    for teacher in TEACHERS:
        demo.step(f"cache teacher {teacher}", lambda t=teacher: extract(demo, teachers_store, t))
    demo.step("stage 1: teachers -> proxy", lambda: stage1(demo))
    demo.step("cache the proxy", lambda: extract(demo, proxy_store, "proxy", "--weights", str(demo.out / "stage1")))
    demo.step("stage 2: proxy -> ViT-T", lambda: stage2(demo))
    demo.step("stage 3: multi-scale, online fallback", lambda: stage3(demo))
    from eupe.demo.report import eval_models, export_and_check, report, suite_table

    models = demo.step("load the models to evaluate", lambda: eval_models(demo))
    knn = demo.step("evaluation suite (--quick, offline)", lambda: suite_table(demo))
    # after the suite: the export's model card lists the figures it appended to stage3/evaluations.jsonl
    parity = demo.step("export ExecuTorch + parity", lambda: export_and_check(demo))
    return demo.step("agreement, figures, summary", lambda: report(demo, parity, models, knn))


def timing_table(demo: Demo) -> str:
    """Wall-clock and CPU seconds of every step, and the total."""
    rows = [f"{name:<42} {demo.timings[name]:7.1f} s {demo.cpu[name]:7.1f} s CPU" for name in demo.timings]
    total = f"{'total':<42} {sum(demo.timings.values()):7.1f} s {sum(demo.cpu.values()):7.1f} s CPU"
    return "\n".join(["time per step:", *rows, total])


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (recreated on every run).")
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(0.05),
              help="Multiply every stage's iterations (e.g. 5 for a longer, better run).")
@click.option("--knn-limit", default=300, show_default=True, type=click.IntRange(20),
              help="Fashion-MNIST images per split for the kNN evaluation.")
def cli(out: str, scale: float, knn_limit: int) -> int:
    """Run the EUPE recipe end to end on real photos and real pretrained teachers (about 3 min on 2 CPU cores)."""
    demo = Demo(Path(out), scale, knn_limit)
    shutil.rmtree(demo.out, ignore_errors=True)
    demo.out.mkdir(parents=True)
    start = time.perf_counter()
    main_steps(demo)
    click.echo("\n" + timing_table(demo))
    click.echo("\n" + (demo.out / "eval" / "results.md").read_text())
    click.secho(f"\ndemo finished in {(time.perf_counter() - start) / 60:.1f} min; outputs in {demo.out}/", bold=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-demo``."""
    return run(cli, argv, "eupe-demo")


if __name__ == "__main__":
    raise SystemExit(main())
