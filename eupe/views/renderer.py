"""The one deterministic renderer: image (encoded source or pixels) + view -> model input.

Both the cache extractor (teacher) and the trainer (student) render views with :func:`render`,
so a view stored in the cache is reproduced exactly, at any output size.

Renderer version 2 (:data:`~eupe.views.spec.RENDERER_VERSION`), in order:

1. Crop + resize.  From a :class:`~eupe.views.source.SourceImage` (encoded bytes), a JPEG is
   decoded at the largest DCT scale 1/s (s in 8, 4, 2) whose scaled crop box is still at least
   the output size, else at full size; the crop box is mapped to the decoded image's
   coordinates (fractional), cut out on whole pixels around it and resized with PIL's
   antialiased bilinear filter (uint8, sub-pixel box) to the output size.  From a uint8 tensor
   (already decoded pixels) the same crop and resize run at full size, so a PNG, or a JPEG view
   too small for a reduced decode, renders bit-identically from either.  Then the horizontal
   flip (on those uint8 pixels) and the conversion to float32 in [0, 1].
2. Colour jitter in the view's order, grayscale, Gaussian blur (sigma relative to the output
   side), solarize, clamp to [0, 1] -- float32, torchvision's formulas as written in torch by
   :mod:`eupe.views.photometric` (hue and blur equal to rounding; a grayscale view is blurred,
   solarized and clamped as one luma plane, then copied to the three channels: the same
   pixels).  :mod:`eupe.views.kernels` runs those formulas compiled, one pass per op, with the
   same float32 roundings: bit for bit the torch ops (contrast's blend is torch's own).

No mean/std normalization happens here: each model normalizes its own input.  Nothing random
happens here: the same (bytes, view, size) gives bit-identical pixels for a given Pillow/libjpeg
and torch build and thread count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from eupe.views import kernels
from eupe.views.photometric import blend_, blur_extent, check_hue, gaussian_kernel1d
from eupe.views.source import (
    DCT_SCALES,
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    SourceImage,
    decode_image,
    open_image,
)
from eupe.views.spec import ViewSpec

__all__ = ["DEFAULT_MAX_PIXELS", "ImageDecodeError", "SourceImage", "decode_image", "open_image",
           "render", "render_views", "dct_scale"]

Size = int | tuple[int, int] | None
ImageLike = torch.Tensor | SourceImage
_Box = tuple[float, float, float, float]


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


def _check_image(image: ImageLike, view: ViewSpec) -> None:
    if isinstance(image, SourceImage):
        h, w = image.height, image.width
    elif isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3 \
            and image.shape[0] == 3:
        h, w = image.shape[1:]
    else:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a SourceImage or a uint8 tensor [3, H, W], got {shape}")
    if (h, w) != (view.src_h, view.src_w):
        raise ValueError(f"image size {h}x{w} (HxW) does not match the view's source size "
                         f"{view.src_h}x{view.src_w}")


# -- crop + resize -------------------------------------------------------------------------------

def dct_scale(view: ViewSpec, out: tuple[int, int]) -> int:
    """The JPEG decode reduction for ``view`` at ``out`` (h, w): the largest s whose crop/s >= out."""
    for s in DCT_SCALES:
        if view.height >= out[0] * s and view.width >= out[1] * s:
            return s
    return 1


def _source_region(image: SourceImage, view: ViewSpec, out: tuple[int, int]) -> tuple[Image.Image, _Box]:
    """The decoded pixels around the crop box, and the box (fractional) inside them."""
    pixels = image.pixels(dct_scale(view, out) if image.scalable else 1)
    fy, fx = pixels.height / image.height, pixels.width / image.width
    y0, x0 = view.top * fy, view.left * fx
    y1 = min((view.top + view.height) * fy, float(pixels.height))
    x1 = min((view.left + view.width) * fx, float(pixels.width))
    win = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
    return pixels.crop(win), (x0 - win[0], y0 - win[1], x1 - win[0], y1 - win[1])


def _tensor_region(image: torch.Tensor, view: ViewSpec) -> tuple[Image.Image, _Box]:
    box = image[:, view.top:view.top + view.height, view.left:view.left + view.width]
    hwc = np.ascontiguousarray(box.permute(1, 2, 0).numpy())  # [3, h, w] -> [h, w, 3]
    return Image.fromarray(hwc, "RGB"), (0.0, 0.0, float(view.width), float(view.height))


def _crop_resize(image: ImageLike, view: ViewSpec, out: tuple[int, int]) -> Image.Image:
    """The view's box resized (antialiased bilinear, uint8) to ``out``, mirrored when the view is
    flipped (on the uint8 pixels: the same values as flipping the floats, one copy fewer)."""
    if isinstance(image, SourceImage):
        region, box = _source_region(image, view, out)
    else:
        region, box = _tensor_region(image, view)
    resized = region.resize((out[1], out[0]), Image.Resampling.BILINEAR, box=box)
    return resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if view.flip else resized


def _to_float(img: Image.Image) -> np.ndarray:
    """An RGB PIL image as float32 ``[3, h, w]`` = uint8 / 255 (one compiled pass over its bytes)."""
    rgb = np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(img.height, img.width, 3)  # [h, w, 3]
    x = np.empty((3, img.height, img.width), dtype=np.float32)
    kernels.to_float(rgb, x)
    return x


# -- photometric ---------------------------------------------------------------------------------

def _brightness_(x: np.ndarray, factor: float) -> None:
    kernels.brightness_(x, np.float32(factor))


def _contrast_(x: np.ndarray, factor: float) -> None:
    blend_(torch.from_numpy(x), kernels.mean_luma(x), factor)  # torch's blend (see kernels.mean_luma)


def _saturation_(x: np.ndarray, factor: float) -> None:
    kernels.saturation_(x, np.float32(factor), np.float32(1.0 - factor))


def _hue_(x: np.ndarray, hue: float) -> None:
    check_hue(hue)
    kernels.hue_(x, np.float32(6.0 + 6.0 * hue))


def _jitter_(x: np.ndarray, view: ViewSpec) -> None:
    """Colour jitter in ``view.jitter_order``, in place; identity factors are skipped (bit-exact identity).

    A factor reaches the float32 arithmetic as ``float32(factor)`` (and ``float32(1 - factor)``),
    as a Python scalar reaches torch's.
    """
    steps = {
        0: (view.brightness, 1.0, _brightness_),
        1: (view.contrast, 1.0, _contrast_),
        2: (view.saturation, 1.0, _saturation_),
        3: (view.hue, 0.0, _hue_),
    }
    for op in view.jitter_order:
        factor, identity, fn = steps[op]
        if factor != identity:
            fn(x, factor)


def _blur(x: np.ndarray, blur_sigma: float) -> np.ndarray:
    """Gaussian blur of ``x [c, h, w]`` with the view's relative sigma (:func:`blur_extent`)."""
    sigma_px, radius = blur_extent(blur_sigma, *x.shape[-2:])
    return kernels.blur(x, gaussian_kernel1d(2 * radius + 1, sigma_px).numpy()) if radius else x


