"""Compiled (numba) kernels of the renderer's pixel work: one pass per op, bit for bit torch's ops.

:mod:`eupe.views.photometric` writes each photometric op as a short chain of torch kernels; on a
``[3, 224, 224]`` view that is 5-60 passes over memory per op, and hue plus blur alone cost more
than PIL's whole decode + resize.  The functions here run the same float32 formulas one pixel at
a time in a single compiled loop, so each op is one pass, vectorised by LLVM.

Equal bits, not just close values: cached targets were computed on renderer 2's pixels, so a
faster renderer must produce the very same float32 values (``RENDERER_VERSION`` stays 2).  Every
elementary step repeats the float32 operation torch performs, in the same order:

* torch's ``add(a, b, alpha=s)`` is a fused multiply-add ``fma(b, s, a)`` (one rounding) in its
  vectorised CPU kernels; :func:`_fma` emits LLVM's ``fma`` so these kernels round the same way;
* a Python scalar meets a float32 tensor as ``float32(scalar)``, so every factor is passed here
  as ``np.float32`` (``1 - ratio`` is computed in double first, as torch's ``alpha=1.0 - ratio``);
* division is a true float32 division (torch does not replace ``/ 255`` by ``* (1 / 255)``);
* the one reduction (contrast's mean luma) stays in torch (:func:`mean_luma`): float32 sums
  depend on their order.

``tests/views/test_kernels.py`` checks each kernel against the torch op on real photos and on
adversarial values (ties between channels, grey pixels, 0 and 1), and the renderer's own
bit-for-bit test covers their composition.  Kernels are compiled on first use and cached on disk
(``cache=True``); DataLoader workers forked after the first view inherit the compiled code.
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_F = np.float32
_LUMA_R, _LUMA_G, _LUMA_B = _F(0.2989), _F(0.587), _F(0.114)  # torchvision's rgb_to_grayscale weights
_TINY = _F(np.finfo(np.float32).tiny)


@intrinsic
def _fma(typingctx, a, b, c):
    """float32 ``a * b + c`` rounded once (LLVM ``fma``): torch's ``add(c, a, alpha=b)``."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True, inline="always")
def _clamp01(v):
    return min(max(v, _F(0.0)), _F(1.0))


@njit(cache=True, inline="always")
def _luma(r, g, b):
    return _fma(b, _LUMA_B, _fma(g, _LUMA_G, r * _LUMA_R))


