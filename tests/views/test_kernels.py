"""The compiled photometric kernels equal renderer 2's torch ops bit for bit.

Each kernel of :mod:`eupe.views.kernels` is run against the torch formula of
:mod:`eupe.views.photometric` (itself tested against torchvision in ``test_source.py``) on a real
photo at sizes whose pixel counts are not multiples of any vector width (so torch's loop tails
are covered), with adversarial pixels planted: channel ties (the hue sector choice), grey pixels
(zero chroma), exact 0 and 1, and values on the solarize threshold.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from eupe.views import kernels
from eupe.views.photometric import (adjust_hue_, brightness_, gaussian_blur, gaussian_kernel1d, grayscale, photometric,
                                    saturation_, solarize)
from eupe.views.policy import ViewPolicy, sample_views
from eupe.views.renderer import render
from eupe.views.source import decode_image
from eupe.views.spec import ViewSpec

skimage = pytest.importorskip("skimage")
DATA = Path(skimage.__file__).parent / "data"
SIZES = [(97, 131), (224, 224), (61, 300)]


def _photo(size: tuple[int, int]) -> np.ndarray:
    """A real view ``[3, h, w]`` float32 in [0, 1] with adversarial pixels planted in its first rows."""
    pixels = decode_image((DATA / "chelsea.png").read_bytes())
    x = render(pixels, ViewSpec.full(*pixels.shape[1:], *size)).numpy().copy()
    x[:, 0, :4] = 0.5  # grey: zero chroma
    x[:, 1, :4] = np.array([[0.0], [1.0], [1.0]], dtype=np.float32)  # g == b == max
    x[1, 2, :] = x[0, 2, :]  # r == g in a whole row
    x[2, 3, :] = x[0, 3, :]  # r == b
    x[:, 4, :3] = np.array([[0.5, 0.4999999, 1.0]], dtype=np.float32)  # on and just below the solarize threshold
    x[:, 5, :2] = np.array([[0.0, 1.0]], dtype=np.float32)
    return x


def _same(ours: np.ndarray, reference: torch.Tensor) -> None:
    assert ours.dtype == np.float32 and ours.shape == tuple(reference.shape)
    diff = np.flatnonzero(ours.view(np.uint32) != reference.numpy().view(np.uint32))  # bits, not values
    assert diff.size == 0, f"{diff.size} values differ, first at flat index {diff[:5]}"


def _contrast_mean(x: np.ndarray) -> float:
    """contrast_'s mean luma, as torch computes it."""
    return torch.mean(grayscale(torch.from_numpy(x)).unsqueeze(0), dim=(-3, -2, -1)).item()


@pytest.mark.parametrize("size", SIZES)
def test_to_float_is_uint8_over_255(size):
    rgb = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)  # [h, w, 3]
    out = np.empty((3, *size), dtype=np.float32)
    kernels.to_float(rgb, out)
    _same(out, torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("factor", [0.6, 0.93, 1.4])
def test_colour_kernels_equal_the_torch_ops(size, factor):
    x = _photo(size)
    y = x.copy()
    kernels.brightness_(y, np.float32(factor))
    _same(y, brightness_(torch.from_numpy(x.copy()), factor))
    y = x.copy()
    kernels.saturation_(y, np.float32(factor), np.float32(1.0 - factor))
    _same(y, saturation_(torch.from_numpy(x.copy()), factor))
    plane = np.empty(size, dtype=np.float32)
    kernels.luma(x, plane)
    _same(plane, grayscale(torch.from_numpy(x)))
    assert kernels.mean_luma(x).item() == _contrast_mean(x)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("hue", [0.1, -0.1, 0.37, -0.5, 0.5, 1e-4])
def test_hue_kernel_equals_the_torch_op(size, hue):
    x = _photo(size)
    y = x.copy()
    kernels.hue_(y, np.float32(6.0 + 6.0 * hue))
    _same(y, adjust_hue_(torch.from_numpy(x.copy()), hue))
    assert np.array_equal(y[:, 0, :4], x[:, 0, :4])  # grey stays grey
    assert abs(hue) < 0.01 or float(np.abs(y - x).mean()) > 1e-3  # and the rest moved


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("radius, sigma", [(1, 0.3), (6, 2.0), (12, 4.0), (7, 2.4)])
def test_blur_kernel_equals_the_torch_op(size, radius, sigma):
    x = _photo(size)
    weights = gaussian_kernel1d(2 * radius + 1, sigma).numpy()
    _same(kernels.blur(x, weights), gaussian_blur(torch.from_numpy(x), radius, sigma))
    _same(kernels.blur(x[:1].copy(), weights), gaussian_blur(torch.from_numpy(x[:1].copy()), radius, sigma))


@pytest.mark.parametrize("size", SIZES)
def test_finish_is_solarize_then_clamp(size):
    x = _photo(size) * np.float32(1.2) - np.float32(0.1)  # values outside [0, 1] too
    for flag in (True, False):
        y = x.copy()
        kernels.finish_(y, flag)
        reference = solarize(torch.from_numpy(x), 0.5) if flag else torch.from_numpy(x.copy())
        _same(y, reference.clamp_(0.0, 1.0))


def test_render_with_kernels_equals_renderer_2_torch_ops_on_many_views():
    """The renderer (kernels) against the same steps written with the torch ops, at odd sizes and every op."""
    pixels = decode_image((DATA / "astronaut.png").read_bytes())
    every = ViewPolicy(jitter_p=1.0, grayscale_p=0.25, blur_p=1.0, solarize_p=0.5)
    views = (sample_views(every, 7, "k", *pixels.shape[1:], 20, resolution=97)
             + sample_views(ViewPolicy(), 8, "k", *pixels.shape[1:], 12))
    views = [dataclasses.replace(v, out_w=v.out_w + 34) if i % 3 == 0 else v for i, v in enumerate(views)]
    assert {v.grayscale for v in views} == {True, False} and {v.solarize for v in views} == {True, False}
    for v in views:
        _same(render(pixels, v).numpy(), photometric(render(pixels, v.geometric()).clone(), v))
