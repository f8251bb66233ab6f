"""The one deterministic renderer: image bytes -> RGB tensor -> view pixels.

Both the cache extractor (teacher) and the trainer (student) render views with
:func:`render`, so a view stored in the cache is reproduced exactly, at any output size.
Rendering order: crop + resize (bilinear, antialiased, float32), horizontal flip, colour
jitter in the view's order, grayscale, Gaussian blur (sigma relative to the output side),
solarize, clamp to [0, 1].  No mean/std normalization happens here: each model normalizes
its own input.

Nothing random happens here: on CPU the same view gives bit-identical pixels for a given
torch build and thread count (across thread counts, reductions may differ by ~1 ulp).
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from eupe.views.spec import ViewSpec

Size = int | tuple[int, int] | None


class ImageDecodeError(ValueError):
    """Image bytes that cannot be decoded; ``reason`` says why in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot decode image: {reason}")
        self.reason = reason


# -- decoding ------------------------------------------------------------------------------------

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error,
                  Image.DecompressionBombError)


def decode_image(data: bytes) -> torch.Tensor:
    """Decode any PIL-readable image to uint8 ``[3, H, W]`` RGB, applying EXIF orientation.

    Grayscale, RGBA/LA (alpha dropped, as ``PIL.Image.convert("RGB")`` does), palette, CMYK and
    16-bit images become 8-bit RGB.  Truncated or corrupt bytes raise :class:`ImageDecodeError`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageDecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageDecodeError("empty input")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # forces a full decode so truncation is detected here
            rgb = _to_rgb(ImageOps.exif_transpose(img))
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"{type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def _to_rgb(img: Image.Image) -> np.ndarray:
    """8-bit RGB ``[H, W, 3]`` array; integer modes (I, I;16) are read as 16-bit and scaled by 1/257."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        wide = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    return np.array(img.convert("RGB"), dtype=np.uint8)


# -- rendering -----------------------------------------------------------------------------------

def _output_size(view: ViewSpec, size: Size) -> tuple[int, int]:
    if size is None:
        return view.out_h, view.out_w
    if isinstance(size, int) and not isinstance(size, bool):
        h = w = size
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"output size must be positive, got {size!r}")
    return h, w


def _check_image(image: torch.Tensor, view: ViewSpec) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3 \
            or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a uint8 tensor [3, H, W], got {shape}")
    h, w = image.shape[1:]
    if (h, w) != (view.src_h, view.src_w):
        raise ValueError(f"image size {h}x{w} (HxW) does not match the view's source size "
                         f"{view.src_h}x{view.src_w}")


def _crop_resize(image: torch.Tensor, view: ViewSpec, out: tuple[int, int]) -> torch.Tensor:
    """Crop the box (in uint8, cheap) then convert to float and resize; same as ``F.resized_crop``."""
    box = image[:, view.top:view.top + view.height, view.left:view.left + view.width]
    region = box.to(torch.float32).div_(255.0)
    return F.resize(region, list(out), interpolation=InterpolationMode.BILINEAR, antialias=True)


def _jitter(x: torch.Tensor, view: ViewSpec) -> torch.Tensor:
    """Colour jitter in ``view.jitter_order``; identity factors are skipped (bit-exact identity)."""
    steps = {
        0: (view.brightness, 1.0, F.adjust_brightness),
        1: (view.contrast, 1.0, F.adjust_contrast),
        2: (view.saturation, 1.0, F.adjust_saturation),
        3: (view.hue, 0.0, F.adjust_hue),
    }
    for op in view.jitter_order:
        factor, identity, fn = steps[op]
        if factor != identity:
            x = fn(x, factor)
    return x


def _blur(x: torch.Tensor, blur_sigma: float) -> torch.Tensor:
    """Gaussian blur with ``sigma_px = blur_sigma * min(h, w)`` and kernel ``2*ceil(3*sigma_px)+1``.

    The radius is capped at ``min(h, w) - 1`` (reflect padding needs it); this only matters for
    absurdly large sigmas.
    """
    h, w = x.shape[-2:]
    sigma_px = blur_sigma * min(h, w)
    radius = min(math.ceil(3.0 * sigma_px), min(h, w) - 1)
    if sigma_px <= 0.0 or radius < 1:
        return x
    k = 2 * radius + 1
    return F.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma_px, sigma_px])


def render(image: torch.Tensor, view: ViewSpec, size: Size = None) -> torch.Tensor:
    """Render ``view`` of ``image`` (uint8 ``[3, H, W]``) to float32 ``[3, h, w]`` in [0, 1].

    ``size`` overrides the view's output size: an int means square ``(size, size)``.
    """
    _check_image(image, view)
    x = _crop_resize(image, view, _output_size(view, size))
    if view.flip:
        x = x.flip(-1)
    x = _jitter(x, view)
    if view.grayscale:
        x = F.rgb_to_grayscale(x, num_output_channels=3)
    if view.blur_sigma > 0.0:
        x = _blur(x, view.blur_sigma)
    if view.solarize:
        x = F.solarize(x, threshold=0.5)
    return x.clamp(0.0, 1.0).contiguous()


def render_views(image: torch.Tensor, views: Sequence[ViewSpec], size: Size = None) -> torch.Tensor:
    """Render several views of one image to ``[K, 3, h, w]``; all must share the output size."""
    if len(views) == 0:
        raise ValueError("render_views needs at least one view")
    rendered = [render(image, v, size) for v in views]
    shapes = {tuple(r.shape) for r in rendered}
    if len(shapes) != 1:
        raise ValueError(f"views render to different sizes {sorted(shapes)}; pass size= to unify them")
    return torch.stack(rendered)
