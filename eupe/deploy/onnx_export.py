"""Export a student to ONNX (``torch.onnx.export``, dynamo exporter) and check it with onnxruntime.

The graph takes ``pixels [batch, 3, R, R]`` in [0, 1] (dynamic batch, fixed side) and returns
``summary [batch, D]`` and ``patch [batch, h, w, D]``. The dynamo exporter needs the
``onnxscript`` package; the export uses the same delegate-friendly copy as ExecuTorch.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from eupe.deploy.executorch_export import compare, deployable, eager_outputs, example_input
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
    program.save(str(out_path))
    return out_path


def run_onnx(path: str | Path, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported graph with onnxruntime (CPU) -> (summary, patch) arrays."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    summary, patch = session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixels.detach().float().numpy()})
    return summary, patch


def onnx_parity(encoder: Encoder, onnx_path: str | Path, pixels: torch.Tensor) -> dict[str, float]:
    """Max abs diff and mean/min cosine of the onnxruntime outputs vs the eager encoder."""
    return compare(eager_outputs(encoder, pixels), run_onnx(onnx_path, pixels))
