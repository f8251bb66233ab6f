"""Shared test data for the deploy tests: tiny-student kwargs, a training record, a seeded builder."""

from __future__ import annotations

import torch

from eupe.models import Encoder, create_student

TINY_KWARGS = {
    "vit_t": {"embed_dim": 64, "depth": 2, "num_heads": 2},
    "convnext_t": {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)},
}
INFO = {"stage": 2, "teachers": ["proxy"],
        "config": {"stage": 2, "data": {"shards": "photos-{000000..000001}.tar", "store": "cache/photos"},
                   "optim": {"lr": 2e-5}},
        "metrics": {"knn_top1": 0.42}}


def tiny_student(name: str, seed: int = 0) -> Encoder:
    """A test-scale student with a fixed random init."""
    torch.manual_seed(seed)
    return create_student(name, test_scale=True)