@njit(cache=True)
def to_float(rgb: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Interleaved uint8 ``rgb [h, w, 3]`` -> float32 ``out [3, h, w]`` = value / 255."""
    src = rgb.reshape(-1)  # [h * w * 3] interleaved
    red, green, blue = out[0].reshape(-1), out[1].reshape(-1), out[2].reshape(-1)
    for k in range(red.size):
        red[k] = _F(src[3 * k]) / _F(255.0)
        green[k] = _F(src[3 * k + 1]) / _F(255.0)
        blue[k] = _F(src[3 * k + 2]) / _F(255.0)


@njit(cache=True)
def brightness_(x: np.ndarray, factor: np.float32) -> None:  # pragma: no cover - compiled
    """``x * factor``, clamped to [0, 1] when ``factor > 1`` (torchvision's ``adjust_brightness``)."""
    flat = x.reshape(-1)
    for k in range(flat.size):
        v = flat[k] * factor
        flat[k] = _clamp01(v) if factor > _F(1.0) else v


@njit(cache=True)
def luma(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Luma plane ``out [h, w]`` of ``x [3, h, w]``: ``0.2989 r + 0.587 g + 0.114 b`` as torch rounds it."""
    red, green, blue, dst = x[0].reshape(-1), x[1].reshape(-1), x[2].reshape(-1), out.reshape(-1)
    for k in range(dst.size):
        dst[k] = _luma(red[k], green[k], blue[k])


@njit(cache=True)
def saturation_(x: np.ndarray, ratio: np.float32, rest: np.float32) -> None:  # pragma: no cover - compiled
    """Blend every channel of ``x [3, h, w]`` with the pixel's luma (``adjust_saturation``)."""
    red, green, blue = x[0].reshape(-1), x[1].reshape(-1), x[2].reshape(-1)  # [h * w] planes
    for k in range(red.size):
        gray = _luma(red[k], green[k], blue[k])
        red[k] = _clamp01(_fma(gray, rest, red[k] * ratio))
        green[k] = _clamp01(_fma(gray, rest, green[k] * ratio))
        blue[k] = _clamp01(_fma(gray, rest, blue[k] * ratio))


@njit(cache=True, inline="always")
def _wrap6(v):
    return v - _F(6.0) * np.floor(v / _F(6.0))  # 6 floor(.) is exact: one rounding, as torch's fma


@njit(cache=True, inline="always")
def _hue6(r, g, b, maxc, chroma):
    sector = (r - g) + _F(4.0) * chroma  # 2c and 4c are exact: the same as torch's fma
    sector = (b - r) + _F(2.0) * chroma if maxc == g else sector
    sector = g - b if maxc == r else sector  # r before g before b on ties
    return sector / max(chroma, _TINY)


@njit(cache=True, inline="always")
def _wheel(h6, offset, maxc, chroma):
    phase = _wrap6(h6 + offset)
    return maxc - _clamp01(min(phase, _F(4.0) - phase)) * chroma


@njit(cache=True)
def hue_(x: np.ndarray, shift6: np.float32) -> None:  # pragma: no cover - compiled
    """Rotate the HSV hue of ``x [3, h, w]`` in place; ``shift6 = float32(6 + 6 * hue)``.

    :func:`eupe.views.photometric.adjust_hue_`'s formula per pixel: value and chroma kept, each
    channel read off the hue wheel, ``max - chroma * clamp(min(k, 4 - k), 0, 1)``.
    """
    red, green, blue = x[0].reshape(-1), x[1].reshape(-1), x[2].reshape(-1)  # [h * w] planes
    for k in range(red.size):
        r, g, b = red[k], green[k], blue[k]
        maxc = max(max(r, g), b)
        chroma = maxc - min(min(r, g), b)
        h6 = _wrap6(_wrap6(_hue6(r, g, b, maxc, chroma) + shift6))
        red[k] = _wheel(h6, _F(5.0), maxc, chroma)
        green[k] = _wheel(h6, _F(3.0), maxc, chroma)
        blue[k] = _wheel(h6, _F(1.0), maxc, chroma)


@njit(cache=True, inline="always")
def _reflect(k, n):
    """Index ``k`` in ``[-n + 1, 2n - 1)`` reflected into ``[0, n)`` (the edge is not repeated)."""
    if k < 0:
        return -k
    if k >= n:
        return 2 * (n - 1) - k
    return k


@njit(cache=True, inline="always")
def _taps_(dst, src, weights, stride):
    """``dst[j] = src[j] w0 + src[j + stride] w1 + src[j + 2 stride] w2 + ...``, summed in that order
    (torch's sums of shifted slices, each ``add_(slice, alpha=w)`` a fused multiply-add).

    Four taps per pass over ``dst`` (the same operations in the same order per value, a quarter of
    the memory traffic); every inner loop runs over views of ``dst``'s length, which LLVM vectorises.
    """
    n, taps = dst.size, weights.size
    for j in range(n):
        dst[j] = src[j] * weights[0]
    k = 1
    while k + 3 < taps:
        a, b = src[k * stride:k * stride + n], src[(k + 1) * stride:(k + 1) * stride + n]
        c, d = src[(k + 2) * stride:(k + 2) * stride + n], src[(k + 3) * stride:(k + 3) * stride + n]
        wa, wb, wc, wd = weights[k], weights[k + 1], weights[k + 2], weights[k + 3]
        for j in range(n):
            dst[j] = _fma(d[j], wd, _fma(c[j], wc, _fma(b[j], wb, _fma(a[j], wa, dst[j]))))
        k += 4
    while k < taps:
        a, wa = src[k * stride:k * stride + n], weights[k]
        for j in range(n):
            dst[j] = _fma(a[j], wa, dst[j])
        k += 1


@njit(cache=True)
def _pad_reflect(plane: np.ndarray, r: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``plane [h, w]`` reflect-padded by ``r`` on every side into the flat ``out [(h + 2r) (w + 2r)]``."""
    h, w = plane.shape
    wide = w + 2 * r
    for i in range(h + 2 * r):
        src, row = plane[_reflect(i - r, h)], out[i * wide + r:i * wide + r + w]
        for j in range(w):
            row[j] = src[j]
        row = out[i * wide:(i + 1) * wide]
        for j in range(r):  # the edge is not repeated: row[r - 1 - j] = src[j + 1], mirrored on the right
            row[r - 1 - j] = src[j + 1]
            row[r + w + j] = src[w - 2 - j]


@njit(cache=True)
def blur(x: np.ndarray, weights: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Separable Gaussian blur of ``x [c, h, w]`` with reflect padding: a new array.

    ``weights`` float32 ``[2r + 1]``.  Each plane is padded to ``[h + 2r, w + 2r]`` and kept flat,
    so both passes are a few long vectorised loops: along the width a shift by ``k`` columns is a
    shift by ``k`` in the flat plane, along the height a shift by ``k (w + 2r)``.  The ``2r`` last
    columns of every row mix two rows and are dropped; every kept value is summed exactly as
    torch's shifted slices sum it.
    """
    c, h, w = x.shape
    r = weights.size // 2
    wide = w + 2 * r
    size = (h + 2 * r) * wide
    padded = np.zeros(size + 2 * r, dtype=np.float32)  # flat [h + 2r, w + 2r] and 2r spare values
    rows = np.empty(size, dtype=np.float32)  # blurred along the width (first w columns of each row)
    cols = np.empty(h * wide, dtype=np.float32)  # then along the height
    out = np.empty((c, h, w), dtype=np.float32)
    for p in range(c):
        _pad_reflect(x[p], r, padded)
        _taps_(rows, padded, weights, 1)
        _taps_(cols, rows, weights, wide)
        for i in range(h):
            dst, src = out[p, i], cols[i * wide:i * wide + w]
            for j in range(w):  # (an explicit loop: numba's slice assignment is several times slower)
                dst[j] = src[j]
    return out


@njit(cache=True)
def finish_(x: np.ndarray, solarize: bool) -> None:  # pragma: no cover - compiled
    """Solarize at 0.5 (``1 - v`` where ``v >= 0.5``, as ``(1 - 2v) + v``) if asked, then clamp to [0, 1]."""
    flat = x.reshape(-1)
    for k in range(flat.size):
        v = flat[k]
        if solarize and v >= _F(0.5):
            v = (v * _F(-2.0) + _F(1.0)) + v
        flat[k] = _clamp01(v)


def mean_luma(x: np.ndarray) -> torch.Tensor:
    """Contrast's mean luma ``[1, 1, 1]`` of ``x [3, h, w]``: the luma plane here, its mean by torch.

    The blend with it stays in torch too (:func:`eupe.views.photometric.blend_`):
    torch adds a one-element tensor with a fused multiply-add in its vector loop but not in the
    loop's tail (the last ``n mod 2 x lanes`` values), so its bits depend on the CPU's vector width.
    """
    plane = np.empty(x.shape[1:], dtype=np.float32)
    luma(x, plane)
    return torch.mean(torch.from_numpy(plane).unsqueeze(0), dim=(-3, -2, -1), keepdim=True)  # [1, 1, 1]


def warm_up_kernels() -> None:
    """Compile every kernel here for the argument types the renderer passes (or load them from
    numba's disk cache), in this process.  Called before DataLoader workers are forked, so they
    inherit the compiled code instead of each loading it (0.3-0.5 s) or compiling it (3 s)."""
    rgb = np.frombuffer(bytes(4 * 4 * 3), dtype=np.uint8).reshape(4, 4, 3)  # read-only, as from PIL's bytes
    x = np.empty((3, 4, 4), dtype=np.float32)
    to_float(rgb, x)
    brightness_(x, _F(0.5))
    saturation_(x, _F(0.5), _F(0.5))
    hue_(x, _F(6.5))
    mean_luma(x)
    x = blur(x, np.full(3, 1.0 / 3.0, dtype=np.float32))
    finish_(x, True)
