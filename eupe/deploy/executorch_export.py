"""Export a student to an ExecuTorch program (``.pte``) for phones, and check it against eager.

Path: ``torch.export.export`` of a tensor-returning wrapper -> (optional XNNPACK 8-bit PT2E
quantization) -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner ->
``to_executorch()``. Programs take one fixed-size image ``[1, 3, R, R]`` in [0, 1] (the
encoder normalizes it itself) and return ``(summary [1, D], patch [1, h, w, D])``.

Before export the encoder is copied and made delegate-friendly without changing its maths:
timm's ViT attention builds its qkv bias at run time (``cat(q_bias, 0, v_bias)``), which
leaves the qkv linear outside XNNPACK (and, quantized, leaves a per-channel dequantize the
runtime has no kernel for), so the bias is folded into the ``qkv`` linear once; and attention
is written as matmul + softmax, which XNNPACK takes whole (see :func:`deployable`).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eupe.models.features import Encoder

QUANTIZE_CHOICES = ("int8",)
FP32_TOLERANCE = 1e-4  # max abs difference to eager allowed for an fp32 program
INT8_MIN_COSINE = 0.99  # mean cosine to eager required of an int8 program


class FeatureTensors(nn.Module):
    """``Encoder`` behind a tuple interface: pixels -> ``(summary, patch)`` (torch.export needs tensors)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(pixels)
        return out["summary"], out["patch"]


def _fold_qkv_bias(module: nn.Module) -> bool:
    """Move a timm attention's separate q/k/v biases into its fused ``qkv`` linear (same output)."""
    qkv = getattr(module, "qkv", None)
    if not isinstance(qkv, nn.Linear) or qkv.bias is not None or getattr(module, "q_bias", None) is None:
        return False
    bias = torch.cat((module.q_bias, module.k_bias, module.v_bias)).detach().clone()
    qkv.bias = nn.Parameter(bias, requires_grad=False)
    module.q_bias = module.k_bias = module.v_bias = None
    return True


def _unfuse_attention(module: nn.Module) -> None:
    """Explicit softmax attention instead of ``F.scaled_dot_product_attention`` (same maths).

    The SDPA decomposition adds masking ops (``any``/``where``) that XNNPACK does not take;
    matmul + softmax are delegated whole.
    """
    if isinstance(getattr(module, "fused_attn", None), bool):
        module.fused_attn = False


def deployable(encoder: Encoder) -> FeatureTensors:
    """An eval-mode copy of ``encoder`` wrapped for export: qkv biases folded, attention unfused."""
    model = copy.deepcopy(encoder).eval()
    for module in model.modules():
        _fold_qkv_bias(module)
        _unfuse_attention(module)
    return FeatureTensors(model).eval()


def example_input(resolution: int) -> torch.Tensor:
    """The input an exported program takes: one ``resolution`` x ``resolution`` image."""
    return torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))


def photo_pixels(resolution: int, count: int, offset: int = 0) -> torch.Tensor:
    """``[count, 3, R, R]``: full views of bundled real photos ``offset:offset+count``, rendered by
    the shared renderer; seeded random pixels stand in where fewer photos are installed."""
    from eupe.assets import bundled_photos
    from eupe.views import ViewSpec, decode_image, render

    images = []
    for photo in bundled_photos()[offset:offset + count]:
        image = decode_image(photo.read_bytes())
        images.append(render(image, ViewSpec.full(image.shape[1], image.shape[2], resolution, resolution)))
    generator = torch.Generator().manual_seed(1 + offset)
    images += [torch.rand(3, resolution, resolution, generator=generator) for _ in range(count - len(images))]
    return torch.stack(images)


def calibration_pixels(resolution: int, count: int = 8) -> torch.Tensor:
    """Images that calibrate int8 quantization: the first ``count`` bundled photos."""
    return photo_pixels(resolution, count)


def check_pixels(resolution: int, count: int = 3) -> torch.Tensor:
    """Images for parity checks: bundled photos after the calibration ones (held out)."""
    return photo_pixels(resolution, count, offset=8)


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
    tmp = out_path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out_path)
    return out_path


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


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def compare(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Max abs diff and mean/min cosine (per summary vector, per patch token) of two outputs."""
    result: dict[str, float] = {}
    for name, ref, got in zip(("summary", "patch"), reference, candidate):
        if ref.shape != got.shape:
            raise ValueError(f"{name}: shape {got.shape} differs from the eager {ref.shape}")
        cos = _cosines(ref, got)
        result[f"{name}_max_abs_diff"] = float(np.abs(ref - got).max())
        result[f"{name}_cosine_mean"] = float(cos.mean())
        result[f"{name}_cosine_min"] = float(cos.min())
    return result


@torch.no_grad()
def eager_outputs(encoder: Encoder, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The eager encoder's (summary, patch) as numpy arrays."""
    out = encoder.eval()(pixels)
    return out["summary"].numpy(), out["patch"].numpy()


def parity(encoder: Encoder, pte_path: str | Path, pixels: torch.Tensor) -> dict[str, float]:
    """How closely a ``.pte`` reproduces the eager encoder on ``pixels`` (see :func:`compare`)."""
    return compare(eager_outputs(encoder, pixels), run_pte(pte_path, pixels))


def max_abs_diff(result: dict[str, float]) -> float:
    """The larger of the summary and patch max abs differences of a parity result."""
    return max(result["summary_max_abs_diff"], result["patch_max_abs_diff"])


def min_mean_cosine(result: dict[str, float]) -> float:
    """The smaller of the summary and patch mean cosines of a parity result."""
    return min(result["summary_cosine_mean"], result["patch_cosine_mean"])


def passes(result: dict[str, float], quantize: str | None) -> bool:
    """fp32: max abs diff <= 1e-4; int8: mean cosine >= 0.99 for summary and patch."""
    if quantize is None:
        return max_abs_diff(result) <= FP32_TOLERANCE
    return min_mean_cosine(result) >= INT8_MIN_COSINE


def xnnpack_threads() -> int:
    """Threads of the ExecuTorch (XNNPACK) threadpool in this process."""
    import executorch.extension.pybindings.portable_lib as runtime

    return int(runtime._threadpool_get_thread_count())
