"""Photometric ops on float32 RGB ``[3, h, w]`` in [0, 1]: torchvision's formulas, in torch.

These are renderer 2's photometric formulas as torch ops (any device).  The renderer itself runs
the compiled kernels of :mod:`eupe.views.kernels`, which repeat them bit for bit on the CPU in
one pass per op; the tests hold both to these functions, and these to torchvision:

* :func:`brightness_`, :func:`contrast_`, :func:`saturation_` and :func:`grayscale` repeat
  torchvision's float ops (``adjust_brightness``, ``adjust_contrast``, ``adjust_saturation``,
  ``rgb_to_grayscale``) one by one, in place: the same bits, without torchvision's copies;
* :func:`adjust_hue_` rotates the HSV hue without materialising HSV (the formula of
  ``torchvision.transforms.v2.functional.adjust_hue``, equal to float rounding), one channel
  plane at a time, into preallocated planes;
* :func:`gaussian_blur` runs the same Gaussian kernel as two 1-D passes of shifted sums instead
  of one 2-D convolution;
* :func:`solarize` is ``torch.where(x >= t, 1 - x, x)`` without ``where``.

Functions ending in ``_`` overwrite their input (and return it); the others do not.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as nnf

if TYPE_CHECKING:
    from eupe.views.spec import ViewSpec

_HUE_OFFSETS = (5.0, 3.0, 1.0)  # r, g, b phase of the hue wheel (x6)
_TINY = torch.finfo(torch.float32).tiny
_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
HUE_RANGE = (-0.5, 0.5)  # hue shifts in turns


def check_hue(hue: float) -> None:
    """Refuse a hue shift outside :data:`HUE_RANGE`."""
    if not HUE_RANGE[0] <= hue <= HUE_RANGE[1]:
        raise ValueError(f"hue must be in [{HUE_RANGE[0]}, {HUE_RANGE[1]}], got {hue}")


def blur_extent(blur_sigma: float, h: int, w: int) -> tuple[float, int]:
    """The renderer's blur of an ``h x w`` view: ``(sigma_px, radius)`` with ``sigma_px = blur_sigma *
    min(h, w)`` and radius ``ceil(3 sigma_px)`` (kernel ``2 radius + 1``), capped at ``min(h, w) - 1``
    (reflect padding needs it; only absurdly large sigmas reach the cap).  Radius 0: no blur."""
    sigma_px = blur_sigma * min(h, w)
    radius = min(math.ceil(3.0 * sigma_px), min(h, w) - 1)
    return sigma_px, (radius if sigma_px > 0.0 and radius >= 1 else 0)


def grayscale(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Luma ``[h, w]`` of RGB ``x`` ``[3, h, w]``: torchvision's ``0.2989 r + 0.587 g + 0.114 b``, same ops."""
    r, g, b = x.unbind(0)
    gray = torch.mul(r, _LUMA[0], out=torch.empty_like(r) if out is None else out)
    return gray.add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2])


