"""The one feature contract every teacher, proxy and student follows.

An ``Encoder`` wraps a timm backbone. It takes pixels in [0, 1] (as the shared view
renderer produces them), applies the model's own input normalization, and returns

    {"summary": [B, D], "patch": [B, h, w, D]}

where ``summary`` is formed as the spec says (CLS token, attention pool with or without the
model's projection, average pool + norm, or mean of the patch tokens), prefix tokens (CLS,
registers) are dropped from the patch grid, and ``h, w`` = input size // patch size (ViTs) or
the stride-32 map (CNNs). ``summary`` and ``patch`` may differ in width (PE-core's projected
embedding is 1280-wide, its patch tokens 1536).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from eupe.models.spec import HALF, IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, Summary

__all__ = ["HALF", "IMAGENET_MEAN", "IMAGENET_STD", "Encoder", "EncoderSpec", "Features", "Summary", "run_teacher"]

Features = dict[str, torch.Tensor]


class Encoder(nn.Module):
    """A backbone behind the feature contract. ``fingerprint`` identifies its weights."""

    def __init__(self, spec: EncoderSpec, backbone: nn.Module, fingerprint: str) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.fingerprint = fingerprint
        self.num_prefix_tokens = int(getattr(backbone, "num_prefix_tokens", 0))
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        """Width of the patch tokens."""
        return int(self.backbone.num_features)

    @property
    def summary_dim(self) -> int:
        """Width of the summary token (the projection's width for ``attn_pool_proj``)."""
        return int(self.backbone.num_classes) if self.spec.summary == "attn_pool_proj" else self.dim

    def check_input(self, height: int, width: int) -> None:
        p = self.spec.patch_size
        if height % p or width % p:
            raise ValueError(
                f"{self.spec.name}: input {height}x{width} is not a multiple of its patch size {p}"
            )

    def forward(self, pixels: torch.Tensor) -> Features:
        """pixels: float [B, 3, H, W] in [0, 1] -> {"summary": [B, D], "patch": [B, h, w, D]}."""
        batch, _, height, width = pixels.shape
        self.check_input(height, width)
        x = (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)
        out = self.backbone.forward_features(x)
        if out.ndim == 4:  # CNN map [B, D, h, w] -> [B, h, w, D]
            patch = self._cnn_patch(out).permute(0, 2, 3, 1)
        else:  # ViT tokens [B, prefix + h*w, D] -> [B, h, w, D]
            h, w = self.spec.grid(height, width)
            patch = out[:, self.num_prefix_tokens :].reshape(batch, h, w, out.shape[-1])
        return {"summary": self._summary(out, patch), "patch": patch}

    def _cnn_patch(self, out: torch.Tensor) -> torch.Tensor:
        """DINOv3's ConvNeXt normalizes its patch tokens with the final norm (timm: head.norm)."""
        if self.spec.summary == "avg_pool_norm":
            return self.backbone.head.norm(out)  # LayerNorm2d over channels: [B, D, h, w]
        return out

    def _summary(self, out: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        if self.spec.summary == "cls":
            return out[:, 0]
        if self.spec.summary == "attn_pool_proj":  # timm's full head: pool + projection
            return self.backbone.forward_head(out)
        if self.spec.summary in ("attn_pool", "avg_pool_norm"):  # timm's pooling head, pre-logits
            return self.backbone.forward_head(out, pre_logits=True)
        return patch.mean(dim=(1, 2))


def teacher_batch(teacher: Encoder, pixels: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One teacher forward as the cache is extracted (bf16 autocast on CUDA): float32 summary [b, Ds]
    and patch [b, h*w, D], left on ``device``."""
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with torch.inference_mode(), amp:
        out = teacher(pixels.to(device, non_blocking=True))
    return out["summary"].float(), out["patch"].flatten(1, 2).float()  # [b, h, w, D] -> [b, h*w, D]


def run_teacher(teacher: Encoder, pixels: torch.Tensor, batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """The teacher forward of extraction and verify: summary [n, D] and patch [n, h*w, D] float32 numpy,
    in fixed sub-batches of ``batch_size`` (:func:`teacher_batch`)."""
    outs = [teacher_batch(teacher, pixels[start:start + batch_size], device)
            for start in range(0, len(pixels), batch_size)]
    return torch.cat([s.cpu() for s, _ in outs]).numpy(), torch.cat([p.cpu() for _, p in outs]).numpy()
