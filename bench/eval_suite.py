"""Evaluation-suite benchmark: wall-clock seconds per model and task of the offline suite.

Runs ``eupe.eval.suite.run_suite`` (the code ``eupe-eval suite`` runs) over the given models on
the offline fixtures and prints seconds per (model, task), per model and in total, with the
machine. Target (issue 17): the ``--quick`` offline suite within 90 s per small model on 2 cores.

    python bench/eval_suite.py                                   # quick, effnet_lite0 + random ViT-T
    python bench/eval_suite.py --models dinov2s_imgfocus,effnet_lite0,vit_t=random --full
    python bench/eval_suite.py --device cuda --models vit_b=random --full   # GPU timing of the loops

Paper-scale GPU time for a ViT-B (estimates, not measured here; eval-protocols §5): kNN on
ImageNet-1k (1.33M forwards at 224) minutes; zero-shot 50k forwards plus a once-cached PE-G text
classifier; ADE20K linear 40k iterations 1-2 h; NYUv2 linear 38.4k iterations 1-1.5 h; SPair
3,600 pairs minutes: about 3-4 GPU hours in all, dominated by the dense probes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.eval.suite import run_suite  # noqa: E402
from eupe.eval.tasks.catalog import load_tasks  # noqa: E402
from eupe.eval.tasks.base import OFFLINE, EvalContext  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="effnet_lite0,vit_t=random", help="comma-separated --model values")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: every registered task)")
    parser.add_argument("--full", action="store_true", help="the full offline suite instead of --quick")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",") if args.tasks else load_tasks()
    ctx = EvalContext(quick=not args.full, device=torch.device(args.device), out_dir=Path("/tmp/eupe-bench-eval"))
    start = time.perf_counter()
    result = run_suite(args.models.split(","), ctx, {t: OFFLINE for t in tasks}, tasks, say=lambda _m: None)
    total = time.perf_counter() - start
    print(f"machine: {describe()}")
    print(f"offline suite ({'full' if args.full else '--quick'}), wall seconds (CPU seconds) per model and task:")
    print(f"{'model':<24}" + "".join(f"{t:>18}" for t in tasks) + f"{'model total':>20}")
    for model, per_task in result.timings.items():
        cpu = result.cpu[model]
        cells = "".join(f"{per_task.get(t, 0.0):>8.1f} s ({cpu.get(t, 0.0):>5.1f})" for t in tasks)
        print(f"{model:<24}{cells}{sum(per_task.values()):>10.1f} s ({sum(cpu.values()):>5.1f})")
    print(f"total {total:.1f} s (model loading included) for {len(result.timings)} model(s)")


if __name__ == "__main__":
    main()
