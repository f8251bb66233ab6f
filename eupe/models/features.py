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
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

from eupe.models.weights import WeightsSource

# cls: first token; attn_pool: the model's attention-pooling head, for models whose pool output
# is their embedding (no projection after it: SigLIP2's MAP head); attn_pool_proj: attention pool
# then the model's projection (timm's full head: PE-core's text-aligned CLIP embedding);
# avg_pool_norm: DINOv3/EUPE ConvNeXt: one final LayerNorm (timm's head.norm) over the global
# average pool *and* every patch token; mean: mean of the patch tokens.
Summary = Literal["cls", "attn_pool", "attn_pool_proj", "avg_pool_norm", "mean"]
Features = dict[str, torch.Tensor]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything a user needs to know about a registered encoder, and how to build it."""

    name: str
    timm_name: str
    resolution: int  # native input side in pixels
    patch_size: int  # ViT patch size, or total stride of a CNN's feature map
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    summary: Summary
    prefix_tokens: str  # which prefix tokens exist and are dropped from the patch grid
    num_prefix_tokens: int
    summary_dim: int
    patch_dim: int
    weights: WeightsSource
    description: str = ""
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    test_kwargs: dict[str, Any] = field(default_factory=dict)  # tiny width/depth for tests
    builder: Callable[..., nn.Module] | None = None  # custom (backbone, fingerprint) builder

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch-grid size for an input of ``height`` x ``width`` pixels."""
        return height // self.patch_size, width // self.patch_size

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (what the store records as preprocessing)."""
        return {
            "name": self.name,
            "architecture": self.timm_name,
            "resolution": self.resolution,
            "patch_size": self.patch_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "summary": self.summary,
            "prefix_tokens": self.prefix_tokens,
            "summary_dim": self.summary_dim,
            "patch_dim": self.patch_dim,
            "weights_source": self.weights.describe(),
        }


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


def run_teacher(teacher: Encoder, pixels: torch.Tensor, batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """The teacher forward of extraction and verify: summary [n, D] and patch [n, h*w, D] float32 numpy.

    Runs in fixed sub-batches of ``batch_size`` (bf16 autocast on CUDA, as the cache is extracted)."""
    summaries, patches = [], []
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with torch.inference_mode(), amp:
        for start in range(0, len(pixels), batch_size):
            out = teacher(pixels[start:start + batch_size].to(device, non_blocking=True))
            summaries.append(out["summary"].float().cpu())
            patches.append(out["patch"].flatten(1, 2).float().cpu())  # [b, h, w, D] -> [b, h*w, D]
    return torch.cat(summaries).numpy(), torch.cat(patches).numpy()
