"""The ``haar`` family: the spatial Haar transform and :class:`HaarCodec` (format version 2).

``compact``, ``tiny`` -- :class:`HaarCodec` (step ``alpha``, Haar ``levels``)
    Channel- and token-normalised, spatially Haar-transformed uniform quantisation, entropy-coded
    by zstd.  The trainer's loss compares per-coordinate normalised targets ``(x - mean) / std``,
    so the error is made white in a per-channel normalised space, not in raw space:

    1. ``chscale[c] = f16(sqrt(var_t x[t, c] + mean_t(x[t, c])**2 / 4))`` over the view's tokens
       and ``r = x / chscale``: every channel of the view gets a comparable spread, so a few
       channels 100x larger than the rest (teachers without a final norm) take no precision from
       the others.  The spread is mostly the channel's variation (what the loss normalises by);
       a quarter of its squared mean keeps constant channels finite and was 1.5 % (DINOv2-S) to
       13 % (EfficientNet, sparse ReLU maps: zeros stay zeros) smaller at equal normalised cosine
       than centring by a stored per-view mean;
    2. ``scale[t] = f16(rms_c r[t, c])`` and ``u = r / scale[:, None]``: every token gets rms 1;
    3. the ``T`` tokens are laid out on their ``h x w`` patch grid (row-major, :func:`grid_shape`)
       and transformed along both grid axes, per channel, with the orthonormal multi-level Haar
       matrices ``Hh = haar_matrix(h, levels)``, ``Hw = haar_matrix(w, levels)``:
       ``Y = Hh @ u @ Hw.T`` (neighbouring patch tokens are correlated: the energy lands in few
       coefficients);
    4. ``q = round(Y / alpha)``, stored as two int8 bytes ``q = codes + 256 * codes_hi``
       (``codes_hi`` is almost all zeros; nothing is clipped below |q| = 32767).

    components: ``chscale f16 [1, D]``, ``scale f16 [T]``,
    ``codes int8 [T, D]``, ``codes_hi int8 [T, D]``; decode::

        q[a, b, c] = codes[a*w + b, c] + 256 * codes_hi[a*w + b, c]
        y[i*w + j, c] = sum_ab Hh[a, i] * Hw[b, j] * q[a, b, c]
        x[t, c] = y[t, c] * (scale[t] * alpha) * chscale[c]

    (float32, in this order; the inverse Haar with butterflies, :func:`haar_inverse`, no BLAS).
    A single-token view (``T = 1``: the summary vector) has no grid and no token axis to take
    channel statistics over: it is stored as float16 ``values [1, D]`` exactly as ``fp16`` (it is
    1/(T+1) of the values).  The quantisation error is white with variance ``alpha**2 / 12`` per
    channel-normalised value, so the normalised per-token cosine is about ``1 - alpha**2 / 24``.
    ``compact`` (alpha 0.11) keeps normalised cosine >= 0.999 on the real teachers here
    (``bench/cache.py``); ``tiny`` (alpha 0.35) is the small mode.

Design notes (``bench/codecs_lab.py``, DINOv2-S final-LayerNorm tokens, 224 px): a seeded
block-Hadamard channel rotation saves nothing once zstd's Huffman stage adapts to the code
histogram; the spatial Haar transform saves ~10 % (vs. per-view centring only); storing ``q`` as
int16 would cost +28 % over the int8 pair; dead-zone rounding saves only 1.5 %.  Format version 1
(per-token scale only) was ~17 % smaller at the same step but lost normalised cosine (DINOv2-S
0.99839 normalised vs 0.99923 raw) and collapsed with outlier channels (0.936 normalised).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from eupe.store.codecs.base import FP16_MAX, Codec, ComponentSpec
from eupe.store.codecs.fp16 import FP16
from eupe.store.codecs.ops import TORCH, Array

MEAN_WEIGHT = 0.25  # HaarCodec channel scale: sqrt(var + MEAN_WEIGHT * mean**2) over the view's tokens


# --------------------------------------------------------------------------------------------
# the spatial transform
# --------------------------------------------------------------------------------------------


def grid_shape(tokens: int) -> tuple[int, int]:
    """Patch grid ``(h, w)`` assumed for ``tokens`` row-major tokens: ``h`` = largest divisor <= sqrt.

    Square grids (256 -> 16x16, 1024 -> 32x32) and most rectangular ones (384 -> 16x24) come out
    right; a wrong guess only costs compression, never correctness (the transform is orthonormal
    whatever the shape).  ``1 -> (1, 1)``.
    """
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    h = math.isqrt(tokens)
    while tokens % h:
        h -= 1
    return h, tokens // h


@functools.lru_cache(maxsize=64)
def _haar_matrix64(n: int, levels: int) -> np.ndarray:
    m, out = n, np.eye(n)
    for _ in range(levels):
        if m < 2:
            break
        step = np.eye(n)
        half = (m + 1) // 2
        step[:m, :m] = 0.0
        j = np.arange(m // 2)
        r = math.sqrt(0.5)
        step[j, 2 * j] = step[j, 2 * j + 1] = r          # averages of pairs
        step[half + j, 2 * j], step[half + j, 2 * j + 1] = r, -r   # differences of pairs
        if m % 2:
            step[m // 2, m - 1] = 1.0                       # odd length: last entry passes through
        out = step @ out
        m = half
    return out


def haar_matrix(n: int, levels: int) -> np.ndarray:
    """Orthonormal multi-level Haar matrix ``H [n, n]`` (float64): ``y = H @ x``, ``x = H.T @ y``.

    Level step on the first ``m`` entries (``m = n`` first): rows ``0..m//2-1`` are
    ``(x[2j] + x[2j+1]) / sqrt(2)``, rows ``ceil(m/2)+j`` are ``(x[2j] - x[2j+1]) / sqrt(2)``, an odd
    last entry is copied to row ``m//2``; then ``m = ceil(m/2)``; repeated ``levels`` times (or until
    ``m == 1``).  Exact, deterministic, no random numbers; works for any ``n``.
    """
    return _haar_matrix64(int(n), int(levels)).copy()


_R = math.sqrt(0.5)  # a float32 array times this Python float is computed in float32 (numpy and torch)


def _level_sizes(n: int, levels: int) -> list[int]:
    """Lengths m of the leading segment transformed at each Haar level (n, ceil(n/2), ...)."""
    sizes, m = [], n
    for _ in range(levels):
        if m < 2:
            break
        sizes.append(m)
        m = (m + 1) // 2
    return sizes


def _ix(s: slice, trailing: int) -> tuple:
    return (Ellipsis, s) + (slice(None),) * trailing


def _clone(a: Array) -> Array:
    return a.clone() if hasattr(a, "clone") else a.copy()


def haar_forward(x: Array, axis: int, levels: int) -> Array:
    """``haar_matrix(n, levels) @ x`` along ``axis`` (negative), in place, with butterflies (no BLAS).

    ``x`` is a float32 numpy array or torch tensor; both run the same float32 operations, so the
    results agree bit for bit.
    """
    trailing = -1 - axis
    for m in _level_sizes(x.shape[axis], levels):
        k, half = m // 2, (m + 1) // 2
        even, odd = x[_ix(slice(0, 2 * k, 2), trailing)], x[_ix(slice(1, 2 * k, 2), trailing)]
        avg, dif = (even + odd) * _R, (even - odd) * _R
        carry = _clone(x[_ix(slice(m - 1, m), trailing)]) if m % 2 else None
        x[_ix(slice(0, k), trailing)] = avg
        if carry is not None:
            x[_ix(slice(k, k + 1), trailing)] = carry
        x[_ix(slice(half, half + k), trailing)] = dif
    return x


def _into(op: str, a: Array, b: Array, out: Array) -> None:
    """``out[...] = a op b`` without a temporary (numpy ufunc or torch ``out=``)."""
    if hasattr(out, "clone"):
        import torch

        (torch.add if op == "+" else torch.sub)(a, b, out=out)
    else:
        (np.add if op == "+" else np.subtract)(a, b, out=out)


def haar_inverse(y: Array, axis: int, levels: int) -> Array:
    """``haar_matrix(n, levels).T @ y`` along ``axis`` (negative), with butterflies (no BLAS).

    Returns the result, which is ``y`` or a buffer of the same shape (use the return value; ``y``
    is overwritten).  Ping-pong between two buffers: each level scales its ``k`` averages ``a`` and
    ``k`` differences ``d`` by ``r = sqrt(1/2)`` in place, then writes ``r a + r d`` and
    ``r a - r d`` interleaved straight into the other buffer, whose entries past ``m`` still hold
    the untouched finer coefficients.  ``y`` is a float32 numpy array or torch tensor: same operations, same bits.
    """
    trailing = -1 - axis
    sizes = list(reversed(_level_sizes(y.shape[axis], levels)))
    if not sizes:
        return y
    src, dst = y, _clone(y)
    for m in sizes:
        k, half = m // 2, (m + 1) // 2
        avg, dif = src[_ix(slice(0, k), trailing)], src[_ix(slice(half, half + k), trailing)]
        if m % 2:  # odd: the entry between averages and differences passes through unscaled
            avg *= _R
            dif *= _R
            dst[_ix(slice(m - 1, m), trailing)] = src[_ix(slice(k, k + 1), trailing)]
        else:
            head = src[_ix(slice(0, m), trailing)]
            head *= _R
        _into("+", avg, dif, dst[_ix(slice(0, 2 * k, 2), trailing)])
        _into("-", avg, dif, dst[_ix(slice(1, 2 * k, 2), trailing)])
        src, dst = dst, src
    return src


def _haar2d(y: Array, t: int, inverse: bool, levels: int) -> Array:
    """Separable 2-D Haar of ``y [..., T, D]`` on its ``h x w`` token grid (in place when possible)."""
    h, w = grid_shape(t)
    g = y.reshape(*y.shape[:-2], h, w, y.shape[-1])  # [..., T, D] -> [..., h, w, D]
    if inverse:
        g = haar_inverse(haar_inverse(g, -2, levels), -3, levels)
    else:
        g = haar_forward(haar_forward(g, -3, levels), -2, levels)
    return g.reshape(y.shape)




# --------------------------------------------------------------------------------------------
# the codec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HaarCodec(Codec):
    """Channel- and token-normalised, spatially Haar-transformed uniform quantisation (this module's docstring)."""

    alpha: float = 0.11
    levels: int = 4
    family: ClassVar[str] = "haar"

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and 0.01 <= float(self.alpha) <= 4.0):
            raise ValueError(f"codec {self.name!r}: alpha must be in [0.01, 4], got {self.alpha!r}")
        if not (isinstance(self.levels, int) and 0 <= self.levels <= 16):
            raise ValueError(f"codec {self.name!r}: levels must be an int in 0..16, got {self.levels!r}")
        object.__setattr__(self, "alpha", float(self.alpha))

    def _encode(self, x: Array, ops: Any) -> dict[str, Array]:
        t = x.shape[-2]
        if t == 1:
            return FP16._encode(x, ops)
        mean = ops.mean(x, -2, keepdims=True)                                    # [..., 1, D]
        centred = x - mean
        var = ops.mean(centred * centred, -2, keepdims=True)
        chscale = self._f16(ops.sqrt(var + mean * mean * MEAN_WEIGHT), ops)     # [..., 1, D], f16

        r = x * ops.inverse(ops.cast(chscale, "float32"))
        scale = self._f16(ops.sqrt(ops.mean(r * r, -1)), ops)                     # [..., T]
        u = r * ops.unsqueeze(ops.inverse(ops.cast(scale, "float32")), -1)
        q = ops.rint(_haar2d(u, t, False, self.levels) * (1.0 / self.alpha))
        q = ops.cast(ops.clip(q, -32768, 32767), "int32")
        low = ((q + 128) & 255) - 128                                             # low byte, in [-128, 127]
        codes_hi = ops.cast((q - low) >> 8, "int8")                              # exact: q - low = 256 * hi
        return {"chscale": chscale, "scale": scale, "codes": ops.cast(low, "int8"), "codes_hi": codes_hi}

    def _decode(self, parts: Mapping[str, Array], ops: Any) -> Array:
        if "values" in parts:
            return FP16._decode(parts, ops)
        codes, codes_hi = self._get(parts, "codes"), self._get(parts, "codes_hi")
        q = ops.cast(codes, "float32")
        if ops is TORCH or ops.any(codes_hi):  # adding zeros is exact; torch skips the device sync
            q = q + ops.cast(codes_hi, "float32") * 256.0
        y = _haar2d(q, codes.shape[-2], True, self.levels)
        y *= ops.unsqueeze(ops.cast(self._get(parts, "scale"), "float32") * self.alpha, -1)
        y *= ops.cast(self._get(parts, "chscale"), "float32")
        return y

    def _f16(self, a: Array, ops: Any) -> Array:
        if ops.max(ops.absmax(a, -1)) > FP16_MAX:
            raise ValueError(f"codec {self.name!r}: a scale of {ops.max(ops.absmax(a, -1)):g} overflows float16")
        return ops.cast(a, "float16")

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        if tokens == 1:
            return FP16.components(1, dim)
        return {"chscale": (np.dtype(np.float16), (1, dim)),
                "scale": (np.dtype(np.float16), (tokens,)), "codes": (np.dtype(np.int8), (tokens, dim)),
                "codes_hi": (np.dtype(np.int8), (tokens, dim))}

    @property
    def tolerance(self) -> float:
        """1 - alpha**2/8, a loose raw-space floor.

        In the per-view channel-normalised space the error is white, 1 - cos ~ alpha**2/24; back in
        raw space it is weighted by the channel scales, so tokens dominated by a few wide channels
        can lose up to a few times more (measured 3x on 32-channel tokens with one channel x50).
        """
        return 1.0 - self.alpha ** 2 / 8.0
