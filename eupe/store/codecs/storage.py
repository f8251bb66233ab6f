"""How codec components are stored: the zarr 3 bytes codec chain and the bytes it takes.

A store keeps one view's components packed in one inner chunk of a float32 zarr array, whose
``eupe.features`` zarr codec (:mod:`eupe.store.zarr_codecs`) decodes them with
:meth:`~eupe.store.codecs.base.Codec.decode`.  :func:`zarr_compressors` is the exact zarr 3 bytes
codec chain after it (``[ZstdCodec(level=TARGET_ZSTD_LEVEL), Crc32cCodec()]``, level 1; a flipped
byte fails the crc32c check on read with ``ValueError: Stored and computed checksum do not
match``); :func:`stored_nbytes` measures the bytes a dict of components takes in it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from eupe.store.layout import TARGET_ZSTD_LEVEL, compressors


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
