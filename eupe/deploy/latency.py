"""Latency of a student: eager PyTorch vs its ExecuTorch programs, one image at a time.

Timings are medians of wall-clock runs after warm-up, batch 1 (how a phone runs it). Each row
records the threads used: ``torch.get_num_threads()`` for eager, and the ExecuTorch XNNPACK
threadpool size for ``.pte`` programs (both default to the machine's cores).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from eupe.deploy.executorch_export import load_pte, xnnpack_threads
from eupe.models.features import Encoder

DEFAULT_RESOLUTIONS = (256, 384, 512)


def median_latency_ms(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall-clock milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def eager_latency_ms(encoder: Encoder, resolution: int, repeats: int = 10) -> float:
    """Median eager latency of one ``resolution``-pixel image (no autograd)."""
    pixels = torch.rand(1, 3, resolution, resolution)
    encoder = encoder.eval()

    def call() -> None:
        with torch.inference_mode():
            encoder(pixels)

    return median_latency_ms(call, repeats)


def pte_latency_ms(path: str | Path, resolution: int, repeats: int = 10) -> float:
    """Median latency of a ``.pte`` program on one ``resolution``-pixel image (ExecuTorch runtime)."""
    method = load_pte(path)
    inputs = (torch.rand(1, 3, resolution, resolution),)
    return median_latency_ms(lambda: method.execute(inputs), repeats)


def _variants(entry: str | Path | Mapping[str, str | Path]) -> dict[str, Path]:
    if isinstance(entry, Mapping):
        return {str(label): Path(path) for label, path in entry.items()}
    return {"pte": Path(entry)}


def bench_eager_vs_pte(encoder: Encoder, pte_paths_by_res: Mapping[int, str | Path | Mapping[str, str | Path]],
                       repeats: int = 10) -> list[dict[str, Any]]:
    """One row per (resolution, program): eager and ``.pte`` median ms, speed-up and threads.

    ``pte_paths_by_res`` maps a resolution to a ``.pte`` path or to ``{label: path}`` (e.g.
    ``{"fp32": ..., "int8": ...}``); eager is timed once per resolution.
    """
    rows = []
    for resolution in sorted(pte_paths_by_res):
        eager_ms = eager_latency_ms(encoder, resolution, repeats)
        for label, path in _variants(pte_paths_by_res[resolution]).items():
            pte_ms = pte_latency_ms(path, resolution, repeats)
            rows.append({"student": encoder.spec.name, "resolution": resolution, "program": label,
                         "eager_ms": eager_ms, "pte_ms": pte_ms, "speedup": eager_ms / pte_ms,
                         "torch_threads": torch.get_num_threads(), "xnnpack_threads": xnnpack_threads()})
    return rows


def set_threads(threads: int) -> None:
    """Use ``threads`` threads in both torch (eager) and the ExecuTorch XNNPACK threadpool."""
    import executorch.extension.pybindings.portable_lib as runtime

    torch.set_num_threads(threads)
    runtime._unsafe_reset_threadpool(threads)


def machine_line() -> str:
    """CPU model, cores, torch version and threads, XNNPACK threads: the context of a timing."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    xnnpack = ""
    if "executorch.extension.pybindings.portable_lib" in sys.modules:  # do not load the runtime just to ask
        xnnpack = f"XNNPACK threadpool {xnnpack_threads()} threads, "
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"{xnnpack}{platform.system()} {platform.release()}")