def brightness_(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``adjust_brightness`` in place: ``clamp(x * factor, 0, 1)``.

    For ``x`` in [0, 1] (every value the renderer hands it) and factor <= 1 the product is already
    in [0, 1] (rounding is monotone), so the clamp is skipped: the same bits, one pass fewer.
    """
    x.mul_(factor)
    return x.clamp_(0.0, 1.0) if factor > 1.0 else x


def blend_(x: torch.Tensor, other: torch.Tensor, ratio: float) -> torch.Tensor:
    """torchvision's ``_blend`` in place: ``clamp(x * ratio + other * (1 - ratio), 0, 1)``."""
    return x.mul_(ratio).add_(other, alpha=1.0 - ratio).clamp_(0.0, 1.0)


def contrast_(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``adjust_contrast`` in place: blend with the mean luma."""
    mean = torch.mean(grayscale(x).unsqueeze(0), dim=(-3, -2, -1), keepdim=True)  # [1, 1, 1]
    return blend_(x, mean, float(factor))


def saturation_(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``adjust_saturation`` in place: blend with the luma."""
    return blend_(x, grayscale(x).unsqueeze(0), float(factor))  # [1, h, w] broadcast over channels


def _wrap6_(x: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """``x mod 6`` for ``x`` in [0, 12), in place: ``x - 6 floor(x / 6)`` (exact there: ``x / 6`` never
    rounds across 1 or 2 in float32, and ``x - 6`` is exact by Sterbenz), without ``remainder``;
    ``6 floor(.)`` is exact, so subtracting it with ``alpha=6`` is the same float in one pass."""
    return x.sub_(torch.div(x, 6.0, out=tmp).floor_(), alpha=6.0)


def _hue6(x: torch.Tensor, maxc: torch.Tensor, chroma: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """HSV hue x 6 of ``x`` ``[3, h, w]`` as a new plane ``[h, w]`` in [-1, 5) (0 where chroma is 0).

    The sector formula of the channel holding the max (r before g before b on ties), selected by
    0/1 float masks (exact; boolean masks and ``torch.where`` are many times slower on small CPU
    tensors).
    """
    r, g, b = x.unbind(0)
    is_r = torch.eq(maxc, r, out=torch.empty_like(r))
    is_g = torch.eq(maxc, g, out=torch.empty_like(r))
    is_g = torch.gt(is_g, is_r, out=is_g)  # max is g and not r
    is_b = torch.lt(torch.add(is_r, is_g, out=tmp), 0.5, out=tmp)  # neither
    sector = torch.sub(g, b, out=torch.empty_like(r)).mul_(is_r)
    term = torch.sub(b, r, out=is_r).add_(chroma, alpha=2.0).mul_(is_g)  # is_r is not needed any more
    sector.add_(term)
    term = torch.sub(r, g, out=is_g).add_(chroma, alpha=4.0).mul_(is_b)
    return sector.add_(term).div_(torch.clamp_min(chroma, _TINY, out=tmp))


def adjust_hue_(x: torch.Tensor, hue: float) -> torch.Tensor:
    """Shift the HSV hue of RGB ``x`` ``[3, h, w]`` (values in [0, 1]) by ``hue`` turns, in place.

    Value (max) and chroma (max - min) are kept; each channel is read off the hue wheel at the
    shifted hue: ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``,
    n = 5, 3, 1 for r, g, b -- torchvision's HSV round trip without building the HSV image.
    Written with arithmetic kernels only: ``aminmax`` over channels, ``remainder`` and ``where``
    are 10-40x slower than an add on small CPU tensors.
    """
    check_hue(hue)
    r, g, b = x.unbind(0)
    maxc = torch.maximum(r, g)
    maxc = torch.maximum(maxc, b, out=maxc)
    chroma = torch.minimum(r, g)
    chroma = torch.sub(maxc, torch.minimum(chroma, b, out=chroma), out=chroma)  # max - min
    tmp = torch.empty_like(maxc)
    h6 = _wrap6_(_wrap6_(_hue6(x, maxc, chroma, tmp).add_(6.0 + 6.0 * hue), tmp), tmp)  # shifted, in [0, 6)
    for plane, offset in zip(x.unbind(0), _HUE_OFFSETS):  # one plane at a time: it stays in cache
        phase = _wrap6_(torch.add(h6, offset, out=plane), tmp)
        ramp = torch.minimum(phase, torch.rsub(phase, 4.0), out=plane).clamp_(0.0, 1.0)
        torch.sub(maxc, ramp.mul_(chroma), out=plane)
    return x


def adjust_hue(x: torch.Tensor, hue: float) -> torch.Tensor:
    """:func:`adjust_hue_` on a copy of ``x``."""
    return adjust_hue_(x.clone(memory_format=torch.contiguous_format), hue)


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """torchvision's 1-D Gaussian kernel (``_get_gaussian_kernel1d``): normalised, ``size`` taps."""
    lim = (size - 1) / (2.0 * 2.0 ** 0.5)
    x = torch.linspace(-lim, lim, steps=size, dtype=torch.float32)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


def gaussian_blur(x: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """Blur ``x`` ``[c, h, w]`` with a ``2*radius+1`` Gaussian kernel and reflect padding.

    Separable: a weighted sum of shifted slices along the width, then along the height (on small
    CPU images this beats ``conv2d``, whose depthwise kernels are slow and erratic here).
    """
    weights = gaussian_kernel1d(2 * radius + 1, sigma).tolist()
    h, w = x.shape[-2:]
    padded = nnf.pad(x[None], [radius, radius, radius, radius], mode="reflect")[0]  # [c, h+2r, w+2r]
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


def photometric(x: torch.Tensor, view: "ViewSpec") -> torch.Tensor:
    """Renderer 2's photometric steps on ``x [3, h, w]`` (overwritten) as these torch ops: jitter in
    the view's order, grayscale, blur, solarize, clamp.  The renderer runs the same steps compiled
    (:mod:`eupe.views.kernels`); this is the reference the tests and ``bench/render.py`` hold it to."""
    ops = {0: (view.brightness, 1.0, brightness_), 1: (view.contrast, 1.0, contrast_),
           2: (view.saturation, 1.0, saturation_), 3: (view.hue, 0.0, adjust_hue_)}
    for op in view.jitter_order:
        factor, identity, fn = ops[op]
        x = fn(x, factor) if factor != identity else x
    x = grayscale(x).unsqueeze(0) if view.grayscale else x  # [1, h, w]
    sigma_px, radius = blur_extent(view.blur_sigma, *x.shape[-2:])
    x = gaussian_blur(x, radius, sigma_px) if radius else x
    x = solarize(x, 0.5) if view.solarize else x
    return x.clamp_(0.0, 1.0).expand(3, -1, -1).contiguous()
