"""Export a student to ONNX (``torch.onnx.export``, dynamo exporter) and run it with onnxruntime.

The graph takes ``pixels [batch, 3, R, R]`` in [0, 1] (dynamic batch, fixed side) and returns
``summary [batch, D]`` and ``patch [batch, h, w, D]``. The dynamo exporter needs the
``onnxscript`` package; the export uses the same delegate-friendly copy as ExecuTorch.
"""

from __future__ import annotations

import contextlib
import io
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eupe.deploy.traceable import deployable, example_input
from eupe.fileio import atomic_write
from eupe.models.features import Encoder

INPUT_NAME = "pixels"
OUTPUT_NAMES = ("summary", "patch")


def export_onnx(encoder: Encoder, resolution: int, out_path: str | Path) -> Path:
    """Write ``encoder`` as an ONNX graph for ``resolution``-pixel square inputs."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    encoder.check_input(resolution, resolution)
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = example_input(resolution).repeat(2, 1, 1, 1)  # batch 1 would be specialized
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        program = torch.onnx.export(deployable(encoder), (example,), dynamo=True,
                                    input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes={"pixels": {0: batch}}, verbose=False)
    return atomic_write(out_path, lambda tmp: program.save(str(tmp)))


@lru_cache(maxsize=8)
def _session(path: str, mtime_ns: int) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def load_onnx(path: str | Path) -> Any:
    """An onnxruntime (CPU) session of an exported graph (cached per file)."""
    path = Path(path)
    return _session(str(path.resolve()), path.stat().st_mtime_ns)


def run_onnx(path: str | Path, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported graph with onnxruntime (CPU) -> (summary, patch) arrays."""
    summary, patch = load_onnx(path).run(list(OUTPUT_NAMES), {INPUT_NAME: pixels.detach().float().numpy()})
    return summary, patch


def onnx_latency_ms(path: str | Path, resolution: int, repeats: int = 10) -> float:
    """Median onnxruntime latency of one ``resolution``-pixel image (session created once)."""
    from eupe.deploy.latency import median_latency_ms

    session, feed = load_onnx(path), {INPUT_NAME: np.random.rand(1, 3, resolution, resolution).astype(np.float32)}
    return median_latency_ms(lambda: session.run(list(OUTPUT_NAMES), feed), repeats)
