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
_TINY = torch.finfo(torch.float32).tiny


def _wrap6(x: torch.Tensor) -> torch.Tensor:
    """``x mod 6`` for ``x`` in [0, 12), in place: ``x - 6 floor(x / 6)`` (exact there: ``x / 6`` never
    rounds across 1 or 2 in float32, and ``x - 6`` is exact by Sterbenz), without ``remainder``."""
    return x.sub_(torch.floor(x / 6.0).mul_(6.0))


def _equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a == b`` as a float 0/1 mask (written straight to float: 5x faster than bool, then float)."""
    return torch.eq(a, b, out=torch.empty_like(a))


def adjust_hue(x: torch.Tensor, hue: float) -> torch.Tensor:
    """Shift the HSV hue of RGB ``x`` ``[3, h, w]`` (values in [0, 1]) by ``hue`` turns (in [-0.5, 0.5]).

    Value (max) and chroma (max - min) are kept; each channel is read off the hue wheel at the
    shifted hue: ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``,
    n = 5, 3, 1 for r, g, b -- torchvision's HSV round trip without building the HSV image.
    Written with arithmetic kernels only: ``aminmax`` over channels, ``remainder`` and ``where``
    are 10-40x slower than an add on small CPU tensors.
    """
    if not -0.5 <= hue <= 0.5:
        raise ValueError(f"hue must be in [-0.5, 0.5], got {hue}")
    r, g, b = x.unbind(0)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    is_r = _equal(maxc, r)  # float masks: torch.where is slow here
    is_g = _equal(maxc, g).mul_(1.0 - is_r)
    is_b = 1.0 - is_r - is_g
    sector = (g - b).mul_(is_r)  # the hue sector's formula where each channel is the max
    sector.add_((b - r).add_(chroma, alpha=2.0).mul_(is_g)).add_((r - g).add_(chroma, alpha=4.0).mul_(is_b))
    h6 = sector.div_(chroma.clamp_min(_TINY))  # hue x 6, in [-1, 5); 0 where chroma is 0
    h6 = _wrap6(_wrap6(h6.add_(6.0 + 6.0 * hue)))  # shifted, in [0, 6)
    phase = _wrap6(_HUE_OFFSETS + h6)  # [3, h, w]
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
    """Invert (``1 - x``) every value at or above ``threshold`` (``x`` in [0, 1]).

    ``x + mask * (1 - 2x)``: ``1 - 2x`` is exact for x >= 1/4, so the sum is the correctly rounded
    ``1 - x`` -- bit-identical to ``torch.where(x >= threshold, 1 - x, x)``, without ``where``.
    """
    if threshold < 0.25:
        return torch.where(x >= threshold, 1.0 - x, x)
    mask = torch.ge(x, threshold, out=torch.empty_like(x))
    return mask.mul_(x.mul(-2.0).add_(1.0)).add_(x)
