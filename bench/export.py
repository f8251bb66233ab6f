"""Export benchmark: parity and latency of ExecuTorch programs (fp32, int8) vs eager PyTorch.

For each student and resolution it exports the XNNPACK ``.pte`` (fp32 and/or int8), runs it
with the ExecuTorch runtime on held-out bundled photos, and times eager vs ``.pte`` at batch 1
(median of --repeats). Students are random-init at their real size: parity and latency do not
depend on training (int8 cosine does somewhat: trained weights have larger residual branches).
Int8 calibration uses 8 bundled photos rendered at the resolution. Run:

    python bench/export.py                                   # vit_t,vit_s,vit_b,convnext_t x 256,384,512
    python bench/export.py --models vit_t,convnext_t --resolutions 256 --threads 1   # a few minutes

On a shared machine use --threads 1: torch's OpenMP threads slow down badly when other
processes hold the cores, which makes eager timings meaningless.
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

from eupe.deploy.executorch_export import export_pte, run_pte  # noqa: E402
from eupe.deploy.latency import eager_latency_ms, pte_latency_ms, set_threads, xnnpack_threads  # noqa: E402
from eupe.deploy.parity import check_pixels, parity  # noqa: E402
from eupe.models.students import create_student  # noqa: E402

COLUMNS = ("model", "res", "program", "export_s", "MB", "sum_maxdiff", "patch_maxdiff", "sum_cos", "patch_cos",
           "patch_cos_min", "eager_ms", "pte_ms", "speedup")


def _list(value: str, cast=str) -> list:
    return [cast(v) for v in value.split(",") if v]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vit_t,vit_s,vit_b,convnext_t", help="Comma-separated student names.")
    parser.add_argument("--resolutions", default="256,384,512", help="Comma-separated input sides.")
    parser.add_argument("--programs", default="fp32,int8", help="fp32 and/or int8.")
    parser.add_argument("--repeats", type=int, default=10, help="Timed runs per latency (median).")
    parser.add_argument("--images", type=int, default=3, help="Held-out photos for parity.")
    parser.add_argument("--threads", type=int, default=None, help="torch and XNNPACK threads (default: theirs).")
    return parser.parse_args(argv)


def bench_one(encoder, resolution: int, program: str, eager_ms: float, args, workdir: Path) -> dict:
    """Export one program, check parity, time it."""
    quantize = None if program == "fp32" else program
    start = time.perf_counter()
    path = export_pte(encoder, resolution, workdir / f"{encoder.spec.name}_{resolution}_{program}.pte", quantize)
    export_s = time.perf_counter() - start
    result = parity(encoder, lambda pixels: run_pte(path, pixels), check_pixels(resolution, args.images))
    pte_ms = pte_latency_ms(path, resolution, args.repeats)
    return {"model": encoder.spec.name, "res": resolution, "program": program, "export_s": export_s,
            "MB": path.stat().st_size / 1e6, "sum_maxdiff": result["summary_max_abs_diff"],
            "patch_maxdiff": result["patch_max_abs_diff"], "sum_cos": result["summary_cosine_mean"],
            "patch_cos": result["patch_cosine_mean"], "patch_cos_min": result["patch_cosine_min"],
            "eager_ms": eager_ms, "pte_ms": pte_ms, "speedup": eager_ms / pte_ms}


def _fmt(column: str, value) -> str:
    if "maxdiff" in column:
        return f"{value:.2e}"
    if "cos" in column:
        return f"{value:.6f}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _line(cells: list[str]) -> str:
    return " ".join(f"{cell:>{max(len(c), 10)}}" for c, cell in zip(COLUMNS, cells))


def print_row(row: dict) -> None:
    print(_line([_fmt(c, row[c]) for c in COLUMNS]), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        set_threads(args.threads)
    torch.manual_seed(0)
    print(f"machine: {describe()}; ExecuTorch XNNPACK threadpool: {xnnpack_threads()} threads")
    print("parity on held-out bundled photos; latency: batch 1, median of "
          f"{args.repeats}; cos = mean cosine (summary per image, patch per token)")
    print(_line(list(COLUMNS)))
    with tempfile.TemporaryDirectory() as tmp:
        for name in _list(args.models):
            encoder = create_student(name)
            for resolution in _list(args.resolutions, int):
                eager_ms = eager_latency_ms(encoder, resolution, args.repeats)
                for program in _list(args.programs):
                    print_row(bench_one(encoder, resolution, program, eager_ms, args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
