"""The store's codecs as a zarr v3 codec: plain ``zarr`` reads cached targets as float32 features.

A target array of a store (format 3) holds float32 features, ``[N, K, D]`` summary vectors or
``[N, K, h, w, D]`` patch tokens, and its chunk codec chain is::

    sharding_indexed(chunk (1, 1, *view), codecs [eupe.features, zstd, crc32c], index [bytes, crc32c])

``eupe.features`` (:class:`FeatureCodec`, registered with zarr through the ``zarr.codecs`` entry
point of this package) is an array -> bytes codec: one view's codec components (e.g. ``compact``'s
``chscale``, ``scale``, ``codes``, ``codes_hi``; :mod:`eupe.store.codecs` documents every formula)
are stored *together* in one inner chunk, so a sample stays one read, and decoding is
:meth:`eupe.store.codecs.base.Codec.decode` -- the same call, the same bits, as ``FeatureStore``.

Packed inner chunk (before zstd): the components in the order of the configuration's
``components`` list, each its little-endian C-order bytes, back to back, no header; the list
(``[name, dtype, shape]``, wider dtypes first so every component is aligned) and the codec's
parameters (``codec``: name, family, version, ...) are in the array's ``zarr.json``::

    {"name": "eupe.features", "configuration": {"codec": {"name": "compact", ...},
     "view_shape": [16, 16, 384], "components": [["chscale", "float16", [1, 384]], ...]}}

Without this package installed, zarr refuses the array with
``UnknownCodecError: Unknown codec: 'eupe.features'`` (``pip install eupe`` provides it).
What plain zarr checks: each inner chunk's and each shard index's crc32c (a flipped byte raises
``ValueError: Stored and computed checksum do not match``). What it cannot check: the store's
manifest (a chunk that is not complete reads as NaN, the fill value; a file moved, swapped or
copied from another store reads as valid data) -- read through ``FeatureStore`` for that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from eupe.store.codecs.base import Codec
from eupe.store.codecs.registry import codec_from_dict

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

ZARR_CODEC_ID = "eupe.features"  # the codec name in zarr.json (and of the zarr.codecs entry point)

Layout = tuple[tuple[str, str, tuple[int, ...]], ...]  # (component, little-endian dtype, per-view shape)


def view_layout(codec: Codec, view_shape: tuple[int, ...]) -> Layout:
    """Packing order of one view's components: ``view_shape`` is ``(D,)`` (a summary vector) or
    ``(h, w, D)`` (patch tokens, ``T = h*w``); wider dtypes first, then by name."""
    if len(view_shape) == 1:
        specs = codec.vector_components(view_shape[0])
    elif len(view_shape) == 3:
        specs = codec.components(view_shape[0] * view_shape[1], view_shape[2])
    else:
        raise ValueError(f"a view is (D,) or (h, w, D), got {view_shape}")
    items = sorted(specs.items(), key=lambda kv: (-np.dtype(kv[1][0]).itemsize, kv[0]))
    return tuple((name, np.dtype(dt).newbyteorder("<").str, tuple(int(s) for s in suffix))
                 for name, (dt, suffix) in items)


def packed_nbytes(layout: Layout) -> int:
    """Bytes of one packed view."""
    return sum(np.dtype(dt).itemsize * int(np.prod(shape)) for _, dt, shape in layout)


def pack(parts: Mapping[str, np.ndarray], layout: Layout) -> bytes:
    """One view's components (each exactly its ``layout`` shape) -> packed bytes."""
    out = []
    for name, dt, shape in layout:
        a = np.asarray(parts[name])
        if a.shape != shape:
            raise ValueError(f"component {name!r} has shape {a.shape}, the layout says {shape}")
        out.append(np.ascontiguousarray(a, dtype=dt).tobytes())
    return b"".join(out)


