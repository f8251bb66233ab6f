"""Export a student to an ExecuTorch program (``.pte``) for phones, and run it.

Path: ``torch.export.export`` of the delegate-friendly copy (:mod:`eupe.deploy.traceable`) ->
(optional XNNPACK 8-bit PT2E quantization) -> ``to_edge_transform_and_lower`` with the XNNPACK
partitioner -> ``to_executorch()``. Programs take one fixed-size image ``[1, 3, R, R]`` in [0, 1]
(the encoder normalizes it itself) and return ``(summary [1, D], patch [1, h, w, D])``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eupe.deploy.parity import calibration_pixels
from eupe.deploy.traceable import deployable, example_input
from eupe.fileio import atomic_write
from eupe.models.features import Encoder

QUANTIZE_CHOICES = ("int8",)


def _compute_quantizer() -> Any:
    """An ``XNNPACKQuantizer`` (symmetric int8, per-channel weights) for convolutions and linears only.

    executorch 1.5.1's quantizer also quantizes every ``cat`` (ignoring filter functions) with
    one scale shared by its inputs, and ``add``/``mul`` per tensor: for a ViT that puts the
    small CLS/register tokens on the patch tokens' scale and the RoPE tables on 8 bits. Keeping
    those fp32 costs a few quantize/dequantize pairs and keeps the features close to eager.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    class ComputeOnlyQuantizer(XNNPACKQuantizer):
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS
                              if p.name.startswith(("conv", "linear"))]

    return ComputeOnlyQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _quantize(program: torch.export.ExportedProgram, calibration: torch.Tensor) -> torch.export.ExportedProgram:
    """XNNPACK 8-bit static PT2E quantization of ``program``, calibrated one image at a time."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(program.module(), _compute_quantizer())
    with torch.no_grad():
        for image in calibration:
            prepared(image[None])
    return torch.export.export(convert_pt2e(prepared), (calibration[:1],))


def to_pte_bytes(encoder: Encoder, resolution: int, quantize: str | None = None,
                 calibration: torch.Tensor | None = None) -> bytes:
    """The serialized ExecuTorch program of ``encoder`` at ``resolution`` (XNNPACK-delegated)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES} or None, not {quantize!r}")
    encoder.check_input(resolution, resolution)
    with torch.no_grad():
        program = torch.export.export(deployable(encoder), (example_input(resolution),))
        if quantize == "int8":
            pixels = calibration if calibration is not None else calibration_pixels(resolution)
            program = _quantize(program, pixels)
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        return lowered.to_executorch().buffer


def export_pte(encoder: Encoder, resolution: int, out_path: str | Path, quantize: str | None = None,
               calibration: torch.Tensor | None = None) -> Path:
    """Write the ``.pte`` program of ``encoder`` for ``resolution``-pixel square inputs.

    ``quantize="int8"`` applies XNNPACK 8-bit PT2E quantization calibrated on ``calibration``
    (default: the bundled photos rendered at ``resolution``).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = to_pte_bytes(encoder, resolution, quantize, calibration)
    return atomic_write(out_path, lambda tmp: tmp.write_bytes(data))


@lru_cache(maxsize=8)
def _load_method(path: str, mtime_ns: int) -> Any:
    from executorch.runtime import Runtime

    return Runtime.get().load_program(path).load_method("forward")


def load_pte(path: str | Path) -> Any:
    """The ``forward`` method of a ``.pte`` loaded by the ExecuTorch runtime (cached per file)."""
    path = Path(path)
    return _load_method(str(path.resolve()), path.stat().st_mtime_ns)


def run_pte(path: str | Path, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Run a ``.pte`` on ``pixels [B, 3, R, R]`` (one image at a time) -> (summary, patch) arrays."""
    method = load_pte(path)
    summaries, patches = [], []
    for image in pixels.detach().float().contiguous():
        summary, patch = method.execute((image[None].contiguous(),))
        summaries.append(summary.numpy().copy())
        patches.append(patch.numpy().copy())
    return np.concatenate(summaries), np.concatenate(patches)


def xnnpack_threads() -> int:
    """Threads of the ExecuTorch (XNNPACK) threadpool in this process."""
    import executorch.extension.pybindings.portable_lib as runtime

    return int(runtime._threadpool_get_thread_count())
