"""Paper-scale plan and the error of sampled normalization statistics (issue 10, points 4 and 8).

Part 1: ``eupe-cache plan`` with the paper's numbers -- 1.28M images x 4 views, a ViT-B student at
3000 samples/s per H100, 8 GPUs -- for the widest teacher shape (PE-G at 448 px: T=1024, D=1536)
and for the three Stage-1 teachers (PEcore-G, PElang-G, DINOv3-H+), every codec; then how far the
plan's synthetic features are from real ones: stored bytes/value of real DINOv2-S features
(dinov2s_imgfocus on the bundled photos) next to the synthetic features at the same shape.

Part 2: ``eupe-cache stats`` from a sample vs a full pass on a real store (dinov2s_imgfocus, the
bundled photos x ``--views`` views, default codec). For sample sizes S and several seeds: the
max relative error of the per-coordinate std, the max error of the mean in units of std, and
the effect on the normalized targets the loss sees ((x - mean) / std with sampled vs full
statistics): mean token cosine between the two, max |difference|, and the smooth-L1 (beta 1)
between them. The error scales as 1/sqrt(S) (times the finite-population factor sqrt(1 - S/N));
the constant fitted here extrapolates it to the default S = 8192. Also: wall time of a full pass
vs the default sample, and 1 vs 2 worker threads, side by side.

Run:  .venv/bin/python bench/plan.py [--views 16] [--skip-stats]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.cache_tools.cli import main as cache_main  # noqa: E402

PAPER = ["--images", "1281167", "--views", "4", "--samples-per-s", "3000", "--gpus", "8"]
SAMPLES = (32, 64, 128, 256)
SEEDS = 5


def plan_part() -> None:
    print("## eupe-cache plan, paper scale (widest teacher shape)\n")
    cache_main(["plan", "--shape", "1024x1536", *PAPER])
    print("\n## eupe-cache plan, paper scale, the three Stage-1 teachers at native resolution\n")
    cache_main(["plan", "--teacher", "pecore_g", "--teacher", "pelang_g", "--teacher", "dinov3_hplus",
                "--codec", "int8,compact,tiny", *PAPER])


def synthetic_vs_real() -> None:
    """Stored bytes/value of the plan's synthetic features vs real DINOv2-S features at one shape."""
    from cache import teacher_features

    from eupe.store.codecs.registry import CODECS
    from eupe.store.codecs.storage import stored_nbytes
    from eupe.store.plan import Shape, realistic_views

    raw, _ = teacher_features("dinov2s_imgfocus", 2, 16)  # [V, 1+T, D], summary first
    real = raw[:, 1:, :].astype(np.float32)
    v, t, d = real.shape
    synthetic = realistic_views(np.random.default_rng(0), v, Shape("s", t, d, d))[1]
    print(f"\n## plan's synthetic features vs real DINOv2-S patch tokens ({v} views x {t} x {d}), stored B/value\n")
    print("| codec | real | synthetic | synthetic / real |\n|---|---|---|---|")
    for name in CODECS.names():
        codec = CODECS.get(name)
        a, b = (stored_nbytes(codec.encode(x)) / x.size for x in (real, synthetic))
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} |")


def build_store(tmp: Path, views: int) -> str:
    from eupe.assets import bundled_photos, imagenet_photos, write_photo_shards

    photos = bundled_photos() + imagenet_photos()
    write_photo_shards(tmp / "shards", photos, per_shard=8, max_side=320)
    pattern = str(tmp / "shards" / f"photos-{{000000..{(len(photos) - 1) // 8:06d}}}.tar")
    out = str(tmp / "real.zarr")
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        assert cache_main(["extract", "--teacher", "dinov2s_imgfocus", "--data", pattern, "--out", out,
                           "--views", str(views), "--num-workers", "0", "--images-per-chunk", "4"]) == 0
    print(f"store: {len(photos)} real photos x {views} views, dinov2s_imgfocus, extracted in "
          f"{time.perf_counter() - start:.0f} s")
    return out


def _values(moments) -> dict[str, np.ndarray]:
    return {f"{kind}_{what}": getattr(m, what) for kind, m in moments.items() for what in ("mean", "std")}


def _normalized_effect(full: dict, sampled: dict, patch: np.ndarray) -> tuple[float, float, float]:
    """Mean token cosine, max |diff| and mean smooth-L1 between patch tokens normalized both ways."""
    z = (patch - full["patch_mean"]) / np.maximum(full["patch_std"], 1e-6)  # [n, D]
    zs = (patch - sampled["patch_mean"]) / np.maximum(sampled["patch_std"], 1e-6)
    cos = (z * zs).sum(-1) / (np.linalg.norm(z, axis=-1) * np.linalg.norm(zs, axis=-1))
    diff = np.abs(z - zs)
    smooth_l1 = np.where(diff < 1, 0.5 * diff**2, diff - 0.5)
    return float(cos.mean()), float(diff.max()), float(smooth_l1.mean())


