"""What the three dense tasks share: the figure they report and the label/depth downsampling for losses."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from eupe.eval.tasks.base import EvalModel, Figure


def figure(task: str, metric: str, value: float | None, model: EvalModel, data: str, offline: bool,
           settings: dict[str, Any], higher_is_better: bool = True, reason: str | None = None) -> Figure:
    """A Figure of ``model`` (value rounded to 4 decimals)."""
    return Figure(task=task, metric=metric, value=None if value is None else round(float(value), 4),
                  model=model.name, fingerprint=model.fingerprint, data=data, offline=offline,
                  higher_is_better=higher_is_better, settings=settings, reason=reason)


def loss_grid(feature_grid: tuple[int, int], factor: int) -> tuple[int, int]:
    """The loss resolution: ``factor`` times the patch grid (not the full image: ~10x cheaper steps)."""
    return feature_grid[0] * factor, feature_grid[1] * factor


def nearest(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Label or depth maps [N, H, W] nearest-resized to ``size`` (labels stay labels, NaN stays NaN)."""
    dtype = maps.dtype
    out = F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0]
    return out.to(dtype)


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, C, h, w] -> [B, C, *size] bilinear (logits or depth), as the references resize predictions."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
