"""PCA pictures: pca_rgb on crafted tokens, write_pca_png with real and tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.eval.models import load_model
from eupe.eval.pca import CAPTION_HEIGHT, foreground_mask, pca_rgb, write_pca_png


def _tokens(h: int = 8, w: int = 6, d: int = 20, seed: int = 0) -> torch.Tensor:
    """Tokens with decreasing variance along 3 random directions plus small noise."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, 3, generator=gen)).Q.T  # [3, d], orthonormal
    coeffs = torch.randn(h * w, 3, generator=gen) * torch.tensor([10.0, 4.0, 2.0])
    return (coeffs @ basis + 0.05 * torch.randn(h * w, d, generator=gen)).reshape(h, w, d)


def _first_component(tokens: np.ndarray) -> np.ndarray:
    x = tokens - tokens.mean(axis=0)
    return x @ np.linalg.svd(x, full_matrices=False)[2][0]


def test_pca_rgb_shape_range_and_first_channel():
    patch = _tokens()
    rgb = pca_rgb(patch)
    assert rgb.shape == (8, 6, 3) and rgb.dtype == np.uint8
    assert (rgb.reshape(-1, 3).min(axis=0) == 0).all() and (rgb.reshape(-1, 3).max(axis=0) == 255).all()
    pc1 = _first_component(patch.reshape(-1, 20).double().numpy())
    corr = np.corrcoef(rgb[..., 0].reshape(-1).astype(float), pc1)[0, 1]
    assert abs(corr) > 0.999


def test_pca_rgb_colours_do_not_depend_on_token_sign():
    patch = _tokens(seed=1)
    assert np.array_equal(pca_rgb(patch), pca_rgb(-patch))


def test_foreground_is_the_centre_blob_and_background_is_black():
    gen = torch.Generator().manual_seed(2)
    patch = 0.1 * torch.randn(10, 10, 16, generator=gen)
    patch[3:7, 3:7, 0] += 5.0  # a distinct object in the middle
    mask = foreground_mask(patch)
    assert mask.sum() == 16 and mask[3:7, 3:7].all()
    rgb = pca_rgb(patch, foreground=True)
    assert (rgb[~mask.numpy()] == 0).all() and rgb[mask.numpy()].max() == 255


def test_write_pca_png_lays_out_input_and_one_panel_per_model(photos, effnet, tmp_path):
    tiny = load_model("vit_s", test_scale=True)
    out = write_pca_png({"effnet_lite0": effnet, "vit_s (tiny)": tiny}, photos[0].read_bytes(),
                        tmp_path / "pca.png", resolution=128, panel_size=96)
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.size == (3 * 96, 96 + CAPTION_HEIGHT)
        pixels = np.asarray(sheet.convert("RGB"))
    effnet_panel = pixels[:96, 96:192]  # 4x4 grid at 128 px -> 24 px blocks of one colour each
    assert len(np.unique(effnet_panel.reshape(-1, 3), axis=0)) <= 16
    assert (effnet_panel[:24, :24] == effnet_panel[0, 0]).all()
    caption = pixels[96:, 96:192]
    assert (caption < 128).any()  # the model name is written in black below the panel


def test_write_pca_png_rejects_non_images(effnet, tmp_path):
    from eupe.views.source import ImageDecodeError

    with pytest.raises(ImageDecodeError):
        write_pca_png({"e": effnet}, b"not an image", tmp_path / "x.png")
