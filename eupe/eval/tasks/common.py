"""Helpers shared by the classification tasks (kNN, zero-shot): labelled data and feature extraction."""

from __future__ import annotations

from pathlib import Path

import torch

from eupe.eval.datasets import LabelledImages, load_split
from eupe.eval.protocol import FASHION_MNIST
from eupe.eval.tasks.base import OFFLINE, EvalContext, EvalModel

FASHION_LABEL = "Fashion-MNIST, Debian dataset-fashion-mnist"


def labelled_split(ctx: EvalContext, limit: int | None) -> tuple[LabelledImages, LabelledImages, str, bool]:
    """(train, test, data label, offline) for ``ctx.data``: Fashion-MNIST offline, else the given source."""
    if ctx.data == OFFLINE:
        train, test = load_split(FASHION_MNIST, limit=limit, seed=ctx.seed)
        return train, test, f"offline: {FASHION_LABEL} ({len(train)} train / {len(test)} test)", True
    train, test = load_split(ctx.data, limit=limit, seed=ctx.seed)
    return train, test, f"{Path(ctx.data).name or ctx.data} ({len(train)} train / {len(test)} test)", False


def features(model: EvalModel, part: LabelledImages, ctx: EvalContext, what: str, resolution: int | None,
             transform: str, embed=None) -> torch.Tensor:
    """Features ``[N, D]`` of ``part`` in batches of ``ctx.batch_size``, reporting progress."""
    from eupe.eval.knn import extract_features

    done = [0]

    def step(n: int) -> None:
        done[0] += n
        ctx.report(f"{model.name} {what}", done[0], len(part))

    return extract_features(model.encoder, part.images, resolution, ctx.batch_size, step, transform, embed)