def unpack(data: Any, layout: Layout) -> dict[str, np.ndarray]:
    """Packed bytes (any buffer; a writable one gives writable arrays) -> ``{name: array}`` views."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != packed_nbytes(layout):
        raise ValueError(f"a packed view has {raw.size} bytes, its layout needs {packed_nbytes(layout)}")
    parts, offset = {}, 0
    for name, dt, shape in layout:
        n = np.dtype(dt).itemsize * int(np.prod(shape))
        parts[name] = raw[offset:offset + n].view(dt).reshape(shape)
        offset += n
    return parts


def decode_view(codec: Codec, parts: Mapping[str, np.ndarray], view_shape: tuple[int, ...]) -> np.ndarray:
    """One view's components -> float32 ``view_shape`` (exactly ``TeacherGroup.reader.decode``'s formula)."""
    if len(view_shape) == 1:
        return codec.decode_vector(parts)
    return codec.decode(parts).reshape(view_shape)  # [T, D] -> [h, w, D]


def encode_view(codec: Codec, x: np.ndarray) -> dict[str, np.ndarray]:
    """float32 ``(D,)`` or ``(h, w, D)`` -> one view's components (numpy ``Codec.encode``)."""
    if x.ndim == 1:
        return codec.encode_vector(x)
    return codec.encode(x.reshape(-1, x.shape[-1]))  # [h, w, D] -> [T, D]


@dataclass(frozen=True)
class FeatureCodec(ArrayBytesCodec):
    """zarr v3 array -> bytes codec ``eupe.features``: an inner chunk ``(1, 1, *view_shape)`` of
    float32 features <-> one view's packed codec components (module docstring)."""

    codec: Codec
    view_shape: tuple[int, ...]
    is_fixed_size = False

    def __init__(self, *, codec: Codec | Mapping[str, Any], view_shape: Any) -> None:
        object.__setattr__(self, "codec", codec if isinstance(codec, Codec) else codec_from_dict(codec))
        object.__setattr__(self, "view_shape", tuple(int(s) for s in view_shape))
        object.__setattr__(self, "_layout", view_layout(self.codec, self.view_shape))

    @property
    def layout(self) -> Layout:
        return self._layout  # type: ignore[attr-defined]

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureCodec":
        _, config = parse_named_configuration(data, ZARR_CODEC_ID)
        codec = cls(codec=config["codec"], view_shape=config["view_shape"])
        stored = [(n, np.dtype(dt).newbyteorder("<").str, tuple(s)) for n, dt, s in config.get("components", [])]
        if tuple(stored) != codec.layout:
            raise ValueError(f"{ZARR_CODEC_ID}: stored component layout {stored} differs from codec "
                             f"{codec.codec.name!r}'s {list(codec.layout)}; the zarr.json was edited")
        return codec

    def to_dict(self) -> dict:
        components = [[n, np.dtype(dt).name, list(s)] for n, dt, s in self.layout]
        return {"name": ZARR_CODEC_ID, "configuration": {
            "codec": self.codec.to_dict(), "view_shape": list(self.view_shape), "components": components}}

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        native = dtype.to_native_dtype() if hasattr(dtype, "to_native_dtype") else np.dtype(dtype)
        if np.dtype(native) != np.float32:
            raise ValueError(f"{ZARR_CODEC_ID} stores float32 features, not {native}")
        chunks = tuple(getattr(chunk_grid, "chunk_shape", ()))
        if chunks and chunks != (1, 1, *self.view_shape):
            raise ValueError(f"{ZARR_CODEC_ID}: chunks must be one view (1, 1, *{self.view_shape}), got {chunks}")

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: "ArraySpec") -> int:
        raise NotImplementedError  # variable size: depends on the codec's components

    async def _decode_single(self, chunk_bytes: "Buffer", chunk_spec: "ArraySpec") -> "NDBuffer":
        parts = unpack(chunk_bytes.as_numpy_array(), self.layout)
        x = decode_view(self.codec, parts, self.view_shape)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(x.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: "NDBuffer", chunk_spec: "ArraySpec") -> "Buffer | None":
        x = np.asarray(chunk_array.as_numpy_array(), dtype=np.float32).reshape(self.view_shape)
        data = pack(encode_view(self.codec, x), self.layout)
        return chunk_spec.prototype.buffer.from_bytes(data)
