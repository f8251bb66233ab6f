"""Fast reads of single inner chunks from the store's sharded local arrays.

The trainer reads one (image, view) of several small component arrays per sample. Through
zarr-python each such read costs ~1 ms of event-loop round trips on a 2-core machine, about
5x the actual work. For the exact layout the store writes (zarr v3 ``sharding_indexed``, index
at the end with a crc32c, inner chunks ``bytes -> zstd -> crc32c``) this module reads the shard
index and the one inner chunk directly, verifying both checksums, and decompresses with
numcodecs' zstd. Anything else (remote stores, other layouts) is refused with
``Unsupported`` and callers fall back to zarr; tests check both paths return identical arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

import crc32c
import numpy as np
import zarr
from numcodecs import Zstd

from eupe.store.layout import StoreIntegrityError

_MISSING = 2**64 - 1  # offset/nbytes of an inner chunk that was never written
_ZSTD = Zstd()


class Unsupported(ValueError):
    """The array is not a local sharded array in the store's layout."""


def _sharding_config(array: zarr.Array) -> dict:
    codecs = array.metadata.to_dict()["codecs"]
    if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
        raise Unsupported("not a sharded array")
    config = codecs[0]["configuration"]
    inner = [c["name"] for c in config["codecs"]]
    index = [c["name"] for c in config["index_codecs"]]
    if inner != ["bytes", "zstd", "crc32c"] or index != ["bytes", "crc32c"] or config["index_location"] != "end":
        raise Unsupported(f"unsupported shard codecs {inner} / {index}")
    endian = config["codecs"][0].get("configuration", {}).get("endian", "little")
    if endian != "little":
        raise Unsupported("big-endian chunks")
    return config


def _checked(blob: bytes, what: str) -> bytes:
    """Strip and verify the trailing little-endian crc32c of a blob."""
    body, stored = blob[:-4], int.from_bytes(blob[-4:], "little")
    if crc32c.crc32c(body) != stored:
        raise ValueError(f"checksum mismatch in {what}")
    return body


class ShardedArrayReader:
    """Reads ``array[i, j]`` (one inner chunk of shape ``[1, 1, *rest]``) straight from disk."""

    def __init__(self, array: zarr.Array) -> None:
        root = getattr(array.store, "root", None)
        if root is None:
            raise Unsupported("not a local store")
        config = _sharding_config(array)
        self.array = array
        self.base = Path(root) / array.path
        self.inner = tuple(config["chunk_shape"])
        self.shard = tuple(array.metadata.chunk_grid.chunk_shape)
        if self.inner[:2] != (1, 1) or self.inner[2:] != tuple(array.shape[2:]):
            raise Unsupported(f"inner chunks {self.inner} are not one (image, view)")
        self.per_shard = self.shard[0] * self.shard[1]  # inner chunks in a shard, C order
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self._index: dict[int, tuple[tuple[int, int], np.ndarray]] = {}

    def _shard_path(self, shard: int) -> Path:
        coords = (shard,) + (0,) * (len(self.shard) - 1)
        return self.base / self.array.metadata.encode_chunk_key(coords)

    def _shard_index(self, shard: int, path: Path) -> np.ndarray | None:
        """[per_shard, 2] (offset, nbytes), cached per shard file version."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        version = (stat.st_mtime_ns, stat.st_size)
        cached = self._index.get(shard)
        if cached is None or cached[0] != version:
            nbytes = self.per_shard * 16 + 4
            with open(path, "rb") as handle:
                handle.seek(-nbytes, os.SEEK_END)
                blob = handle.read(nbytes)
            table = np.frombuffer(_checked(blob, f"shard index of {path}"), dtype="<u8").reshape(-1, 2)
            self._index[shard] = cached = (version, table)
        return cached[1]

    def read(self, row: int, view: int) -> np.ndarray:
        """The inner chunk of (row, view) without its two leading unit axes."""
        shard = row // self.shard[0]
        path = self._shard_path(shard)
        table = self._shard_index(shard, path)
        if table is None:
            raise StoreIntegrityError(f"{path} is missing (image {row}, view {view})")
        offset, nbytes = table[(row % self.shard[0]) * self.shard[1] + view]
        if offset == _MISSING:
            raise StoreIntegrityError(f"{path} holds no data for image {row}, view {view}")
        with open(path, "rb") as handle:
            handle.seek(int(offset))
            blob = handle.read(int(nbytes))
        raw = _ZSTD.decode(_checked(blob, f"chunk ({row}, {view}) of {path}"))
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.inner[2:])


def reader_or_none(array: zarr.Array) -> ShardedArrayReader | None:
    """A fast reader when the array's layout allows it, else None (use zarr)."""
    try:
        return ShardedArrayReader(array)
    except Unsupported:
        return None