def stats_part(views: int) -> None:
    from eupe.store.stats import DEFAULT_SAMPLE, compute_stats, sample_pairs
    from eupe.store.store import FeatureStore

    print("\n## eupe-cache stats: a sample of views vs a full pass, real store\n")
    with tempfile.TemporaryDirectory() as tmp:
        group = FeatureStore.open(build_store(Path(tmp), views)).teacher("dinov2s_imgfocus")
        resolution = group.resolutions[0]
        start = time.perf_counter()
        full = _values(compute_stats(group, resolution, sample=None, workers=1))
        full_s = time.perf_counter() - start
        population = len(sample_pairs(group, None))
        patch = np.concatenate([group.reader.targets(int(r), resolution, int(k))["patch"].reshape(-1, group.dim)
                                for r, k in sample_pairs(group, 64, seed=99)]).astype(np.float64)
        print(f"population N = {population} views; codec {group.codec.name}; full pass {full_s:.2f} s on 1 thread; "
              f"normalized-target effect measured on {len(patch)} patch tokens of 64 other sampled views\n")
        print("| S views | max rel err std (patch / summary) | max mean err / std (patch / summary) | "
              "normalized cosine (min over seeds) | max abs diff normalized | smooth-L1 between |")
        print("|---|---|---|---|---|---|")
        fitted = []
        for size in SAMPLES:
            rows = [_sample_errors(group, resolution, full, patch, size, seed) for seed in range(SEEDS)]
            worst = {k: max(r[k] for r in rows) for k in rows[0]}
            worst["cos"] = min(r["cos"] for r in rows)
            print(f"| {size} | {worst['std_patch']:.4f} / {worst['std_summary']:.4f} | {worst['mean_patch']:.4f} / "
                  f"{worst['mean_summary']:.4f} | {worst['cos']:.6f} | {worst['diff']:.4f} | {worst['l1']:.2e} |")
            fpc = np.sqrt(max(1 - size / population, 1e-9))
            fitted.append({**{k: worst[k] * np.sqrt(size) / fpc for k in ("std_patch", "std_summary", "mean_summary")},
                           **{k: v * size / fpc**2 for k, v in (("1-cos", 1 - worst["cos"]), ("l1", worst["l1"]))}})
        c = {k: float(np.mean([f[k] for f in fitted])) for k in fitted[0]}
        root = np.sqrt(DEFAULT_SAMPLE)
        print(f"\nfitted (finite-population corrected, worst of {SEEDS} seeds): err x sqrt(S): std patch "
              f"{c['std_patch']:.3f}, std summary {c['std_summary']:.3f}, mean summary {c['mean_summary']:.3f}; "
              f"(1 - cos) x S {c['1-cos']:.3f}; smooth-L1 x S {c['l1']:.3f}")
        print(f"-> extrapolated to the default S = {DEFAULT_SAMPLE} of a large store: max rel err of std: patch "
              f"{c['std_patch'] / root:.4f}, summary {c['std_summary'] / root:.4f}; max summary mean err "
              f"{c['mean_summary'] / root:.4f} std; normalized-target cosine {1 - c['1-cos'] / DEFAULT_SAMPLE:.6f}, "
              f"smooth-L1 between them {c['l1'] / DEFAULT_SAMPLE:.1e}")
        timing(group, resolution)


def _sample_errors(group, resolution: int, full: dict, patch: np.ndarray, size: int, seed: int) -> dict:
    from eupe.store.stats import compute_stats

    sampled = _values(compute_stats(group, resolution, sample=size, seed=seed, workers=1))
    cos, diff, l1 = _normalized_effect(full, sampled, patch)
    out = {"cos": cos, "diff": diff, "l1": l1}
    for kind in ("patch", "summary"):
        std = np.maximum(full[f"{kind}_std"], 1e-12)
        out[f"std_{kind}"] = float(np.max(np.abs(sampled[f"{kind}_std"] - full[f"{kind}_std"]) / std))
        out[f"mean_{kind}"] = float(np.max(np.abs(sampled[f"{kind}_mean"] - full[f"{kind}_mean"]) / std))
    return out


def timing(group, resolution: int) -> None:
    from eupe.store.stats import compute_stats

    print(f"\n| run (side by side; {group.store.num_chunks} chunks) | wall s |\n|---|---|")
    for label, kwargs in (("full pass, 1 thread", {"sample": None, "workers": 1}),
                          ("full pass, 2 threads", {"sample": None, "workers": 2}),
                          ("sample of 128 views, 1 thread", {"sample": 128, "workers": 1}),
                          ("sample of 128 views, 2 threads", {"sample": 128, "workers": 2})):
        start = time.perf_counter()
        compute_stats(group, resolution, **kwargs)
        print(f"| {label} | {time.perf_counter() - start:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, default=16, help="views per image of the real store (part 2)")
    parser.add_argument("--skip-stats", action="store_true", help="part 1 only")
    args = parser.parse_args()
    print(f"machine: {describe()}\n")
    plan_part()
    synthetic_vs_real()
    if not args.skip_stats:
        stats_part(args.views)


if __name__ == "__main__":
    main()
