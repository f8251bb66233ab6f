"""Linear heads on frozen patch features and their training loop on cached features.

The head is DINOv3's linear head (``heads/linear_head.py``): Dropout2d(0.1) -> BatchNorm2d ->
1x1 conv, weights N(0, 0.01), bias 0. For depth its C = 256 outputs are bins turned into depth as
DINOv3's ``FeaturesToDepth`` does ("linear" bins in [min, max], weights relu(x) + 0.1, normalized).
Training: AdamW, linear warm-up then cosine to 0 (the one-cycle shape of the reference configs),
seeded batch sampling, head init and dropout, so a fixed seed reproduces the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class LinearHead(nn.Module):
    """[B, D, h, w] features -> [B, C, h, w] logits."""

    def __init__(self, dim: int, out: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.norm = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, out, kernel_size=1)
        nn.init.normal_(self.conv.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(self.dropout(feats)))


def depth_bins(num_bins: int = 256, min_depth: float = 1e-3, max_depth: float = 10.0) -> torch.Tensor:
    """Bin centres [num_bins] ("linear" strategy)."""
    return torch.linspace(min_depth, max_depth, num_bins)


def bins_to_depth(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """[B, K, h, w] bin logits -> [B, h, w] depth: weights relu(x) + 0.1 normalized over bins."""
    weights = torch.relu(logits) + 0.1
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.einsum("bkhw,k->bhw", weights, bins.to(logits))


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 30
    grad_clip: float | None = None

    def settings(self) -> dict:
        return {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                "weight_decay": self.weight_decay, "warmup": self.warmup, "optimizer": "AdamW"}


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# (head output on a batch of features, indices of that batch, step) -> loss
LossFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def train_head(head: nn.Module, feats: torch.Tensor, loss_fn: LossFn, config: TrainConfig, seed: int,
               device: torch.device) -> nn.Module:
    """Train ``head`` on cached ``feats`` [N, D, h, w]; returns it in eval mode on ``device``."""
    generator = torch.Generator().manual_seed(seed)
    head.to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout masks
        for step in range(config.steps):
            index = torch.randperm(len(feats), generator=generator)[: config.batch_size]
            loss = loss_fn(head(feats[index].to(device, non_blocking=True)), index, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(head.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
    return head.eval()


def seeded_head(dim: int, out: int, seed: int) -> LinearHead:
    """A LinearHead whose init depends only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LinearHead(dim, out)