def luma_plane(x: np.ndarray) -> np.ndarray:
    """The luma ``[1, h, w]`` of ``x [3, h, w]`` (a grayscale view is finished as this one plane)."""
    gray = np.empty((1, *x.shape[1:]), dtype=np.float32)
    kernels.luma(x, gray[0])
    return gray


def _photometric(x: np.ndarray, view: ViewSpec) -> np.ndarray:
    """Jitter, grayscale, blur, solarize and clamp ``x`` ``[3, h, w]`` (overwritten)."""
    _jitter_(x, view)
    if view.grayscale:  # one luma plane [1, h, w]: blur, solarize and clamp it once, copy it at the end
        x = luma_plane(x)
    if view.blur_sigma > 0.0:
        x = _blur(x, view.blur_sigma)
    kernels.finish_(x, view.solarize)  # solarize at 0.5, clamp to [0, 1]
    return np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x


def render(image: ImageLike, view: ViewSpec, size: Size = None) -> torch.Tensor:
    """Render ``view`` of ``image`` to float32 ``[3, h, w]`` in [0, 1].

    ``image`` is a :class:`SourceImage` (from :func:`open_image`: decoded here, at reduced size
    when the view allows) or decoded uint8 ``[3, H, W]`` pixels.  ``size`` overrides the view's
    output size: an int means square ``(size, size)``.  A corrupt source raises
    :class:`ImageDecodeError`.
    """
    _check_image(image, view)
    x = _to_float(_crop_resize(image, view, _output_size(view, size)))  # cropped, resized and flipped
    if view.has_jitter or view.grayscale or view.blur_sigma > 0.0 or view.solarize:
        x = _photometric(x, view)  # (without any, x is already in [0, 1]: clamping would change nothing)
    return torch.from_numpy(x)


def render_views(image: ImageLike, views: Sequence[ViewSpec], size: Size = None) -> torch.Tensor:
    """Render several views of one image to ``[K, 3, h, w]``; all must share the output size."""
    if len(views) == 0:
        raise ValueError("render_views needs at least one view")
    rendered = [render(image, v, size) for v in views]
    shapes = {tuple(r.shape) for r in rendered}
    if len(shapes) != 1:
        raise ValueError(f"views render to different sizes {sorted(shapes)}; pass size= to unify them")
    return torch.stack(rendered)
