"""Dense metrics as the reference code computes them.

* mIoU (DINOv3/mmseg ``metrics.py``): a confusion matrix accumulated over the whole split, pixels
  with the ignore label dropped; IoU per class = intersection / union, classes whose union is empty
  are NaN and left out of the mean (``nanmean``).
* Depth (DINOv3 ``depth/metrics.py``, ``eval.py``): per image, GT outside (min, max) and outside
  the Eigen crop ignored, prediction clamped to [min, max]; RMSE (and AbsRel, delta1) per image,
  then averaged over images.
* SigLoss (DINOv3 ``depth/loss.py``): g = log(pred + eps) - log(gt + eps),
  loss = sqrt(var(g) + 0.15 mean(g)^2); only the mean term during warm-up.
* PCK (Probe3D, SPair): a keypoint is correct when its error is at most ``alpha * scale``.
"""

from __future__ import annotations

import math

import torch

NYU_EIGEN_CROP = (45, 471, 41, 601)  # rows 45:471, cols 41:601 of a 480x640 NYUv2 depth map


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Confusion counts [C, C] (rows: ground truth, columns: prediction) of two label maps."""
    keep = target != ignore_index
    gt, pr = target[keep].long(), pred[keep].long()
    if gt.numel() and (int(gt.min()) < 0 or int(gt.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) or equal the ignore label {ignore_index}")
    return torch.bincount(gt * num_classes + pr, minlength=num_classes ** 2).view(num_classes, num_classes)


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """IoU per class [C] from a confusion matrix; NaN where the class is absent from GT and prediction."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, math.nan))


def mean_iou(conf: torch.Tensor, classes: slice | None = None) -> float:
    """mIoU in [0, 1]: nanmean of the per-class IoU (optionally over ``classes`` only)."""
    iou = iou_per_class(conf)
    iou = iou[classes] if classes is not None else iou
    return float(torch.nanmean(iou))


def eigen_mask(height: int, width: int, crop: tuple[int, int, int, int] | None = NYU_EIGEN_CROP) -> torch.Tensor:
    """Bool [H, W]: True inside the Eigen crop (everything when ``crop`` is None)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    if crop is None:
        mask[:] = True
    else:
        top, bottom, left, right = crop
        mask[top:bottom, left:right] = True
    return mask


def depth_errors(pred: torch.Tensor, gt: torch.Tensor, min_depth: float = 1e-3, max_depth: float = 10.0,
                 mask: torch.Tensor | None = None) -> dict[str, float]:
    """One image's RMSE (m), AbsRel and delta1 over valid GT pixels (pred, gt, mask: [H, W])."""
    valid = torch.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    if mask is not None:
        valid &= mask
    if not bool(valid.any()):
        raise ValueError("no valid ground-truth depth in this image")
    p = pred[valid].double().clamp(min_depth, max_depth)
    g = gt[valid].double()
    ratio = torch.maximum(p / g, g / p)
    return {"rmse": float(torch.sqrt(((p - g) ** 2).mean())), "abs_rel": float(((p - g).abs() / g).mean()),
            "delta1": float((ratio < 1.25).double().mean())}


def mean_depth_errors(per_image: list[dict[str, float]]) -> dict[str, float]:
    """Every metric averaged over images (RMSE per image, then averaged, as DINOv3 reports it)."""
    return {key: sum(e[key] for e in per_image) / len(per_image) for key in per_image[0]}


def sig_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, warm_up: bool = False,
             lam: float = 0.15, eps: float = 1e-3) -> torch.Tensor:
    """Scale-invariant log loss over the ``valid`` pixels of a batch (all tensors [B, H, W])."""
    g = torch.log(pred[valid] + eps) - torch.log(gt[valid] + eps)
    if warm_up:
        return torch.sqrt(lam * g.mean() ** 2)
    return torch.sqrt(g.var() + lam * g.mean() ** 2)


def pck(pred: torch.Tensor, gt: torch.Tensor, scale: torch.Tensor | float, alpha: float = 0.1) -> float:
    """Fraction of keypoints (pred, gt: [N, 2]) within ``alpha * scale`` (scale: scalar or [N])."""
    error = (pred.double() - gt.double()).norm(dim=-1)
    return float((error <= alpha * torch.as_tensor(scale, dtype=torch.float64)).double().mean())
