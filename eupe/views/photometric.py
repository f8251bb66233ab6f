"""Photometric ops on float32 RGB ``[3, h, w]`` in [0, 1]: torchvision's formulas, fewer passes.

The renderer calls these on every training view, so they are written for small CPU tensors:
:func:`adjust_hue` rotates the HSV hue without materialising HSV (same formula as
``torchvision.transforms.v2.functional.adjust_hue``, equal to float rounding), and
:func:`gaussian_blur` runs the same Gaussian kernel as two 1-D passes instead of one 2-D pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

_HUE_OFFSETS = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)  # r, g, b phase of the hue wheel (x6)


def adjust_hue(x: torch.Tensor, hue: float) -> torch.Tensor:
    """Shift the HSV hue of RGB ``x`` ``[3, h, w]`` by ``hue`` turns (in [-0.5, 0.5])."""
    if not -0.5 <= hue <= 0.5:
        raise ValueError(f"hue must be in [-0.5, 0.5], got {hue}")
    r, g, b = x.unbind(0)
    minc, maxc = torch.aminmax(x, dim=0)
    chroma = maxc - minc
    scaled = (maxc - x) / torch.where(chroma > 0, chroma, 1.0)  # [3, h, w]
    rc, gc, bc = scaled.unbind(0)
    h6 = torch.where(maxc == r, bc - gc, torch.where(maxc == g, rc.add(2.0).sub_(bc), gc.add(4.0).sub_(rc)))
    h6 = h6.div_(6.0).add_(1.0).fmod_(1.0).add_(hue).remainder_(1.0).mul_(6.0)  # shifted hue, [0, 6)
    phase = (_HUE_OFFSETS + h6).remainder_(6.0)  # [3, h, w]
    ramp = torch.minimum(phase, 4.0 - phase).clamp_(0.0, 1.0)
    return maxc - chroma * ramp


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """torchvision's 1-D Gaussian kernel (``_get_gaussian_kernel1d``): normalised, ``size`` taps."""
    lim = (size - 1) / (2.0 * 2.0 ** 0.5)
    x = torch.linspace(-lim, lim, steps=size, dtype=torch.float32)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


def gaussian_blur(x: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """Blur ``x`` ``[3, h, w]`` with a ``2*radius+1`` Gaussian kernel, reflect padding, separably."""
    size = 2 * radius + 1
    kernel = gaussian_kernel1d(size, sigma)
    c = x.shape[0]
    padded = nnf.pad(x[None], [radius, radius, radius, radius], mode="reflect")  # [1, 3, h+2r, w+2r]
    rows = nnf.conv2d(padded, kernel.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    return nnf.conv2d(rows, kernel.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)[0]


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert (``1 - x``) every value at or above ``threshold``."""
    return torch.where(x >= threshold, 1.0 - x, x)
