"""Codecs that turn cached teacher features into a few plain numeric components and back.

Every codec maps float32 token vectors ``x[..., T, D]`` (leading axes e.g. ``[N, K]`` images x
views; ``T`` tokens of width ``D``; a summary vector is the case ``T = 1``) to a dict of named
numpy arrays, its *components*, and back with one documented formula.  Every component has the
same leading axes as ``x`` followed by a fixed per-view suffix (:meth:`Codec.components`), so a
store pre-creates ``[N, K, *suffix]`` arrays, and :meth:`Codec.decode` works on any leading
index/slice of the components (one view, one image, a batch).  No pickles, no hidden state:
the decoded value depends only on the components and the codec's parameters (``to_dict``).
:meth:`Codec.decode` is the single decode call shared by the cache ``verify`` and the trainer.
Every component's suffix starts with the token axis (or is a per-view row ``(1, D)``), so one summary vector per view can be
stored without its ``T = 1`` axis: :meth:`Codec.encode_vector` / :meth:`Codec.decode_vector` /
:meth:`Codec.vector_components` do exactly that (re-inserting the axis with ``p[..., None, :]``
would be wrong for 1-D components such as ``scale [T]``).

Families and formulas (``f16``/``f32`` = float16/float32; ``q`` integer codes)
-------------------------------------------------------------------------------

``fp16`` -- :class:`Float16Codec`
    components: ``values f16 [T, D]``;  ``x = values``.

``int8``, ``int6``, ``int4`` -- :class:`TokenIntCodec` (``bits`` b, ``L = 2**(b-1) - 1``)
    Plain per-token absmax quantisation, one code per int8 byte (zstd entropy-codes them).
    Encode: ``scale`` in float32, ``codes = clip(rint(x * (1 / scale)), -L, L)`` (0 where scale 0).
    components: ``codes int8 [T, D]`` in ``[-L, L]``, ``scale f32 [T]``;
    ``x[t, c] = codes[t, c] * scale[t]``  with  ``scale[t] = max_c |x[t, c]| / L``.

``compact``, ``tiny`` -- :class:`HaarCodec` (step ``alpha``, Haar ``levels``; format version 2)
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
    (``bench/cache.py``); ``tiny`` (alpha 0.35) is the small mode; ``int8``/``int6``/``int4``
    stay the plain per-token baselines their names promise (and lose the normalised space when a
    few channels dominate: per-token absmax spends the whole code range on them).

Every formula is written once over a tiny array backend and runs on numpy (:meth:`Codec.encode`,
:meth:`Codec.decode`) or on torch tensors on any device (:meth:`Codec.encode_torch`,
:meth:`Codec.decode_torch`: quantise on the teacher's GPU, decode on the trainer's).  Decoding is
elementwise float32 arithmetic in a fixed order, so numpy and torch decode bit for bit alike;
encoding agrees except where a float32 reduction order moves a value across a rounding edge.

Design notes (``bench/codecs_lab.py``, DINOv2-S final-LayerNorm tokens, 224 px): a seeded
block-Hadamard channel rotation saves nothing once zstd's Huffman stage adapts to the code
histogram; the spatial Haar transform saves ~10 % (vs. per-view centring only); storing ``q`` as
int16 would cost +28 % over the int8 pair; dead-zone rounding saves only 1.5 %.  Format version 1
(per-token scale only) was ~17 % smaller at the same step but lost normalised cosine (DINOv2-S
0.99839 normalised vs 0.99923 raw) and collapsed with outlier channels (0.936 normalised).

Storage: a store keeps one view's components packed in one inner chunk of a float32 zarr array,
whose ``eupe.features`` zarr codec (:mod:`eupe.store.zarr_codecs`) decodes them with
:meth:`Codec.decode`.  :func:`zarr_compressors` is the exact zarr 3 bytes codec chain after it
(``[ZstdCodec(level=TARGET_ZSTD_LEVEL), Crc32cCodec()]``, level 1; a flipped byte fails the crc32c
check on read with ``ValueError: Stored and computed checksum do not match``); :func:`stored_nbytes`
measures the bytes a dict of components takes in it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from eupe.registry import Registry
from eupe.store.layout import TARGET_ZSTD_LEVEL, compressors

FORMAT_VERSION = 2
FP16_MAX = 65504.0
MEAN_WEIGHT = 0.25  # HaarCodec channel scale: sqrt(var + MEAN_WEIGHT * mean**2) over the view's tokens

ComponentSpec = dict[str, tuple[np.dtype, tuple[int, ...]]]
Array = Any  # a numpy array or a torch tensor (the torch paths import torch lazily)


# --------------------------------------------------------------------------------------------
# array backends: the codec formulas are written once, over these few operations
# --------------------------------------------------------------------------------------------


class _NumpyOps:
    """The handful of array operations the codec formulas use, on numpy arrays."""

    name = "numpy"

    @staticmethod
    def asarray(a: Array) -> Array:
        return np.asarray(a)

    @staticmethod
    def cast(a: Array, dtype: str) -> Array:
        return a.astype(dtype, copy=False)

    @staticmethod
    def copy(a: Array) -> Array:
        return a.copy()

    @staticmethod
    def unsqueeze(a: Array, axis: int) -> Array:
        return np.expand_dims(a, axis)

    @staticmethod
    def rint(a: Array) -> Array:
        return np.rint(a)

    @staticmethod
    def clip(a: Array, lo: float, hi: float) -> Array:
        return np.clip(a, lo, hi)

    @staticmethod
    def absmax(a: Array, axis: int) -> Array:
        return np.abs(a).max(axis=axis)

    @staticmethod
    def mean(a: Array, axis: int, keepdims: bool = False) -> Array:
        return np.mean(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def sqrt(a: Array) -> Array:
        return np.sqrt(a)

    @staticmethod
    def inverse(s: Array) -> Array:
        """``1 / s`` where ``s > 0``, else 0 (float32)."""
        return np.divide(np.float32(1.0), s, out=np.zeros_like(s), where=s > 0)

    @staticmethod
    def all_finite(a: Array) -> bool:
        return bool(np.isfinite(a).all())

    @staticmethod
    def any(a: Array) -> bool:
        return bool(a.any())

    @staticmethod
    def max(a: Array) -> float:
        return float(a.max()) if a.size else 0.0


class _TorchOps:
    """The same operations on torch tensors (CPU or GPU); imports torch on first use."""

    name = "torch"

    @staticmethod
    def asarray(a: Array) -> Array:
        import torch

        return torch.as_tensor(a)

    @staticmethod
    def cast(a: Array, dtype: str) -> Array:
        import torch

        return a.to(getattr(torch, dtype))

    @staticmethod
    def copy(a: Array) -> Array:
        return a.clone()

    @staticmethod
    def unsqueeze(a: Array, axis: int) -> Array:
        return a.unsqueeze(axis)

    @staticmethod
    def rint(a: Array) -> Array:
        return a.round()  # half to even, as np.rint

    @staticmethod
    def clip(a: Array, lo: float, hi: float) -> Array:
        return a.clamp(lo, hi)

    @staticmethod
    def absmax(a: Array, axis: int) -> Array:
        return a.abs().amax(dim=axis)

    @staticmethod
    def mean(a: Array, axis: int, keepdims: bool = False) -> Array:
        return a.mean(dim=axis, keepdim=keepdims)

    @staticmethod
    def sqrt(a: Array) -> Array:
        return a.sqrt()

    @staticmethod
    def inverse(s: Array) -> Array:
        import torch

        return torch.where(s > 0, 1.0 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))

    @staticmethod
    def all_finite(a: Array) -> bool:
        return bool(a.isfinite().all())

    @staticmethod
    def any(a: Array) -> bool:
        return bool(a.any())

    @staticmethod
    def max(a: Array) -> float:
        return float(a.max()) if a.numel() else 0.0


NUMPY, TORCH = _NumpyOps(), _TorchOps()


# --------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """Base class: ``encode`` float32 ``[..., T, D]`` -> named components -> ``decode`` back.

    Subclasses are frozen dataclasses whose fields are the codec parameters (all of them go into
    :meth:`to_dict`) and implement ``_encode(x, ops)`` / ``_decode(parts, ops)`` once over an
    array backend: :meth:`encode`/:meth:`decode` run them on numpy arrays, :meth:`encode_torch`/
    :meth:`decode_torch` on torch tensors (any device) with the same formulas.  ``tolerance`` is
    the documented minimum expected mean per-token cosine against the float32 input.
    """

    name: str
    family: ClassVar[str] = "base"

    # -- interface -----------------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """float32 ``[..., T, D]`` -> components (numpy)."""
        return self._encode(self._check_input(x, NUMPY), NUMPY)

    def decode(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """Components (any leading index/slice) -> float32 ``[..., T, D]`` (numpy)."""
        return self._decode(self._parts(parts, NUMPY), NUMPY)

    def encode_torch(self, x: Any) -> dict[str, Any]:
        """:meth:`encode` on a torch tensor, on its device (e.g. quantise on the teacher's GPU)."""
        return self._encode(self._check_input(x, TORCH), TORCH)

    def decode_torch(self, parts: Mapping[str, Any]) -> Any:
        """:meth:`decode` on torch tensors, on their device; float32 ``[..., T, D]``."""
        return self._decode(self._parts(parts, TORCH), TORCH)

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        """Per-view ``{name: (dtype, shape suffix)}``; a store creates ``[*leading, *suffix]``.

        Every suffix starts with the token axis ``T`` or is a per-view row ``(1, D)`` (what
        :meth:`encode_vector` relies on: at ``T = 1`` that first axis has length 1).
        """
        raise NotImplementedError

    def _encode(self, x: Array, ops: Any) -> dict[str, Array]:
        raise NotImplementedError

    def _decode(self, parts: Mapping[str, Array], ops: Any) -> Array:
        raise NotImplementedError

    # -- one vector per view (summary tokens), stored without the T=1 axis ---------------------
    def vector_components(self, dim: int) -> ComponentSpec:
        """:meth:`components` of a single token with its ``T = 1`` axis removed."""
        return {n: (dt, suffix[1:]) for n, (dt, suffix) in self.components(1, dim).items()}

    def encode_vector(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``x [..., D]`` -> components shaped ``[..., *vector_components suffix]``."""
        return self._encode_vector(x, NUMPY)

    def decode_vector(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """Inverse of :meth:`encode_vector` on any leading slice: float32 ``[..., D]``."""
        return self._decode_vector(parts, NUMPY)

    def encode_vector_torch(self, x: Any) -> dict[str, Any]:
        """:meth:`encode_vector` on a torch tensor."""
        return self._encode_vector(x, TORCH)

    def decode_vector_torch(self, parts: Mapping[str, Any]) -> Any:
        """:meth:`decode_vector` on torch tensors."""
        return self._decode_vector(parts, TORCH)

    def _encode_vector(self, x: Array, ops: Any) -> dict[str, Array]:
        x = ops.asarray(x)
        axis = x.ndim - 1  # the inserted T=1 axis, dropped again from every component
        parts = self._encode(self._check_input(ops.unsqueeze(x, axis), ops), ops)
        return {n: p[(slice(None),) * axis + (0,)] for n, p in parts.items()}

    def _decode_vector(self, parts: Mapping[str, Array], ops: Any) -> Array:
        suffix_ndim = {n: len(suffix) - 1 for n, (_, suffix) in self.components(1, 1).items()}
        with_axis = {}
        for n, p in self._parts(parts, ops).items():
            with_axis[n] = ops.unsqueeze(p, p.ndim - suffix_ndim.get(n, 0))
        return self._decode(with_axis, ops)[..., 0, :]

    @property
    def tolerance(self) -> float:
        raise NotImplementedError

    @property
    def min_cosine(self) -> float:
        """Alias of :attr:`tolerance` (the name the store's ``verify`` reads)."""
        return self.tolerance

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: ``{"name", "family", "version", **parameters}``."""
        return {"name": self.name, "family": self.family, "version": FORMAT_VERSION,
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Codec":
        """Inverse of :meth:`to_dict`; strict: unknown name, family, version or keys raise ValueError."""
        d = dict(d)
        name = d.get("name")
        if not isinstance(name, str) or name not in CODECS:
            raise ValueError(f"unknown codec name {name!r}; valid names: {', '.join(CODECS.names())}")
        cls = type(CODECS.get(name))
        params = {f.name for f in dataclasses.fields(cls)} - {"name"}
        expected = {"name", "family", "version"} | params
        unknown, missing = sorted(set(d) - expected), sorted(expected - set(d))
        if unknown or missing:
            raise ValueError(f"codec {name!r}: unknown keys {unknown}, missing keys {missing}; "
                             f"expected exactly {sorted(expected)}")
        if d["family"] != cls.family:
            raise ValueError(f"codec {name!r}: family {d['family']!r} != {cls.family!r}")
        if d["version"] != FORMAT_VERSION:
            raise ValueError(f"codec {name!r}: format version {d['version']!r} unsupported "
                             f"(this code reads version {FORMAT_VERSION})")
        return cls(name=name, **{k: d[k] for k in params})

    # -- helpers for subclasses ----------------------------------------------------------------
    def _check_input(self, x: Array, ops: Any) -> Array:
        x = ops.cast(ops.asarray(x), "float32")
        if x.ndim < 2:
            raise ValueError(f"codec {self.name!r}: expected [..., T, D] features, got shape {tuple(x.shape)}")
        if not ops.all_finite(x):
            raise ValueError(f"codec {self.name!r}: features contain NaN or inf")
        return x

    def _parts(self, parts: Mapping[str, Array], ops: Any) -> dict[str, Array]:
        return {n: ops.asarray(p) for n, p in parts.items()}

    def _get(self, parts: Mapping[str, Array], key: str) -> Array:
        try:
            return parts[key]
        except KeyError:
            raise KeyError(f"codec {self.name!r}: component {key!r} missing "
                           f"(got {sorted(parts)})") from None


# --------------------------------------------------------------------------------------------
# fp16
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Float16Codec(Codec):
    """``values = f16(x)``; ``x = values``.  |x| above 65504 raises (would become inf)."""

    family: ClassVar[str] = "float16"

    def _encode(self, x: Array, ops: Any) -> dict[str, Array]:
        if ops.max(ops.absmax(x, -1)) > FP16_MAX:
            raise ValueError(f"codec {self.name!r}: |x| = {ops.max(ops.absmax(x, -1)):g} overflows float16")
        return {"values": ops.cast(x, "float16")}

    def _decode(self, parts: Mapping[str, Array], ops: Any) -> Array:
        return ops.cast(self._get(parts, "values"), "float32")

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        return {"values": (np.dtype(np.float16), (tokens, dim))}

    @property
    def tolerance(self) -> float:
        return 0.9999


# --------------------------------------------------------------------------------------------
# per-token absmax integers
# --------------------------------------------------------------------------------------------

# Minimum expected mean cosine.  Per-token absmax error grows with the crest factor absmax/rms of
# the tokens (up to sqrt(D) when a few outlier channels dominate): 1 - cos ~ crest**2 / (24 L**2).
# Real DINOv2-S features reach int8 0.99997, int6 0.9995, int4 0.991; tokens with 3 channels x50
# drop to int8 0.9997, int6 0.995, int4 0.975, hence these loose, data-independent floors.
_TOKEN_INT_TOLERANCE = {8: 0.999, 7: 0.997, 6: 0.99, 5: 0.98, 4: 0.95, 3: 0.85, 2: 0.6}


@dataclass(frozen=True)
class TokenIntCodec(Codec):
    """``codes = round(x / scale)`` in ``[-L, L]``, ``scale = absmax_c(x) / L``; ``x = codes * scale``."""

    bits: int = 8
    family: ClassVar[str] = "token_int"

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 8):
            raise ValueError(f"codec {self.name!r}: bits must be an int in 2..8, got {self.bits!r}")

    @property
    def max_code(self) -> int:
        """L: codes lie in [-L, L]."""
        return 2 ** (self.bits - 1) - 1

    def _encode(self, x: Array, ops: Any) -> dict[str, Array]:
        scale = ops.absmax(x, -1) / float(self.max_code)                # [..., T] float32
        codes = ops.clip(ops.rint(x * ops.unsqueeze(ops.inverse(scale), -1)), -self.max_code, self.max_code)
        return {"codes": ops.cast(codes, "int8"), "scale": scale}

    def _decode(self, parts: Mapping[str, Array], ops: Any) -> Array:
        codes, scale = self._get(parts, "codes"), self._get(parts, "scale")
        return ops.cast(codes, "float32") * ops.unsqueeze(ops.cast(scale, "float32"), -1)

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        return {"codes": (np.dtype(np.int8), (tokens, dim)), "scale": (np.dtype(np.float32), (tokens,))}

    @property
    def tolerance(self) -> float:
        return _TOKEN_INT_TOLERANCE[self.bits]
# --------------------------------------------------------------------------------------------
# token-normalised, spatial-Haar uniform quantisation
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


@dataclass(frozen=True)
class HaarCodec(Codec):
    """Channel- and token-normalised, spatially Haar-transformed uniform quantisation (module docstring)."""

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
            return _FP16._encode(x, ops)
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
            return _FP16._decode(parts, ops)
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
            return _FP16.components(1, dim)
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


_FP16 = Float16Codec("fp16")


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

CODECS: Registry[Codec] = Registry("codec")
for _codec in (_FP16, TokenIntCodec("int8", bits=8), TokenIntCodec("int6", bits=6),
               TokenIntCodec("int4", bits=4), HaarCodec("compact", alpha=0.11, levels=4),
               HaarCodec("tiny", alpha=0.35, levels=4)):
    CODECS.register(_codec.name, _codec)


def get_codec(name: str) -> Codec:
    """The registered codec called ``name``; unknown names raise UnknownNameError listing the valid ones."""
    return CODECS.get(name)

# --------------------------------------------------------------------------------------------
# storage helpers
# --------------------------------------------------------------------------------------------


def zarr_compressors(level: int = TARGET_ZSTD_LEVEL) -> list:
    """The store's zarr 3 codec chain for codec components: zstd, then a crc32c of the compressed chunk.

    Use as ``group.create_array(name, shape=..., chunks=..., dtype=..., compressors=zarr_compressors())``.
    """
    return compressors(level)


def stored_nbytes(parts: Mapping[str, np.ndarray], chunks_views: int = 8, level: int = TARGET_ZSTD_LEVEL) -> int:
    """Bytes the components take as zarr v3 arrays (zstd ``level`` + crc32c), chunk files only.

    Each component ``[V, *suffix]`` becomes one array chunked ``(chunks_views, *suffix)``, written
    into an in-memory store; metadata documents (``zarr.json``) are not counted.
    """
    import zarr
    from zarr.storage import MemoryStore

    files: dict = {}
    group = zarr.open_group(store=MemoryStore(store_dict=files), mode="w")
    for name, a in parts.items():
        a = np.asarray(a)
        if a.ndim == 0:
            a = a[None]
        chunks = (max(1, min(chunks_views, a.shape[0])), *a.shape[1:])
        arr = group.create_array(name, shape=a.shape, chunks=tuple(max(1, c) for c in chunks), dtype=a.dtype,
                                 compressors=zarr_compressors(level), fill_value=0)
        arr[...] = a
    return sum(len(buf) for key, buf in files.items() if not key.endswith("zarr.json"))


def token_cosine(reference: np.ndarray, approx: np.ndarray) -> np.ndarray:
    """Per-token cosine (float64, flattened over leading axes); two zero tokens count as 1."""
    a = np.asarray(reference, dtype=np.float64).reshape(-1, np.shape(reference)[-1])
    b = np.asarray(approx, dtype=np.float64).reshape(-1, np.shape(approx)[-1])
    num = np.einsum("ij,ij->i", a, b)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    den = na * nb
    both_zero = (na == 0) & (nb == 0)
    return np.where(both_zero, 1.0, num / np.where(den > 0, den, 1.0))


def smooth_l1(target: np.ndarray, approx: np.ndarray, beta: float = 1.0) -> float:
    """Mean smooth-L1 of ``approx - target`` (float64), as ``torch.nn.functional.smooth_l1_loss``."""
    d = np.abs(np.asarray(approx, np.float64) - np.asarray(target, np.float64))
    return float(np.mean(np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta))) if d.size else 0.0


def fidelity(raw: np.ndarray, decoded: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """How close ``decoded`` is to ``raw`` (both ``[..., D]``), in raw space and where the loss looks.

    ``mean``/``std`` ``[D]`` are the per-coordinate normalisation statistics the trainer applies,
    ``z = (x - mean) / std``.  Returns the mean and min per-token cosine in raw space
    (``raw_cosine``, ``raw_cosine_min``), the same in normalised space (``norm_cosine``,
    ``norm_cosine_min``), and ``smooth_l1``: the smooth-L1 loss (beta 1) between the normalised
    decoded and normalised raw tokens, i.e. the floor the codec puts under the training loss.
    """
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if np.shape(raw) != np.shape(decoded):
        raise ValueError(f"raw {np.shape(raw)} and decoded {np.shape(decoded)} differ in shape")
    if not (np.all(std > 0) and np.isfinite(std).all()):
        raise ValueError("std must be finite and > 0 in every coordinate")
    z_raw = (np.asarray(raw, np.float64) - mean) / std      # [..., D], broadcast over leading axes
    z_dec = (np.asarray(decoded, np.float64) - mean) / std
    raw_cos, norm_cos = token_cosine(raw, decoded), token_cosine(z_raw, z_dec)
    return {"raw_cosine": float(raw_cos.mean()), "raw_cosine_min": float(raw_cos.min()),
            "norm_cosine": float(norm_cos.mean()), "norm_cosine_min": float(norm_cos.min()),
            "smooth_l1": smooth_l1(z_raw, z_dec)}
