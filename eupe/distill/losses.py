"""Distillation losses: how far the student's projected features are from each teacher's.

Per teacher (as in EUPE): cosine distance on the summary token, and on the patch tokens a
mix of cosine distance (0.9) and smooth-L1 (0.1), after bringing the student and teacher
patch grids to one size by bicubic upsampling of the smaller one. ``DistillLoss`` is the
configured object (weights from ``LossConfig``, built by ``LossConfig.build``); ``distill_loss``
is the same computation with the paper's defaults. Targets are expected to
be normalized (per-coordinate mean/std) by the caller. Everything is computed in float32,
also when the inputs are bf16 or the call happens under autocast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eupe.models.features import Features


@dataclass
class LossConfig:
    """Weights of the EUPE loss terms; ``build`` makes the ``DistillLoss`` module."""

    summary_weight: float = 1.0  # paper: the summary (CLS) cosine term counts once per teacher
    patch_weight: float = 1.0  # paper: the patch term counts once (times each teacher's patch_weight)
    patch_cos_weight: float = 0.9  # paper: patches = 0.9 cosine ...
    patch_smooth_l1_weight: float = 0.1  # paper: ... + 0.1 smooth-L1
    smooth_l1_beta: float = 1.0  # ours: the paper does not give beta; torch's default

    def build(self, patch_weights: dict[str, float] | None = None) -> "DistillLoss":
        return DistillLoss(self, patch_weights)



def _resize_grid(patch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a [B, h, w, D] grid to [B, *size, D]; unchanged if already that size."""
    if tuple(patch.shape[1:3]) == size:
        return patch
    chw = patch.permute(0, 3, 1, 2)  # [B, h, w, D] -> [B, D, h, w]
    out = F.interpolate(chw, size=size, mode="bicubic", align_corners=False, antialias=False)
    return out.permute(0, 2, 3, 1)  # [B, D, H, W] -> [B, H, W, D]


def match_grids(pred_patch: torch.Tensor, target_patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring [B, h1, w1, D] and [B, h2, w2, D] grids to one [B, H, W, D] size.

    The smaller grid is upsampled (bicubic, align_corners=False, no antialias) to the larger;
    identical grids come back unchanged. The common size is (max(h1, h2), max(w1, w2)), so
    nothing is ever downsampled, even for grids where neither contains the other.
    """
    if pred_patch.ndim != 4 or target_patch.ndim != 4:
        raise ValueError(
            f"patch grids must be [B, h, w, D], got {tuple(pred_patch.shape)} and {tuple(target_patch.shape)}"
        )
    size = (max(pred_patch.shape[1], target_patch.shape[1]), max(pred_patch.shape[2], target_patch.shape[2]))
    return _resize_grid(pred_patch, size), _resize_grid(target_patch, size)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over all vectors of (1 - cosine similarity) along the last dim; a float32 scalar."""
    cos = F.cosine_similarity(pred.float(), target.float(), dim=-1)
    return (1.0 - cos).mean()


def _check_keys(pred: Mapping[str, Features], target: Mapping[str, Features]) -> None:
    missing, extra = sorted(set(target) - set(pred)), sorted(set(pred) - set(target))
    if missing or extra:
        raise ValueError(
            f"teachers differ between predictions and targets: "
            f"only in targets {missing}, only in predictions {extra}"
        )


def _patch_weights(
    teachers: Mapping[str, Features], patch_weights: Mapping[str, float] | None
) -> dict[str, float]:
    """Each teacher's patch-term weight; 1 where ``patch_weights`` does not name it."""
    weights = dict(patch_weights or {})
    unknown = sorted(set(weights) - set(teachers))
    if unknown:
        raise ValueError(f"patch_weights names unknown teachers {unknown}; teachers are {sorted(teachers)}")
    return {name: float(weights.get(name, 1.0)) for name in teachers}


# loss-term names of older runs' losses.jsonl -> today's (a "*_cos" that falls read as a similarity)
RENAMED_TERMS = {"summary_cos": "summary_cos_loss", "patch_cos": "patch_cos_loss"}


def upgrade_record(record: dict) -> dict:
    """A losses.jsonl record with older term names ("teacher/summary_cos") renamed to today's."""
    out = {}
    for key, value in record.items():
        teacher, _, term = key.rpartition("/")
        out[f"{teacher}/{RENAMED_TERMS[term]}" if teacher and term in RENAMED_TERMS else key] = value
    return out


def teacher_losses(pred: Features, target: Features, patch_weight: float = 1.0,
                   cfg: LossConfig | None = None) -> dict[str, torch.Tensor]:
    """One teacher's terms: summary_cos_loss, patch_cos_loss (1 - cosine: they fall as training improves),
    patch_smooth_l1 and their weighted sum, loss."""
    cfg = cfg or LossConfig()
    pred_patch, target_patch = match_grids(pred["patch"].float(), target["patch"].float())
    terms = {
        "summary_cos_loss": cosine_loss(pred["summary"], target["summary"]),
        "patch_cos_loss": cosine_loss(pred_patch, target_patch),
        "patch_smooth_l1": F.smooth_l1_loss(pred_patch, target_patch, beta=cfg.smooth_l1_beta),
    }
    patch = cfg.patch_cos_weight * terms["patch_cos_loss"] + cfg.patch_smooth_l1_weight * terms["patch_smooth_l1"]
    terms["loss"] = cfg.summary_weight * terms["summary_cos_loss"] + cfg.patch_weight * patch_weight * patch
    return terms


class DistillLoss(nn.Module):
    """All teachers' loss terms, keyed ``"{teacher}/{term}"``, plus ``"total"`` (sum of the ``/loss``).

    ``pred`` comes from ``DistillModel`` (student grid), ``target`` from the teachers (their grid).
    ``patch_weights`` scales each teacher's patch term (default 1). Mismatched teachers raise ValueError.
    """

    def __init__(self, cfg: LossConfig | None = None, patch_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.patch_weights = dict(patch_weights or {})

    def forward(self, pred: Mapping[str, Features], target: Mapping[str, Features]) -> dict[str, torch.Tensor]:
        _check_keys(pred, target)
        if not target:
            raise ValueError("distill_loss needs at least one teacher")
        weights = _patch_weights(target, self.patch_weights)
        first = next(iter(pred.values()))["summary"]
        out: dict[str, torch.Tensor] = {}
        with torch.autocast(device_type=first.device.type, enabled=False):
            for name in target:
                for term, value in teacher_losses(pred[name], target[name], weights[name], self.cfg).items():
                    out[f"{name}/{term}"] = value
            out["total"] = torch.stack([out[f"{name}/loss"] for name in target]).sum()
        return out


def distill_loss(
    pred: Mapping[str, Features],
    target: Mapping[str, Features],
    patch_weights: Mapping[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """``DistillLoss`` with the paper's weights (``LossConfig()``) applied once."""
    return DistillLoss(LossConfig(), patch_weights)(pred, target)
