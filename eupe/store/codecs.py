"""Codecs that turn cached teacher features into a few plain numeric Zarr arrays and back.

Every codec maps float32 token vectors ``x[..., T, D]`` (leading axes e.g. ``[N, K]`` images x
views; ``T`` tokens of width ``D``; a summary vector is the case ``T = 1``) to a dict of named
numpy arrays, its *components*, and back with one documented formula.  Every component has the
same leading axes as ``x`` followed by a fixed per-view suffix (:meth:`Codec.components`), so a
store pre-creates ``[N, K, *suffix]`` arrays, and :meth:`Codec.decode` works on any leading
index/slice of the components (one view, one image, a batch).  No pickles, no hidden state:
the decoded value depends only on the components and the codec's parameters (``to_dict``).
:meth:`Codec.decode` is the single decode call shared by the cache ``verify`` and the trainer.
Every component's suffix starts with the token axis, so one summary vector per view can be
stored without its ``T = 1`` axis: :meth:`Codec.encode_vector` / :meth:`Codec.decode_vector` /
:meth:`Codec.vector_components` do exactly that (re-inserting the axis with ``p[..., None, :]``
would be wrong for 1-D components such as ``scale [T]``).

Families and formulas (``f16``/``f32`` = float16/float32; ``q`` integer codes)
-------------------------------------------------------------------------------

``fp16`` -- :class:`Float16Codec`
    components: ``values f16 [T, D]``;  ``x = values``.

``int8``, ``int6``, ``int4`` -- :class:`TokenIntCodec` (``bits`` b, ``L = 2**(b-1) - 1``)
    Plain per-token absmax quantisation, one code per int8 byte (zstd entropy-codes them).
    components: ``codes int8 [T, D]`` in ``[-L, L]``, ``scale f32 [T]``;
    ``x[t, c] = codes[t, c] * scale[t]``  with  ``scale[t] = max_c |x[t, c]| / L``.

``compact``, ``tiny`` -- :class:`HaarCodec` (step ``alpha``, Haar ``levels``)
    Token-normalised, spatially Haar-transformed uniform quantisation, entropy-coded by zstd:

    1. ``scale[t] = f16(rms_c x[t, c])`` and ``u = x / scale[:, None]``: every token gets rms 1, so
       every token ends with the same *relative* error (per-token cosine is what is kept, and the
       worst token is almost as good as the mean one);
    2. the ``T`` tokens are laid out on their ``h x w`` patch grid (row-major, :func:`grid_shape`)
       and transformed along both grid axes, per channel, with the orthonormal multi-level Haar
       matrices ``Hh = haar_matrix(h, levels)``, ``Hw = haar_matrix(w, levels)``:
       ``Y = Hh @ u @ Hw.T``.  Neighbouring patch tokens are correlated, so the energy lands in
       few coefficients; the coarsest one is ``sqrt(T)`` x the view's mean token (with 4 levels
       on a 16x16 grid), i.e. subtracting a per-view channel mean is built in;
    3. ``q = round(Y / alpha)``: one uniform step ``alpha`` (in units of the token rms) for every
       coefficient, stored as two int8 bytes ``q = codes + 256 * codes_hi``.  ``codes_hi`` is
       almost all zeros (zstd stores it in a few bytes); it carries the few large coarse
       coefficients exactly, so nothing is ever clipped, outlier channels included.

    components: ``scale f16 [T]``, ``codes int8 [T, D]``, ``codes_hi int8 [T, D]``; decode::

        q[a, b, c] = codes[a*w + b, c] + 256 * codes_hi[a*w + b, c]
        x[i*w + j, c] = scale[i*w + j] * alpha * sum_ab Hh[a, i] * Hw[b, j] * q[a, b, c]

    i.e. ``x = scale * alpha * (Hh.T @ q @ Hw)`` per channel (computed with in-place butterflies,
    :func:`haar_inverse`, no BLAS).  The quantisation error is white with variance at most
    ``alpha**2 / 12`` per normalised value, so the per-token cosine is about ``1 - alpha**2 / 24``
    whatever the data (:attr:`HaarCodec.tolerance` is ``1 - alpha**2 / 20``).  ``compact``
    (alpha 0.14) and ``tiny`` (alpha 0.44) are the improved modes; ``int8``/``int6``/``int4``
    stay the plain per-token baselines their names promise.

Design notes (``bench/codecs_lab.py``, DINOv2-S final-LayerNorm tokens, 224 px, 165 views):
at equal cosine, dividing by a per-channel std costs +6 % bytes and a seeded block-Hadamard
channel rotation +2 % (uniform absolute error across channels is exactly what per-token cosine
rewards, and zstd's Huffman stage already adapts to the code histogram), so neither is used;
outlier channels cannot overflow anything because large codes go to ``codes_hi``.  The spatial
Haar transform saves 10 % (vs. per-view centring only); a separate per-view mean array adds
nothing once the Haar DC coefficient holds it; std-based steps beat absmax scales; storing
``q`` as int16 would cost +28 % over the int8 pair; dead-zone rounding saves only 1.5 %.

Storage: :func:`zarr_compressors` is the exact zarr 3 codec chain of the store
(``compressors=[ZstdCodec(level=3), Crc32cCodec()]``; a flipped byte fails the crc32c check on
read with ``ValueError: Stored and computed checksum do not match``); :func:`stored_nbytes`
measures the bytes a dict of components takes in it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

FORMAT_VERSION = 1
FP16_MAX = 65504.0

ComponentSpec = dict[str, tuple[np.dtype, tuple[int, ...]]]


# --------------------------------------------------------------------------------------------
# base class and registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """Base class: ``encode`` float32 ``[..., T, D]`` -> named components -> ``decode`` back.

    Subclasses are frozen dataclasses whose fields are the codec parameters (all of them go into
    :meth:`to_dict`).  ``tolerance`` is the documented minimum expected mean per-token cosine
    against the float32 input (used by tests and the cache ``verify``); ``bytes_hint`` the typical
    stored bytes per feature value on real ViT features (zstd level 3; data dependent).
    """

    name: str
    family: ClassVar[str] = "base"

    # -- interface -----------------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def decode(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        """Per-view ``{name: (dtype, shape suffix)}``; a store creates ``[*leading, *suffix]``.

        Every suffix starts with the token axis ``T`` (what :meth:`encode_vector` relies on).
        """
        raise NotImplementedError

    # -- one vector per view (summary tokens), stored without the T=1 axis ---------------------
    def vector_components(self, dim: int) -> ComponentSpec:
        """:meth:`components` of a single token with its ``T = 1`` axis removed."""
        return {n: (dt, suffix[1:]) for n, (dt, suffix) in self.components(1, dim).items()}

    def encode_vector(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``x [..., D]`` -> components shaped ``[..., *vector_components suffix]``."""
        x = np.asarray(x)
        return {n: np.take(p, 0, axis=x.ndim - 1) for n, p in self.encode(x[..., None, :]).items()}

    def decode_vector(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """Inverse of :meth:`encode_vector` on any leading slice: float32 ``[..., D]``."""
        suffix_ndim = {n: len(suffix) - 1 for n, (_, suffix) in self.components(1, 1).items()}
        with_axis = {}
        for n, p in parts.items():
            p = np.asarray(p)
            with_axis[n] = np.expand_dims(p, p.ndim - suffix_ndim.get(n, 0))
        return self.decode(with_axis)[..., 0, :]

    @property
    def tolerance(self) -> float:
        raise NotImplementedError

    @property
    def bytes_hint(self) -> float:
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
            raise ValueError(f"unknown codec name {name!r}; valid names: {', '.join(CODECS)}")
        cls = type(CODECS[name])
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
    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2:
            raise ValueError(f"codec {self.name!r}: expected [..., T, D] features, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"codec {self.name!r}: features contain NaN or inf")
        return x

    def _get(self, parts: Mapping[str, np.ndarray], key: str) -> np.ndarray:
        try:
            return np.asarray(parts[key])
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

    def encode(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = self._check_input(x)
        if x.size and np.abs(x).max() > FP16_MAX:
            raise ValueError(f"codec {self.name!r}: |x| = {np.abs(x).max():g} overflows float16")
        return {"values": x.astype(np.float16)}

    def decode(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._get(parts, "values").astype(np.float32)

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        return {"values": (np.dtype(np.float16), (tokens, dim))}

    @property
    def tolerance(self) -> float:
        return 0.9999

    @property
    def bytes_hint(self) -> float:
        return 1.85


# --------------------------------------------------------------------------------------------
# per-token absmax integers
# --------------------------------------------------------------------------------------------

# Minimum expected mean cosine.  Per-token absmax error grows with the crest factor absmax/rms of
# the tokens (up to sqrt(D) when a few outlier channels dominate): 1 - cos ~ crest**2 / (24 L**2).
# Real DINOv2-S features reach int8 0.99997, int6 0.9995, int4 0.991; tokens with 3 channels x50
# drop to int8 0.9997, int6 0.995, int4 0.975, hence these loose, data-independent floors.
_TOKEN_INT_TOLERANCE = {8: 0.999, 7: 0.997, 6: 0.99, 5: 0.98, 4: 0.95, 3: 0.85, 2: 0.6}
_TOKEN_INT_BYTES = {8: 0.93, 7: 0.78, 6: 0.63, 5: 0.48, 4: 0.32, 3: 0.2, 2: 0.1}


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

    def encode(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = self._check_input(x)
        scale = (np.abs(x).max(axis=-1) / np.float32(self.max_code)).astype(np.float32)
        inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
        codes = np.clip(np.rint(x * inv[..., None]), -self.max_code, self.max_code).astype(np.int8)
        return {"codes": codes, "scale": scale}

    def decode(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        codes, scale = self._get(parts, "codes"), self._get(parts, "scale")
        out = codes.astype(np.float32)
        out *= scale.astype(np.float32, copy=False)[..., None]
        return out

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        return {"codes": (np.dtype(np.int8), (tokens, dim)), "scale": (np.dtype(np.float32), (tokens,))}

    @property
    def tolerance(self) -> float:
        return _TOKEN_INT_TOLERANCE[self.bits]

    @property
    def bytes_hint(self) -> float:
        return _TOKEN_INT_BYTES[self.bits]


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


_R = np.float32(math.sqrt(0.5))


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


def haar_forward(x: np.ndarray, axis: int, levels: int) -> np.ndarray:
    """``haar_matrix(n, levels) @ x`` along ``axis`` (negative), in place, with butterflies (no BLAS)."""
    trailing = -1 - axis
    for m in _level_sizes(x.shape[axis], levels):
        k, half = m // 2, (m + 1) // 2
        even, odd = x[_ix(slice(0, 2 * k, 2), trailing)], x[_ix(slice(1, 2 * k, 2), trailing)]
        avg, dif = (even + odd) * _R, (even - odd) * _R
        carry = x[_ix(slice(m - 1, m), trailing)].copy() if m % 2 else None
        x[_ix(slice(0, k), trailing)] = avg
        if carry is not None:
            x[_ix(slice(k, k + 1), trailing)] = carry
        x[_ix(slice(half, half + k), trailing)] = dif
    return x


def haar_inverse(y: np.ndarray, axis: int, levels: int) -> np.ndarray:
    """``haar_matrix(n, levels).T @ y`` along ``axis`` (negative), in place, with butterflies (no BLAS)."""
    trailing = -1 - axis
    for m in reversed(_level_sizes(y.shape[axis], levels)):
        k, half = m // 2, (m + 1) // 2
        seg = y[_ix(slice(0, m), trailing)].copy()
        avg, dif = seg[_ix(slice(0, k), trailing)], seg[_ix(slice(half, half + k), trailing)]
        even, odd = y[_ix(slice(0, 2 * k, 2), trailing)], y[_ix(slice(1, 2 * k, 2), trailing)]
        np.add(avg, dif, out=even)
        np.subtract(avg, dif, out=odd)
        even *= _R
        odd *= _R
        if m % 2:
            y[_ix(slice(m - 1, m), trailing)] = seg[_ix(slice(k, k + 1), trailing)]
    return y


@dataclass(frozen=True)
class HaarCodec(Codec):
    """Token-normalised, spatially Haar-transformed uniform quantisation (see the module docstring)."""

    alpha: float = 0.14
    levels: int = 4
    family: ClassVar[str] = "haar"

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and 0.01 <= float(self.alpha) <= 4.0):
            raise ValueError(f"codec {self.name!r}: alpha must be in [0.01, 4], got {self.alpha!r}")
        if not (isinstance(self.levels, int) and 0 <= self.levels <= 16):
            raise ValueError(f"codec {self.name!r}: levels must be an int in 0..16, got {self.levels!r}")
        object.__setattr__(self, "alpha", float(self.alpha))

    def encode(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = self._check_input(x)
        *lead, t, d = x.shape
        rms = np.sqrt(np.mean(np.square(x, dtype=np.float32), axis=-1))
        if rms.size and rms.max() > FP16_MAX:
            raise ValueError(f"codec {self.name!r}: token rms {rms.max():g} overflows the float16 scale")
        scale = rms.astype(np.float16)
        s32 = scale.astype(np.float32)
        u = x * np.divide(1.0, s32, out=np.zeros_like(s32), where=s32 > 0)[..., None]
        q = np.rint(self._forward(u, t, d) * np.float32(1.0 / self.alpha))
        q = np.clip(q, -32768, 32767).astype(np.int32)
        codes = q.astype(np.int8)                        # low byte, two's complement wrap
        codes_hi = ((q - codes) >> 8).astype(np.int8)    # exact: q - codes is a multiple of 256
        return {"scale": scale, "codes": codes, "codes_hi": codes_hi}

    def decode(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        codes, codes_hi = self._get(parts, "codes"), self._get(parts, "codes_hi")
        scale = self._get(parts, "scale")
        *lead, t, d = codes.shape
        q = codes.astype(np.float32)
        if codes_hi.any():
            q += np.float32(256.0) * codes_hi
        h, w = grid_shape(t)
        y = q.reshape(*lead, h, w, d)
        haar_inverse(y, -2, self.levels)
        haar_inverse(y, -3, self.levels)
        y = y.reshape(*lead, t, d)
        y *= scale.astype(np.float32)[..., None] * np.float32(self.alpha)
        return y

    def _forward(self, r: np.ndarray, t: int, d: int) -> np.ndarray:
        """Y = Hh @ r @ Hw.T along the (h, w) token grid, per channel; r [..., T, D] (overwritten)."""
        h, w = grid_shape(t)
        y = r.reshape(*r.shape[:-2], h, w, d)
        haar_forward(y, -3, self.levels)
        haar_forward(y, -2, self.levels)
        return y.reshape(r.shape)

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        return {"scale": (np.dtype(np.float16), (tokens,)), "codes": (np.dtype(np.int8), (tokens, dim)),
                "codes_hi": (np.dtype(np.int8), (tokens, dim))}

    @property
    def tolerance(self) -> float:
        """1 - alpha**2/20: the white-noise prediction 1 - alpha**2/24 with a 20 % margin."""
        return 1.0 - self.alpha ** 2 / 20.0

    @property
    def bytes_hint(self) -> float:
        """Fit to DINOv2-S features (compact 0.46, tiny 0.27): ~0.15 - 0.109 * log2(alpha)."""
        return max(0.02, 0.15 - 0.109 * math.log2(self.alpha))


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

CODECS: dict[str, Codec] = {
    "fp16": Float16Codec("fp16"),
    "int8": TokenIntCodec("int8", bits=8),
    "int6": TokenIntCodec("int6", bits=6),
    "int4": TokenIntCodec("int4", bits=4),
    "compact": HaarCodec("compact", alpha=0.14, levels=4),
    "tiny": HaarCodec("tiny", alpha=0.44, levels=4),
}


def get_codec(name: str) -> Codec:
    """The default codec called ``name``; unknown names raise ValueError listing the valid ones."""
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown codec {name!r}; valid codecs: {', '.join(CODECS)}") from None


# --------------------------------------------------------------------------------------------
# storage helpers
# --------------------------------------------------------------------------------------------


def zarr_compressors(level: int = 3) -> list:
    """The store's zarr 3 codec chain: zstd, then a crc32c of the compressed chunk.

    Use as ``group.create_array(name, shape=..., chunks=..., dtype=..., compressors=zarr_compressors())``.
    """
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=level), Crc32cCodec()]


def stored_nbytes(parts: Mapping[str, np.ndarray], chunks_views: int = 8, level: int = 3) -> int:
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
