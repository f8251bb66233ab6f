"""PCA pictures of patch tokens: the first three principal components shown as RGB.

``pca_rgb(patch)`` projects the ``h x w`` patch tokens on their first three principal
components (computed on this one image) and min-max scales each component to 0..255 as the red,
green and blue channel. Signs are fixed so that each component's largest-magnitude projection is
positive, so the colours do not flip between runs.

``foreground=True`` follows the DINOv2 figure: tokens whose first component is above its mean
are kept as foreground (the side holding fewer border tokens, since borders are mostly
background), the three components are recomputed on the foreground tokens only, and the
background is black.

``write_pca_png`` writes one PNG: the input image, then one PCA map per model, each
nearest-upsampled to the panel size and captioned with the model's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from PIL import Image, ImageDraw

from eupe.eval.knn import eval_resolution, render_full
from eupe.models.features import Encoder
from eupe.views.source import decode_image

CAPTION_HEIGHT = 18
MIN_FOREGROUND = 3


def principal_projections(tokens: torch.Tensor, n: int = 3) -> torch.Tensor:
    """Projections ``[N, n]`` of tokens ``[N, D]`` on their first ``n`` principal components (float64)."""
    x = tokens.double()
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    proj = x @ vh[:n].T
    if proj.shape[1] < n:  # fewer tokens or dims than components: pad with zeros
        proj = torch.cat([proj, proj.new_zeros(len(proj), n - proj.shape[1])], dim=1)
    peak = proj.gather(0, proj.abs().argmax(dim=0, keepdim=True))
    return proj * torch.where(peak < 0, -1.0, 1.0)


def _minmax_uint8(values: torch.Tensor) -> torch.Tensor:
    low, high = values.min(dim=0).values, values.max(dim=0).values
    scaled = (values - low) / (high - low).clamp_min(1e-12)
    return (scaled * 255).round().clamp(0, 255).to(torch.uint8)


def foreground_mask(patch: torch.Tensor) -> torch.Tensor:
    """Bool ``[h, w]``: first component above its mean, on the side with fewer border tokens."""
    h, w, d = patch.shape
    first = principal_projections(patch.reshape(h * w, d), 1)[:, 0].reshape(h, w)
    mask = first > 0
    border = torch.ones(h, w, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    if mask[border].float().mean() > (~mask)[border].float().mean():
        mask = ~mask
    return mask


def pca_rgb(patch: torch.Tensor, foreground: bool = False) -> np.ndarray:
    """uint8 ``[h, w, 3]``: the first 3 principal components of ``patch`` ``[h, w, D]`` as RGB."""
    h, w, d = patch.shape
    tokens = patch.reshape(h * w, d).detach().cpu()
    keep = foreground_mask(patch.detach().cpu()).reshape(-1) if foreground else torch.ones(h * w, dtype=torch.bool)
    if int(keep.sum()) < MIN_FOREGROUND:
        keep = torch.ones(h * w, dtype=torch.bool)
    rgb = torch.zeros(h * w, 3, dtype=torch.uint8)
    rgb[keep] = _minmax_uint8(principal_projections(tokens[keep], 3))
    return rgb.reshape(h, w, 3).numpy()


@torch.inference_mode()
def model_pca(model: Encoder, image: torch.Tensor, resolution: int | None = None,
              foreground: bool = False) -> np.ndarray:
    """The PCA map ``[h, w, 3]`` of a model's patch tokens for a uint8 ``[3, H, W]`` image."""
    pixels = render_full(image, eval_resolution(model, resolution))[None]
    pixels = pixels.to(next(model.parameters()).device)
    return pca_rgb(model(pixels)["patch"][0].float(), foreground)


def _panel(pixels: np.ndarray, size: int, caption: str) -> Image.Image:
    """An ``size x (size + caption)`` tile: the picture nearest-resized, its caption below."""
    tile = Image.new("RGB", (size, size + CAPTION_HEIGHT), "white")
    tile.paste(Image.fromarray(pixels).resize((size, size), Image.NEAREST), (0, 0))
    ImageDraw.Draw(tile).text((4, size + 3), caption, fill="black")
    return tile


def _input_pixels(image: torch.Tensor, size: int) -> np.ndarray:
    """The input as the models see it (full view squeezed to a square), at ``size`` pixels."""
    return (render_full(image, size) * 255).round().byte().permute(1, 2, 0).numpy()


def write_pca_png(models: Mapping[str, Encoder], image_bytes: bytes, out_path: str | Path,
                  resolution: int | None = None, panel_size: int = 256, foreground: bool = False) -> Path:
    """Write ``[input | PCA(model 1) | ...]`` as one PNG of ``(1 + n) * panel_size`` by ``panel_size + 18``.

    Each model sees the full image resized to ``resolution`` (default: its own, rounded to its
    patch size); each map is nearest-upsampled to ``panel_size`` and captioned with its name.
    """
    image = decode_image(image_bytes)
    tiles = [_panel(_input_pixels(image, panel_size), panel_size, "input")]
    for name, model in models.items():
        rgb = model_pca(model, image, resolution, foreground)
        tiles.append(_panel(rgb, panel_size, f"{name} ({rgb.shape[0]}x{rgb.shape[1]})"))
    sheet = Image.new("RGB", (panel_size * len(tiles), tiles[0].height), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (i * panel_size, 0))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path, format="PNG")
    return out_path
