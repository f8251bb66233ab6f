"""Fast reads of single inner chunks from the store's sharded arrays, local or on object storage.

The trainer reads one (image, view) of a teacher's summary and patch arrays per sample, and wants
the stored codec components (to decode them on its device), not zarr's decoded float32. Through
zarr-python each read would also cost ~1 ms of event-loop round trips on a 2-core machine, about
5x the actual work. For the exact layout the store writes (zarr v3 ``sharding_indexed``, index at
the end with a crc32c, inner chunks ``eupe.features -> zstd -> crc32c``, one view's components
packed together: :mod:`eupe.store.zarr_codecs`) this module reads the shard index and the one
inner chunk directly, verifying both checksums, decompresses it with numcodecs' zstd into a fresh
(writable) buffer and returns the components as views of it. On object storage
(:class:`RemoteShardReader`) the same bytes come as range requests through the zarr store, both
arrays of a sample in one concurrent batch. :func:`write_shard` writes a shard of already-encoded
components in the same format (what zarr reads back as the decoded features). Other layouts are
refused with ``Unsupported``.

System calls: shard files stay open in a per-process LRU of file descriptors (:class:`OpenShards`,
bounded by ``RLIMIT_NOFILE``) and each shard's index is parsed once and kept in a bounded LRU, so
a read of a shard already seen is one ``os.pread`` per component: no ``stat``, no ``open``, no
``seek``. A first read of a shard costs ``open`` + ``fstat`` + ``pread`` (index) + ``pread``.
Nothing re-stats the file per read: whether a shard is the one its chunk's manifest recorded is
checked once per chunk and process by ``TeacherGroup.checks.require_chunk``; a process that rewrites a
chunk it has read calls :meth:`ShardedArrayReader.forget` (zarr replaces shard files by rename, so
an open descriptor would keep showing the old, self-consistent file). Descriptors are read with
``pread`` only (no file offset), so DataLoader workers forked with inherited ones are safe.
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict
from pathlib import Path

import crc32c
import numpy as np
import zarr
from numcodecs import Zstd
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from eupe.store.layout import StoreIntegrityError
from eupe.store.zarr_codecs import ZARR_CODEC_ID, FeatureCodec, Layout, pack, packed_nbytes, unpack

_MISSING = 2**64 - 1  # offset/nbytes of an inner chunk that was never written
_ZSTD = Zstd()
INDEX_CACHE = 4096  # shard indexes a reader keeps (each [per_shard, 2] uint64: 1 KB for 16 images x 4 views)


class Unsupported(ValueError):
    """The array is not a local sharded array in the store's layout."""


def _sharding_config(array: zarr.Array) -> dict:
    codecs = array.metadata.to_dict()["codecs"]
    if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
        raise Unsupported("not a sharded array")
    config = codecs[0]["configuration"]
    inner = [c["name"] for c in config["codecs"]]
    index = [c["name"] for c in config["index_codecs"]]
    if inner != [ZARR_CODEC_ID, "zstd", "crc32c"] or index != ["bytes", "crc32c"] or config["index_location"] != "end":
        raise Unsupported(f"unsupported shard codecs {inner} / {index}")
    return config


def _checked(blob: bytes, what: str) -> memoryview:
    """The blob without its trailing little-endian crc32c, verified (a view: no copy)."""
    body = memoryview(blob)[:-4]
    if len(blob) < 4 or crc32c.crc32c(body) != int.from_bytes(blob[-4:], "little"):
        raise StoreIntegrityError(f"checksum mismatch in {what}: the file was altered; run `eupe-cache verify` "
                                  "and re-extract into a new store")
    return body


def _default_capacity() -> int:
    """Descriptors the process may keep open: a quarter of the soft RLIMIT_NOFILE, at most 4096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(8, min(4096, (soft if soft != resource.RLIM_INFINITY else 4096) // 4))


class OpenShards:
    """A bounded LRU of read-only file descriptors, keyed by path (one per process).

    A shard file replaced since it was opened (a chunk re-extracted, a store re-written by another
    process) is reopened: a cached descriptor is used only while the path still names its file."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity or _default_capacity()
        self._fds: OrderedDict[Path, tuple[int, tuple[int, int]]] = OrderedDict()  # path -> (fd, (dev, ino))
        self.opened = 0  # files opened so far (the benchmark reports it)

    def get(self, path: Path) -> int:
        """An open descriptor of ``path`` (FileNotFoundError when it does not exist)."""
        held = self._fds.get(path)
        if held is not None:
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == held[1]:
                self._fds.move_to_end(path)
                return held[0]
            self.close(path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        opened = os.fstat(fd)
        self.opened += 1
        self._fds[path] = (fd, (opened.st_dev, opened.st_ino))
        while len(self._fds) > self.capacity:
            os.close(self._fds.popitem(last=False)[1][0])
        return fd

    def source(self, path: Path) -> tuple[int, int] | None:
        """(device, inode) of the file held open for ``path`` (None when none is)."""
        held = self._fds.get(path)
        return None if held is None else held[1]

    def close(self, path: Path) -> None:
        held = self._fds.pop(path, None)
        if held is not None:
            os.close(held[0])

    def clear(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1][0])


