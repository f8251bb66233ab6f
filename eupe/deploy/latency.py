"""Latency of a student: eager PyTorch vs its exported programs, one image at a time.

Timings are medians of wall-clock runs after warm-up, batch 1 (how a phone runs it). Each row
records the threads used: ``torch.get_num_threads()`` for eager, and the ExecuTorch XNNPACK
threadpool size for ``.pte`` programs (both default to the machine's cores).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from eupe.deploy.executorch_export import load_pte, xnnpack_threads
from eupe.models.features import Encoder


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
