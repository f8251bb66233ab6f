"""Image sources: encoded bytes -> RGB pixels, read lazily and at reduced size when a view allows.

:class:`SourceImage` reads only the header when opened (format, size, EXIF orientation), refuses
images above a pixel limit *before* decoding them, and decodes pixels on demand.  A JPEG is decoded
at the DCT scale (1, 1/2, 1/4 or 1/8, libjpeg's scaled IDCT via PIL's ``draft``) that a view
needs, and each scale is kept once decoded; other formats are decoded in full when opened.
:func:`decode_image` is the full-size decode as a uint8 ``[3, H, W]`` tensor.

Every pixel the renderer reads is a function of the bytes and the requested scale only, never
of what was decoded before: the same (bytes, view, size) renders the same pixels anywhere.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS: int = 64_000_000
"""Images with more source pixels (width x height) are refused before decoding (64 megapixels)."""

DCT_SCALES: tuple[int, ...] = (8, 4, 2)
"""Reduced JPEG decode factors tried, largest first (1 = full size otherwise)."""

_SCALABLE_FORMATS = ("JPEG", "MPO")
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


class ImageDecodeError(ValueError):
    """Image bytes that cannot be decoded (or are refused); ``reason`` says why in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot decode image: {reason}")
        self.reason = reason


@contextmanager
def _decoding() -> Iterator[None]:
    """Turn PIL's many failure types into :class:`ImageDecodeError`."""
    try:
        yield
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too many pixels (PIL's decompression-bomb limit): {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"{type(exc).__name__}: {exc}") from exc


def _check_bytes(data: Any) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageDecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageDecodeError("empty input")
    return bytes(data)


def _check_max_pixels(max_pixels: int | None) -> int | None:
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    return int(max_pixels)


def _open(data: bytes, max_pixels: int | None) -> Image.Image:
    """Parse the header only; refuse an image above ``max_pixels`` before any pixel is decoded."""
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageDecodeError(f"image is {w}x{h} = {w * h:,} pixels, above the limit of "
                               f"{max_pixels:,} pixels (max_pixels); refused before decoding")
    return img


def _rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB; integer modes (I, I;16) are read as 16-bit gray and scaled by 1/257."""
    if img.mode in _WIDE_MODES:
        wide = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), "RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


class SourceImage:
    """Encoded image bytes with the header read: ``shape`` ``(3, H, W)`` after EXIF orientation.

    Pixels are decoded by :meth:`pixels` (a PIL RGB image at a DCT scale) or :meth:`decode`
    (full-size uint8 tensor, as :func:`decode_image`).  Corrupt JPEG data is detected when the
    pixels are first decoded and raises :class:`ImageDecodeError`; other formats are decoded
    (and so checked) when opened.  Pickles as its bytes only (decoded pixels are dropped).
    """

    def __init__(self, data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.data = _check_bytes(data)
        self.max_pixels = _check_max_pixels(max_pixels)
        self._decoded: dict[int, Image.Image] = {}
        self._header: Image.Image | None = None  # the opened, not yet decoded, image (JPEG)
        with _decoding():
            img = _open(self.data, self.max_pixels)
            self.format = img.format or ""
            self.scalable = self.format in _SCALABLE_FORMATS
            if self.scalable:
                self._transpose = _TRANSPOSE.get(img.getexif().get(_ORIENTATION_TAG, 1))
                w, h = img.size
                swap = self._transpose in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
                                           Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)
                self.height, self.width = (w, h) if swap else (h, w)
                self._header = img
            else:
                full = self._finish(img)
                self._decoded[1] = full
                self.height, self.width = full.height, full.width

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(3, H, W)`` like the tensor :func:`decode_image` returns."""
        return (3, self.height, self.width)

    def _finish(self, img: Image.Image) -> Image.Image:
        img.load()  # decodes every byte, so truncation and corruption are detected here
        if not self.scalable:
            self._transpose = _TRANSPOSE.get(img.getexif().get(_ORIENTATION_TAG, 1))
        rgb = _rgb(img)
        return rgb.transpose(self._transpose) if self._transpose is not None else rgb

    def pixels(self, scale: int = 1) -> Image.Image:
        """RGB pixels decoded at ``1/scale`` (JPEG only; other formats are always full size)."""
        scale = scale if self.scalable else 1
        if scale not in self._decoded:
            with _decoding():
                img, self._header = self._header or _open(self.data, self.max_pixels), None
                if scale > 1:
                    img.draft("RGB", (max(1, img.width // scale), max(1, img.height // scale)))
                self._decoded[scale] = self._finish(img)
        return self._decoded[scale]

    def decode(self) -> torch.Tensor:
        """Full-size uint8 ``[3, H, W]`` RGB tensor."""
        return to_tensor(self.pixels(1))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_decoded": {}, "_header": None}


def to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a contiguous uint8 ``[3, H, W]`` tensor."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # [H,W,3] -> [3,H,W]


def open_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> SourceImage:
    """Read the header of any PIL-readable image; decode later, at the size a view needs.

    Refuses (:class:`ImageDecodeError`) empty or unreadable bytes and images above ``max_pixels``
    source pixels (``None``: no limit of ours; PIL's own decompression-bomb limit still applies).
    """
    return SourceImage(data, max_pixels)


def decode_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode any PIL-readable image to uint8 ``[3, H, W]`` RGB, applying EXIF orientation.

    Grayscale, RGBA/LA (alpha dropped, as ``PIL.Image.convert("RGB")`` does), palette, CMYK and
    16-bit images become 8-bit RGB.  Truncated or corrupt bytes, and images above ``max_pixels``
    (checked from the header, before decoding), raise :class:`ImageDecodeError`.
    """
    return SourceImage(data, max_pixels).decode()
