"""Photometric ops on float32 RGB ``[3, h, w]`` in [0, 1]: torchvision's formulas, fewer passes.

The renderer calls these on every training view, so they are written for small CPU tensors:
:func:`adjust_hue` rotates the HSV hue without materialising HSV (same formula as
``torchvision.transforms.v2.functional.adjust_hue``, equal to float rounding), and
:func:`gaussian_blur` runs the same Gaussian kernel as two 1-D passes of shifted sums instead of
one 2-D convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

_HUE_OFFSETS = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)  # r, g, b phase of the hue wheel (x6)


def adjust_hue(x: torch.Tensor, hue: float) -> torch.Tensor:
    """Shift the HSV hue of RGB ``x`` ``[3, h, w]`` by ``hue`` turns (in [-0.5, 0.5]).

    Value (max) and chroma (max - min) are kept; each channel is read off the hue wheel at the
    shifted hue: ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``,
    n = 5, 3, 1 for r, g, b -- torchvision's HSV round trip without building the HSV image.
    """
    if not -0.5 <= hue <= 0.5:
        raise ValueError(f"hue must be in [-0.5, 0.5], got {hue}")
    r, g, b = x.unbind(0)
    minc, maxc = torch.aminmax(x, dim=0)
    chroma = maxc - minc
    is_r, is_g = maxc == r, maxc == g
    sector = torch.where(is_r, g - b, torch.where(is_g, (b - r).add_(chroma, alpha=2.0),
                                                 (r - g).add_(chroma, alpha=4.0)))
    h6 = sector.div_(torch.where(chroma > 0, chroma, 1.0))  # hue x 6, in [-1, 5)
    h6 = h6.add_(6.0 + 6.0 * hue).remainder_(6.0)  # shifted, in [0, 6)
    phase = (_HUE_OFFSETS + h6).remainder_(6.0)  # [3, h, w]
    ramp = torch.minimum(phase, 4.0 - phase).clamp_(0.0, 1.0)
    return ramp.mul_(chroma).neg_().add_(maxc)


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """torchvision's 1-D Gaussian kernel (``_get_gaussian_kernel1d``): normalised, ``size`` taps."""
    lim = (size - 1) / (2.0 * 2.0 ** 0.5)
    x = torch.linspace(-lim, lim, steps=size, dtype=torch.float32)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


def gaussian_blur(x: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """Blur ``x`` ``[3, h, w]`` with a ``2*radius+1`` Gaussian kernel and reflect padding.

    Separable: a weighted sum of shifted slices along the width, then along the height (on small
    CPU images this beats ``conv2d``, whose depthwise kernels are slow and erratic here).
    """
    weights = gaussian_kernel1d(2 * radius + 1, sigma).tolist()
    h, w = x.shape[-2:]
    padded = nnf.pad(x[None], [radius, radius, radius, radius], mode="reflect")[0]  # [3, h+2r, w+2r]
    rows = padded[:, :, 0:w] * weights[0]
    for j, weight in enumerate(weights[1:], 1):
        rows.add_(padded[:, :, j:j + w], alpha=weight)
    out = rows[:, 0:h] * weights[0]
    for j, weight in enumerate(weights[1:], 1):
        out.add_(rows[:, j:j + h], alpha=weight)
    return out


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert (``1 - x``) every value at or above ``threshold``."""
    return torch.where(x >= threshold, 1.0 - x, x)
