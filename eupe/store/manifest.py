"""Per-chunk manifests: which files make up a finished chunk of images, and their checksums.

Every array of a teacher group is chunked along the image axis the same way, so chunk ``c`` of
images is one file per array. When a chunk has been written and flushed, its writer records, per
array, ``(bytes, digest, index digest)`` as row ``c`` of the teacher's ``manifest`` array; that row
is the chunk's completion record (a chunk without it is not done). Both digests are crc32c over a
*binding* -- the group's identity fingerprint, the array's path and the chunk index -- followed by
the bytes, so a file moved to another chunk or array, or a store whose attributes were edited,
no longer matches. ``digest`` covers the whole file; ``index digest`` covers only the trailing
shard index of a sharded array (the part every read already loads), so readers can check each
file they open at the cost of a ``stat`` (the whole-file digest is ``verify``'s job).

These are checksums against accidents (lost, truncated, swapped, edited files), not signatures.
"""

from __future__ import annotations

import math
from pathlib import Path

import crc32c
import numpy as np
import zarr

SIZE, DIGEST, INDEX_DIGEST = 0, 1, 2
ROW_FIELDS = 3


def chunk_key(array: zarr.Array, chunk: int) -> str:
    """Store key of chunk ``chunk`` (along the image axis) of ``array``."""
    coords = (chunk,) + (0,) * (array.ndim - 1)
    return f"{array.path}/{array.metadata.encode_chunk_key(coords)}"


def local_path(array: zarr.Array, chunk: int) -> Path | None:
    """The chunk's file on local disk, None for remote stores."""
    root = getattr(array.store, "root", None)
    return None if root is None else Path(root) / chunk_key(array, chunk)


def index_nbytes(array: zarr.Array) -> int:
    """Bytes of the trailing shard index of a sharded array (0 when not sharded)."""
    if array.shards is None:
        return 0
    inner = math.prod(s // c for s, c in zip(array.shards, array.chunks))
    return inner * 16 + 4


def read_chunk_file(array: zarr.Array, chunk: int, tail: int = 0) -> bytes | None:
    """Whole chunk file (or its last ``tail`` bytes); None when the file does not exist."""
    path = local_path(array, chunk)
    if path is not None:
        try:
            with open(path, "rb") as handle:
                if tail:
                    handle.seek(max(0, path.stat().st_size - tail))
                return handle.read()
        except FileNotFoundError:
            return None
    return _read_remote(array, chunk, tail)


def _read_remote(array: zarr.Array, chunk: int, tail: int) -> bytes | None:
    from zarr.abc.store import SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    request = SuffixByteRequest(tail) if tail else None
    buffer = sync(array.store.get(chunk_key(array, chunk), default_buffer_prototype(), request))
    return None if buffer is None else buffer.to_bytes()


def chunk_file_size(array: zarr.Array, chunk: int) -> int | None:
    path = local_path(array, chunk)
    if path is not None:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None
    from zarr.core.sync import sync

    return sync(array.store.getsize(chunk_key(array, chunk))) if sync(array.store.exists(chunk_key(array, chunk))) else None


def _crc(binding: str, data: bytes) -> int:
    return crc32c.crc32c(data, crc32c.crc32c(binding.encode()))


def binding(fingerprint: str, name: str, chunk: int) -> str:
    return f"{fingerprint}:{name}:{chunk}"


def record(array: zarr.Array, name: str, chunk: int, fingerprint: str) -> np.ndarray:
    """``[bytes, digest, index digest]`` uint64 of a chunk file that was just written."""
    data = read_chunk_file(array, chunk)
    if data is None:
        raise FileNotFoundError(f"{chunk_key(array, chunk)} was not written")
    bind = binding(fingerprint, name, chunk)
    tail = index_nbytes(array)
    index = _crc(bind, data[-tail:]) if tail else _crc(bind, data)
    return np.array([len(data), _crc(bind, data), index], dtype=np.uint64)


def _problem(size: int | None, data: bytes | None, crc_field: int, expected: np.ndarray, bind: str) -> str | None:
    """What is wrong with a chunk file of ``size`` bytes whose checked part is ``data``, or None."""
    if size is None or data is None:
        return "file is missing"
    if size != int(expected[SIZE]):
        return f"file has {size} bytes, {int(expected[SIZE])} were written"
    if _crc(bind, data) != int(expected[crc_field]):
        return "checksum differs from the one recorded when it was written (moved, swapped or altered)"
    return None


def check_quick(array: zarr.Array, name: str, chunk: int, expected: np.ndarray, fingerprint: str) -> str | None:
    """Cheap check before reading a chunk: the file exists, has the recorded size and index digest.

    Returns what is wrong, or None. Unsharded arrays (small) are checked in full.
    """
    size = chunk_file_size(array, chunk)
    tail = index_nbytes(array)
    data = None if size is None else read_chunk_file(array, chunk, tail)
    return _problem(size, data, INDEX_DIGEST if tail else DIGEST, expected, binding(fingerprint, name, chunk))


def check_full(array: zarr.Array, name: str, chunk: int, expected: np.ndarray, fingerprint: str) -> str | None:
    """Whole-file check (``verify``): missing, resized, moved or altered files are reported."""
    data = read_chunk_file(array, chunk)
    return _problem(None if data is None else len(data), data, DIGEST, expected, binding(fingerprint, name, chunk))
