"""Frozen dense features, extracted once per image in batches (the heads then train on the cache).

Images are float ``[3, H, W]`` in [0, 1]; they are resized (bilinear, antialiased) to a size that
is a multiple of the model's patch size (or CNN stride) and run through the encoder under
``inference_mode`` (bf16 autocast on CUDA) in batches of ``batch_size`` on ``device``. The cache is
``[N, D, h, w]`` float32 on the CPU (channels first, as the 1x1 conv heads want it).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
import torch.nn.functional as F

from eupe.models.features import Encoder


def fit_to_patch(size: int, patch: int) -> int:
    """``size`` rounded to the nearest multiple of ``patch`` (at least one patch)."""
    return max(patch, int(round(size / patch)) * patch)


def model_size(encoder: Encoder, height: int, width: int) -> tuple[int, int]:
    """The input size for an image of ``height x width``: each side fitted to the patch size."""
    p = encoder.spec.patch_size
    return fit_to_patch(height, p), fit_to_patch(width, p)


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, *size] (bilinear, antialiased when shrinking)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def encode_patches(encoder: Encoder, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One batch [B, 3, H, W] (sides already patch multiples) -> patch features [B, D, h, w] float32 on CPU."""
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with torch.inference_mode(), amp:
        patch = encoder(pixels.to(device, non_blocking=True))["patch"]  # [B, h, w, D]
    return patch.float().permute(0, 3, 1, 2).contiguous().cpu()  # -> [B, D, h, w]


def extract(encoder: Encoder, images: Sequence[torch.Tensor], size: tuple[int, int], batch_size: int,
            device: torch.device) -> torch.Tensor:
    """Patch features [N, D, h, w] of every image (each float [3, H, W] in [0, 1]) at input ``size``."""
    encoder.to(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([resize(img[None].float(), size)[0] for img in images[start:start + batch_size]])
        out.append(encode_patches(encoder, batch, device))
    return torch.cat(out)
