"""Weighted k-nearest-neighbour classification of summary features (the DINO / EUPE kNN protocol).

Features are L2-normalized; each test image takes its ``k`` most cosine-similar training images
and each neighbour votes for its label with weight ``exp(similarity / T)``, ``T = 0.07``; the
class with the largest total wins (ties: the lowest label). Top-1 is the fraction of test images
whose winning class is their label. Features come from one view per image rendered by the shared
renderer (no augmentation): ``transform="eupe"`` resizes the short side to 256 and centre-crops 224
(scaled to the model's resolution: a centred square of 224/256 of the short side), ``"full"`` squashes
the whole image to the model's resolution.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from eupe.eval.protocol import CROP_RATIO, DEFAULT_KS, TEMPERATURE, TRANSFORMS
from eupe.models.features import Encoder
from eupe.views.renderer import render
from eupe.views.spec import ViewSpec


def eval_resolution(model: Encoder, resolution: int | None = None) -> int:
    """The input resolution to use: ``resolution`` (default: the model's), rounded down to its patch size."""
    resolution = resolution or model.spec.resolution
    patch = model.spec.patch_size
    if resolution < patch:
        raise ValueError(f"resolution {resolution} is smaller than {model.spec.name}'s patch size {patch}")
    return resolution - resolution % patch


def _model_device(model: Encoder) -> torch.device:
    return next(model.parameters()).device


def render_full(image: torch.Tensor, resolution: int) -> torch.Tensor:
    """The whole uint8 ``[3, H, W]`` image resized to float ``[3, r, r]`` in [0, 1]."""
    _, height, width = image.shape
    return render(image, ViewSpec.full(height, width, resolution, resolution))


def render_centre_crop(image: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize-256 / centre-crop-224 of a uint8 ``[3, H, W]`` image as float ``[3, r, r]`` in [0, 1].

    Resizing the short side to ``r / CROP_RATIO`` and cropping ``r`` is the same as cropping the
    centred square of ``CROP_RATIO`` x the short side and resizing it to ``r``.
    """
    _, height, width = image.shape
    side = max(1, int(round(min(height, width) * CROP_RATIO)))
    box = dict(top=(height - side) // 2, left=(width - side) // 2, height=side, width=side)
    return render(image, replace(ViewSpec.full(height, width, resolution, resolution), **box))


def render_eval(image: torch.Tensor, resolution: int, transform: str = "full") -> torch.Tensor:
    """One evaluation view: ``transform`` is ``"eupe"`` (centre crop) or ``"full"`` (squash)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    return render_centre_crop(image, resolution) if transform == "eupe" else render_full(image, resolution)


def summary_of(model: Encoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixels ``[B, 3, r, r]`` -> the model's summary token ``[B, D]``."""
    return lambda pixels: model(pixels)["summary"]


@torch.inference_mode()
def extract_features(model: Encoder, images: Sequence[torch.Tensor], resolution: int | None = None,
                     batch_size: int = 32, progress: Callable[[int], None] | None = None,
                     transform: str = "full",
                     embed: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Features ``[N, D]`` (float32, CPU) of uint8 ``[3, H, W]`` images, one view each.

    ``embed`` maps pixels to features (default: the model's summary token; zero-shot passes its
    CLIP-space summary); ``transform`` picks the view (:func:`render_eval`).
    """
    resolution = eval_resolution(model, resolution)
    device = _model_device(model)
    embed = embed or summary_of(model)
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = [render_eval(images[i], resolution, transform)
                 for i in range(start, min(start + batch_size, len(images)))]
        pixels = torch.stack(batch).to(device)
        chunks.append(embed(pixels).float().cpu())
        if progress is not None:
            progress(len(batch))
    if not chunks:
        raise ValueError("extract_features needs at least one image")
    return torch.cat(chunks)


def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, k: int,
                temperature: float = TEMPERATURE, chunk: int = 1024) -> torch.Tensor:
    """Predicted labels ``[N_test]`` by the temperature-weighted vote of the ``k`` nearest neighbours."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    train = F.normalize(train_feats.float(), dim=1)
    classes, train_idx = torch.unique(torch.as_tensor(train_labels), return_inverse=True)
    k = min(k, len(train))
    preds = []
    for start in range(0, len(test_feats), chunk):
        query = F.normalize(test_feats[start:start + chunk].float(), dim=1)
        sims, nearest = (query @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(query), len(classes))
        votes.scatter_add_(1, train_idx[nearest], (sims / temperature).exp())
        preds.append(classes[votes.argmax(dim=1)])
    return torch.cat(preds)


def knn_top1(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
             test_labels: torch.Tensor, k: int, temperature: float = TEMPERATURE) -> float:
    """Top-1 accuracy (0..1) of the weighted kNN classifier on the test set."""
    preds = knn_predict(train_feats, train_labels, test_feats, k, temperature)
    return float((preds == torch.as_tensor(test_labels)).float().mean())


def knn_top1_for_ks(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                    test_labels: torch.Tensor, ks: Sequence[int] = DEFAULT_KS,
                    temperature: float = TEMPERATURE) -> dict[int, float]:
    """``{k: top-1}`` for each ``k``."""
    return {k: knn_top1(train_feats, train_labels, test_feats, test_labels, k, temperature) for k in ks}
