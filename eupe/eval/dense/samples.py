"""The dense tasks' data as a loader hands it over: segmentation and depth splits, correspondence pairs.

Both sources fill these: the offline fixtures (:mod:`eupe.eval.dense.fixtures`) and the standard
dataset layouts (:mod:`eupe.eval.dense.layouts`); the task modules ``eupe/eval/tasks/{seg,depth,corr}.py``
consume them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(kw_only=True)
class SegData:
    """A segmentation probe's split: fixed training views with labels, full-size validation images."""

    train_images: list[torch.Tensor]  # float [3, s, s] in [0, 1], one fixed training view each
    train_labels: torch.Tensor  # long [N, s, s]
    val_images: list[torch.Tensor]  # float [3, H, W] at evaluation scale
    val_labels: list[torch.Tensor]  # long [H, W] at ground-truth resolution
    num_classes: int
    name: str
    offline: bool
    garments: slice | None = None  # the classes reported in the second mIoU (offline: 1..10)


@dataclass
class DepthData:
    """A depth probe's split: training crops with metric depth, full-size test images."""

    train_images: list[torch.Tensor]  # float [3, s, s] (or [3, H, W]) in [0, 1]
    train_depth: torch.Tensor  # float [N, s, s] metres, NaN where unknown
    test_images: list[torch.Tensor]  # float [3, H, W]
    test_depth: list[torch.Tensor]  # float [H, W] metres, NaN where unknown
    name: str
    offline: bool


@dataclass
class Pair:
    """One correspondence pair: two images and matching keypoints, with the PCK threshold's scale."""

    source: torch.Tensor | None  # float [3, H, W] in [0, 1]; None once matched
    target: torch.Tensor | None
    source_xy: torch.Tensor  # [N, 2] continuous pixel coordinates in ``source``
    target_xy: torch.Tensor  # [N, 2] in ``target``
    scale: torch.Tensor | float  # PCK threshold = alpha * scale (pixels of ``target``)
    group: str = ""  # SPair category
