"""Shared test data for the deploy tests: tiny-student kwargs, a training record, a seeded builder,
a real photo as a file beside its rendering."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from eupe.models.features import Encoder
from eupe.models.students import create_student
from eupe.views.renderer import render
from eupe.views.source import decode_image
from eupe.views.spec import ViewSpec

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


def photo_file(photos, folder: Path) -> torch.Tensor:
    """A real JPEG photo copied to ``folder/photo.jpg``; returns the project's own rendering of it
    (the full image at 64 px) [1, 3, 64, 64] in [0, 1]."""
    photo = next(p for p in photos if p.path.suffix == ".jpg")
    shutil.copy(photo.path, folder / "photo.jpg")
    image = decode_image(photo.read_bytes())
    return render(image, ViewSpec.full(image.shape[1], image.shape[2], 64, 64))[None]
