"""Sliding-window inference (mmseg/DINOv3 ``slide_inference``) and Probe3D's correspondence matching."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one side; the last window ends at the border."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride + crop, size) - crop, 0) for i in range(count)})


def slide_inference(image: torch.Tensor, crop: int, stride: int,
                    logits_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Logits [C, H, W] of ``image`` [3, H, W]: ``logits_fn`` ([1, 3, h, w] -> [1, C, h, w]) on every
    ``crop`` window (stride ``stride``), summed into place and divided by the window count per pixel."""
    _, height, width = image.shape
    total = count = None
    for top in window_starts(height, crop, stride):
        for left in window_starts(width, crop, stride):
            window = image[None, :, top:top + crop, left:left + crop]
            logits = logits_fn(window)[0]  # [C, h, w]
            if total is None:
                total = logits.new_zeros(logits.shape[0], height, width)
                count = logits.new_zeros(1, height, width)
            total[:, top:top + window.shape[2], left:left + window.shape[3]] += logits
            count[:, top:top + window.shape[2], left:left + window.shape[3]] += 1
    return total / count


def pixel_to_grid(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Continuous pixel coordinates [N, 2] (x, y; pixel j spans [j, j + 1]) -> grid_sample's [-1, 1]."""
    scale = torch.tensor([width, height], dtype=torch.float32)
    return xy.float() / scale * 2 - 1


def match_keypoints(src_feats: torch.Tensor, tgt_feats: torch.Tensor, src_xy: torch.Tensor,
                    src_size: tuple[int, int], tgt_size: tuple[int, int]) -> torch.Tensor:
    """Probe3D's rule: L2-normalized features, the source keypoint's feature bilinearly sampled
    (``grid_sample``), argmax of the similarity over the target patch grid (no upsampling), the
    prediction is that patch's centre. src/tgt feats [D, h, w], src_xy [N, 2] continuous pixel coordinates of an image of
    ``src_size`` (H, W) -> predicted [N, 2] pixels in an image of ``tgt_size``."""
    src = F.normalize(src_feats.float(), dim=0)
    tgt = F.normalize(tgt_feats.float(), dim=0)
    grid = pixel_to_grid(src_xy, *src_size).view(1, 1, -1, 2)  # [1, 1, N, 2]
    query = F.grid_sample(src[None], grid, mode="bilinear", align_corners=False)[0, :, 0]  # [D, N]
    query = F.normalize(query, dim=0)
    _, h, w = tgt.shape
    best = (query.T @ tgt.flatten(1)).argmax(dim=1)  # [N] index into h*w
    rows, cols = best // w, best % w
    height, width = tgt_size
    return torch.stack([(cols.float() + 0.5) * width / w, (rows.float() + 0.5) * height / h], dim=1)