OPEN_SHARDS = OpenShards()


class _ShardLayout:
    """The store's sharded layout of one array: shards of [images, K, ...], one inner chunk per (image, view)."""

    def __init__(self, array: zarr.Array) -> None:
        config = _sharding_config(array)
        self.array = array
        self.feature_codec = FeatureCodec.from_dict(config["codecs"][0])
        self.layout: Layout = self.feature_codec.layout
        self.packed = packed_nbytes(self.layout)
        self.level = int(config["codecs"][1].get("configuration", {}).get("level", 0))
        self.inner = tuple(config["chunk_shape"])
        self.shard = tuple(array.metadata.chunk_grid.chunk_shape)
        if self.inner[:2] != (1, 1) or self.inner[2:] != tuple(array.shape[2:]):
            raise Unsupported(f"inner chunks {self.inner} are not one (image, view)")
        self.per_shard = self.shard[0] * self.shard[1]  # inner chunks in a shard, C order
        self.index_bytes = self.per_shard * 16 + 4  # [per_shard, 2] uint64 (offset, nbytes) + crc32c
        self._index: OrderedDict[int, np.ndarray] = OrderedDict()

    def _chunk_key(self, shard: int) -> str:
        return self.array.metadata.encode_chunk_key((shard,) + (0,) * (len(self.shard) - 1))

    def _cached_index(self, shard: int, source: object = None) -> np.ndarray | None:
        """The parsed index of ``shard`` if it was read from ``source`` (the file it is in now)."""
        held = self._index.get(shard)
        if held is None or held[0] != source:
            return None
        self._index.move_to_end(shard)
        return held[1]

    def _keep_index(self, shard: int, blob: bytes, what: str, source: object = None) -> np.ndarray:
        table = np.frombuffer(_checked(blob, f"shard index of {what}"), dtype="<u8").reshape(-1, 2)
        self._index[shard] = (source, table)
        if len(self._index) > INDEX_CACHE:
            self._index.popitem(last=False)
        return table

    def _decode(self, body: memoryview) -> dict[str, np.ndarray]:
        """An inner chunk's zstd frame -> one view's components (views of a fresh, writable buffer)."""
        out = np.empty(self.packed, dtype=np.uint8)
        _ZSTD.decode(body, out=out)
        return unpack(out, self.layout)

    def encode_shard(self, parts: dict[str, np.ndarray]) -> bytes:
        """A shard file of components ``{name: [C, K, *suffix]}`` (C <= images per shard): the inner
        chunks ``crc32c(zstd(pack(view)))`` in C order, then the index ``[per_shard, 2]`` uint64
        (offset, nbytes; unwritten: 2**64-1) and its crc32c, as zarr's sharding codec writes them."""
        zstd = Zstd(level=self.level)
        c, k = next(iter(parts.values())).shape[:2]
        if k != self.shard[1] or c > self.shard[0]:
            raise ValueError(f"components of {c} images x {k} views do not fit shards of {self.shard[:2]}")
        table = np.full((self.per_shard, 2), _MISSING, dtype="<u8")
        blobs, offset = [], 0
        for i in range(c):
            for v in range(k):
                frame = zstd.encode(pack({n: p[i, v] for n, p in parts.items()}, self.layout))
                blob = bytes(frame) + crc32c.crc32c(frame).to_bytes(4, "little")
                table[i * k + v] = (offset, len(blob))
                blobs.append(blob)
                offset += len(blob)
        index = table.tobytes()
        return b"".join(blobs) + index + crc32c.crc32c(index).to_bytes(4, "little")


class ShardedArrayReader(_ShardLayout):
    """Reads ``array[i, j]`` (one inner chunk of shape ``[1, 1, *rest]``) straight from disk."""

    def __init__(self, array: zarr.Array, files: OpenShards | None = None) -> None:
        root = getattr(array.store, "root", None)
        if root is None:
            raise Unsupported("not a local store")
        super().__init__(array)
        self.base = Path(root) / array.path
        self.files = files or OPEN_SHARDS

    def _shard_path(self, shard: int) -> Path:
        return self.base / self._chunk_key(shard)

    def _open(self, shard: int, row: int, view: int) -> tuple[int, np.ndarray, Path]:
        """(descriptor, [per_shard, 2] (offset, nbytes) index, path) of a shard; index parsed once."""
        path = self._shard_path(shard)
        try:
            fd = self.files.get(path)
        except FileNotFoundError:
            raise StoreIntegrityError(f"{path} is missing (image {row}, view {view})") from None
        source = self.files.source(path)  # a replaced file has another index
        table = self._cached_index(shard, source)
        if table is None:
            nbytes, size = self.index_bytes, os.fstat(fd).st_size
            table = self._keep_index(shard, os.pread(fd, nbytes, size - nbytes) if size >= nbytes else b"", str(path),
                                     source)
        return fd, table, path

    def read_blob(self, row: int, view: int) -> memoryview:
        """The zstd frame of (row, view) as stored, its crc32c verified (one ``pread``; no decompression)."""
        shard, i = divmod(row, self.shard[0])
        fd, table, path = self._open(shard, row, view)
        offset, nbytes = (int(v) for v in table[i * self.shard[1] + view])
        if offset == _MISSING:
            raise StoreIntegrityError(f"{path} holds no data for image {row}, view {view}")
        blob = os.pread(fd, nbytes, offset)
        if len(blob) != nbytes:
            raise StoreIntegrityError(f"{path} is truncated (image {row}, view {view})")
        return _checked(blob, f"chunk ({row}, {view}) of {path}")

    def read(self, row: int, view: int) -> dict[str, np.ndarray]:
        """The components of (row, view), checked and decompressed (fresh, writable arrays)."""
        return self._decode(self.read_blob(row, view))

    def forget(self, shard: int | None = None) -> None:
        """Drop the cached index and descriptor of one shard (all when None): after rewriting it."""
        shards = list(self._index) if shard is None else [shard]
        for s in shards:
            self._index.pop(s, None)
            self.files.close(self._shard_path(s))


