"""The delegate-friendly copy of a student that the graph exporters (ExecuTorch, ONNX) trace.

Before export the encoder is copied and made delegate-friendly without changing its maths:
timm's ViT attention builds its qkv bias at run time (``cat(q_bias, 0, v_bias)``), which
leaves the qkv linear outside XNNPACK (and, quantized, leaves a per-channel dequantize the
runtime has no kernel for), so the bias is folded into the ``qkv`` linear once; and attention
is written as matmul + softmax, which XNNPACK takes whole (see :func:`deployable`). The copy
returns a ``(summary, patch)`` tuple because ``torch.export`` needs tensors, not dicts.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from eupe.models.features import Encoder


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