class RemoteShardReader(_ShardLayout):
    """The same direct reads on object storage, as byte-range requests through the zarr store (its
    client, its event loop, a fresh client in forked workers): a shard's index is fetched once (a
    suffix range, checksum verified, kept); :func:`read_components` then fetches every component of
    a sample in one batch of concurrent range requests, against the 2 sequential requests per
    component (index + chunk) of zarr's general path."""

    def __init__(self, array: zarr.Array) -> None:
        super().__init__(array)
        self.store = array.store
        self.prefix = array.path

    def _key(self, shard: int) -> str:
        return f"{self.prefix}/{self._chunk_key(shard)}"

    def locate(self, row: int, view: int) -> tuple[str, int, int]:
        """(object key, offset, nbytes) of the inner chunk of (row, view); fetches the index once."""
        shard, i = divmod(row, self.shard[0])
        key = self._key(shard)
        table = self._cached_index(shard)
        if table is None:
            blob = sync(self.store.get(key, default_buffer_prototype(), SuffixByteRequest(self.index_bytes)))
            if blob is None:
                raise StoreIntegrityError(f"{key} is missing (image {row}, view {view})")
            table = self._keep_index(shard, blob.to_bytes(), key)
        offset, nbytes = (int(v) for v in table[i * self.shard[1] + view])
        if offset == _MISSING:
            raise StoreIntegrityError(f"{key} holds no data for image {row}, view {view}")
        return key, offset, nbytes

    def decode(self, blob, where: tuple[str, int, int], row: int, view: int) -> dict[str, np.ndarray]:
        """A fetched inner chunk (zarr Buffer or None), length and checksum verified, decoded."""
        key, _, nbytes = where
        data = None if blob is None else blob.to_bytes()
        if data is None or len(data) != nbytes:
            raise StoreIntegrityError(f"{key} is truncated or missing (image {row}, view {view})")
        return self._decode(_checked(data, f"chunk ({row}, {view}) of {key}"))

    def read(self, row: int, view: int) -> dict[str, np.ndarray]:
        return read_components({"": self}, row, view)[""]

    def forget(self, shard: int | None = None) -> None:
        for s in list(self._index) if shard is None else [shard]:
            self._index.pop(s, None)


Reader = ShardedArrayReader | RemoteShardReader


def read_components(readers: dict[str, Reader], row: int, view: int) -> dict[str, dict[str, np.ndarray]]:
    """{kind: {component: array}} of one (row, view), one reader per kind (e.g. summary, patch):
    local readers pread each inner chunk; remote ones fetch all of them in one concurrent batch."""
    if not all(isinstance(reader, RemoteShardReader) for reader in readers.values()):
        return {kind: reader.read(row, view) for kind, reader in readers.items()}
    flat = list(readers.items())
    spots = [reader.locate(row, view) for _, reader in flat]
    requests = [(key, RangeByteRequest(offset, offset + nbytes)) for key, offset, nbytes in spots]
    blobs = sync(flat[0][1].store.get_partial_values(default_buffer_prototype(), requests))
    return {kind: reader.decode(blob, spot, row, view) for (kind, reader), spot, blob in zip(flat, spots, blobs)}


def write_shard(array: zarr.Array, shard: int, parts: dict[str, np.ndarray]) -> None:
    """Write shard ``shard`` (chunk of images) of a target array from already-encoded components
    ``{name: [C, K, *suffix]}`` through the array's store (local file or object), replacing it."""
    layout = _ShardLayout(array)
    key = f"{array.path}/{layout._chunk_key(shard)}"
    sync(array.store.set(key, default_buffer_prototype().buffer.from_bytes(layout.encode_shard(parts))))


def reader_for(array: zarr.Array) -> Reader:
    """The direct reader of a target array: ``pread`` on a local store, range requests on any other
    zarr store (object storage, memory); ``Unsupported`` when the array is not in the store's layout."""
    if getattr(array.store, "root", None) is not None:
        return ShardedArrayReader(array)
    return RemoteShardReader(array)
