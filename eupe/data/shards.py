"""Random access to images stored in webdataset tar shards.

The feature extractor splits a dataset into fixed groups of consecutive images
("chunks") that different processes may process, kill and resume.  To make that
possible every image must be addressable by its row number without streaming
whole shards.  This module

* expands shard patterns (``"train-{000000..000099}.tar"``, ``"a.tar::b.tar"``),
* indexes shards by reading tar headers only (:func:`index_shards`), giving one
  row per image in shard order then member order, with the byte offset and size
  of the image data inside its tar,
* reads single members back by offset (:func:`read_member`, :class:`ShardReader`),
  from local files or any fsspec URL,
* writes genuine webdataset shards for tests and demos (:func:`write_shards`).

Keys and grouping follow webdataset's own rules, so the index yields the same
samples in the same order as ``webdataset.WebDataset(urls, shardshuffle=False)``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from typing import IO, Iterable, Iterator, Sequence

import fsspec
import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "ShardFailure",
    "ShardIndex",
    "ShardReader",
    "check_regular",
    "expand_shards",
    "index_shards",
    "read_member",
    "shard_fingerprint",
    "write_shards",
]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm")

# Members webdataset itself skips (``__key__``-style metadata), see tariterators.
_SKIP_META = re.compile(r"__[^/]*__($|/)")
_BLOCK = tarfile.BLOCKSIZE


# --------------------------------------------------------------------------- patterns


def _is_url(shard: str) -> bool:
    return "://" in shard


def _normalise(shard: str) -> str:
    return shard if _is_url(shard) else os.path.abspath(os.path.expanduser(shard))


def expand_shards(pattern: str | Sequence[str]) -> list[str]:
    """Expand a shard pattern (braces, ``::`` lists, plain lists) to a list of shards.

    Local paths become absolute, URLs (anything containing ``://``) are unchanged.
    A local path that does not exist is not an error here (indexing records it).
    """
    parts = [pattern] if isinstance(pattern, str) else list(pattern)
    from webdataset.shardlists import expand_urls  # imported here: webdataset imports torch (~1 s)

    shards = [_normalise(s) for part in parts for s in expand_urls(str(part)) if s.strip()]
    if not shards:
        raise DatasetError(f"shard pattern {pattern!r} expands to no shards")
    return shards


# --------------------------------------------------------------------------- index


class DatasetError(ValueError):
    """The dataset cannot be used as given (duplicate keys, no images...); the message says why."""



@dataclass(frozen=True)
class ShardFailure:
    """A shard that could not be indexed, and why."""

    shard: str
    reason: str


@dataclass(kw_only=True)
class ShardIndex:
    """Columnar index: one row per image, in shard order then member order."""

    shards: list[str]
    keys: np.ndarray | None  # None: an index for reading bytes back only (FeatureStore.shard_index(keys=False))
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    ext: np.ndarray
    label: np.ndarray
    failures: list[ShardFailure] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"shard", "key", "reason"}: samples with no usable image

    def __len__(self) -> int:
        return int(len(self.shard))

    def head(self, limit: int | None) -> "ShardIndex":
        """The first ``limit`` images (all when limit is None)."""
        if limit is None or limit >= len(self):
            return self
        keys = None if self.keys is None else self.keys[:limit]
        return ShardIndex(shards=self.shards, keys=keys, shard=self.shard[:limit], offset=self.offset[:limit],
                          size=self.size[:limit], ext=self.ext[:limit], label=self.label[:limit],
                          failures=self.failures, skipped=self.skipped)

    def keys_sha256(self) -> str:
        """SHA-256 of the keys joined by newlines: the identity of the dataset."""
        if self.keys is None:
            raise ValueError("this index was loaded without its keys (shard_index(keys=False))")
        return hashlib.sha256("\n".join(str(k) for k in self.keys).encode("utf-8")).hexdigest()


@dataclass
class _Sample:
    """Members of one webdataset sample seen so far while scanning a tar."""

    key: str
    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    key: str
    offset: int
    size: int
    ext: str
    label: int


class _ShardError(Exception):
    """A shard is unreadable; the message is the recorded reason."""


_NOT_REGULAR = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                (stat.S_ISBLK, "block device"))


def check_regular(shard: str) -> None:
    """Refuse a local shard that is a FIFO, socket or device: opening one would block (a FIFO waits
    for a writer) and a shard is read by random access. Missing paths and directories are left to
    the caller (recorded as failed shards)."""
    if _is_url(shard):
        return
    try:
        mode = os.stat(shard).st_mode
    except OSError:
        return
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), None)
    if kind is not None:
        raise DatasetError(f"shard {shard} is a {kind}, not a regular file: webdataset shards are read by random "
                           "access, so write the stream to a .tar file first and pass that")


def _open(shard: str) -> IO[bytes]:
    """Open a shard for binary random access (local file or fsspec URL)."""
    if _is_url(shard):
        return fsspec.open(shard, "rb").open()
    check_regular(shard)
    return open(shard, "rb")


def _members(tar: tarfile.TarFile, shard: str, skipped: list[dict]) -> Iterator[tarfile.TarInfo]:
    """Regular members of ``tar`` that webdataset would not skip, headers only. Links, devices and
    FIFOs inside the tar are skipped as webdataset skips them, and recorded in ``skipped``."""
    from webdataset.tariterators import base_plus_ext  # imported here: webdataset imports torch

    while (info := tar.next()) is not None:
        tar.members.clear()  # keep memory flat on large shards
        if not info.name or _SKIP_META.match(info.name):
            continue
        if info.isreg():
            yield info
        elif not info.isdir():
            kind = "symlink" if info.issym() else "hardlink" if info.islnk() else "special file"
            target = f" -> {info.linkname}" if info.linkname else ""
            skipped.append({"shard": shard, "key": base_plus_ext(info.name)[0] or info.name,
                            "reason": f"member {info.name} is a {kind}{target}, which webdataset does not read; "
                                      "store the file itself in the tar"})


def _group(tar: tarfile.TarFile, shard: str, skipped: list[dict]) -> Iterator[_Sample]:
    """Group consecutive members by webdataset key (``base_plus_ext``).

    A sample holding the same member twice is refused, as webdataset refuses it (``tar`` would
    extract the last copy): which copy is meant cannot be known."""
    from webdataset.tariterators import base_plus_ext  # imported here: webdataset imports torch
    current: _Sample | None = None
    for info in _members(tar, shard, skipped):
        key, suffix = base_plus_ext(info.name)
        if key is None:
            continue
        if current is None or key != current.key:
            if current is not None:
                yield current
            current = _Sample(key)
        if suffix.lower() in current.members:
            raise DatasetError(f"shard {shard} holds the member {info.name} twice (sample {key!r}); webdataset "
                               "refuses such a tar and tar would keep the last copy: rewrite the shard with one copy")
        current.members[suffix.lower()] = info
    if current is not None:
        yield current


def _label(tar: tarfile.TarFile, info: tarfile.TarInfo | None) -> int:
    if info is None:
        return -1
    text = tar.extractfile(info).read().decode("utf-8").strip()
    try:
        return int(text)
    except ValueError as exc:
        raise _ShardError(f"{info.name}: .cls content {text[:40]!r} is not an integer") from exc


def _row(tar: tarfile.TarFile, sample: _Sample, skipped: list[dict], shard: str) -> _Row | None:
    """The image row of a sample, or None (recorded in ``skipped``) when it has no usable image."""
    try:
        sample.key.encode("utf-8")
    except UnicodeEncodeError:
        skipped.append({"shard": shard, "key": sample.key.encode("utf-8", "replace").decode(),
                        "reason": "member name is not valid UTF-8"})
        return None
    ext = next((e for e in IMAGE_EXTENSIONS if e in sample.members), None)
    if ext is None:
        found = ", ".join(sorted(sample.members)) or "nothing"
        skipped.append({"shard": shard, "key": sample.key,
                        "reason": f"no image member of a supported type ({', '.join(IMAGE_EXTENSIONS)}); has {found}"})
        return None
    info = sample.members[ext]
    label = _label(tar, sample.members.get("cls"))
    return _Row(sample.key, info.offset_data, info.size, ext, label)


def _check_end(handle: IO[bytes], tar: tarfile.TarFile) -> None:
    """Require an end-of-archive zero block where tarfile stopped reading.

    tarfile silently stops at a truncated or corrupt header, so without this a tar
    cut on a member boundary would look complete.
    """
    handle.seek(tar.offset)
    block = handle.read(_BLOCK)
    if len(block) < _BLOCK:
        raise _ShardError(f"truncated: no end-of-archive marker at byte {tar.offset}")
    if block.count(0) != _BLOCK:
        raise _ShardError(f"corrupt or truncated tar header at byte {tar.offset}")


def _scan(shard: str, skipped: list[dict]) -> list[_Row]:
    """All image rows of one shard; raises _ShardError when the shard is unreadable."""
    if not _is_url(shard) and os.path.isdir(shard):
        raise _ShardError("is a directory, not a tar shard (name the shards, e.g. DIR/train-{000000..000009}.tar)")
    try:
        with _open(shard) as handle:
            with tarfile.open(fileobj=handle, mode="r:") as tar:
                rows = [r for s in _group(tar, shard, skipped) if (r := _row(tar, s, skipped, shard)) is not None]
                _check_end(handle, tar)
    except FileNotFoundError as exc:
        raise _ShardError(f"missing: {exc}") from exc
    except tarfile.ReadError as exc:
        kind = "truncated" if "end of data" in str(exc) else "not a readable uncompressed tar"
        raise _ShardError(f"{kind}: {exc}") from exc
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise _ShardError(f"{type(exc).__name__}: {exc}") from exc
    return rows


def _check_duplicates(shards: Sequence[str], rows: list[list[_Row]]) -> None:
    """Raise DatasetError on a key seen twice (across shards or within one)."""
    seen: dict[str, int] = {}
    for position, shard_rows in enumerate(rows):
        for row in shard_rows:
            if row.key in seen:
                first = shards[seen[row.key]]
                raise DatasetError(f"duplicate key {row.key!r} in shards {first!r} and {shards[position]!r}; "
                                   "every sample needs a unique __key__")
            seen[row.key] = position


def _columns(shards: list[str], rows: list[list[_Row]], failures: list[ShardFailure], skipped: list[dict]) -> ShardIndex:
    flat = [(p, r) for p, shard_rows in enumerate(rows) for r in shard_rows]
    return ShardIndex(
        shards=shards,
        keys=np.array([r.key for _, r in flat], dtype=str),
        shard=np.array([p for p, _ in flat], dtype=np.int32),
        offset=np.array([r.offset for _, r in flat], dtype=np.int64),
        size=np.array([r.size for _, r in flat], dtype=np.int64),
        ext=np.array([r.ext for _, r in flat], dtype=str),
        label=np.array([r.label for _, r in flat], dtype=np.int64),
        failures=failures,
        skipped=skipped,
    )


def index_shards(shards: Sequence[str], progress: bool = False) -> ShardIndex:
    """Index the image members of ``shards`` by reading tar headers only.

    Unreadable shards (missing, not a tar, truncated) are recorded in
    ``failures`` and contribute no rows; the other shards proceed. Duplicate
    keys raise ValueError naming the key and both shards.
    """
    from eupe.progress import progress as progress_bar

    shards = list(shards)
    rows: list[list[_Row]] = []
    failures: list[ShardFailure] = []
    skipped: list[dict] = []
    with progress_bar(total=len(shards), desc="indexing shards", unit="shard", disable=not progress) as bar:
        for shard in shards:
            try:
                rows.append(_scan(shard, skipped))
            except _ShardError as exc:
                failures.append(ShardFailure(shard, str(exc)))
                rows.append([])
            bar.update(1)
    _check_duplicates(shards, rows)
    return _columns(shards, rows, failures, skipped)


_FINGERPRINT_BYTES = 1 << 16


def shard_fingerprint(shard: str) -> dict | None:
    """``{"size", "sha256"}`` of a shard's size and first and last 64 KiB (cheap, even remote);
    None when the shard does not exist. Detects shards regenerated or replaced under one name."""
    try:
        with _open(shard) as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(0)
            digest = hashlib.sha256(handle.read(_FINGERPRINT_BYTES))
            handle.seek(max(0, size - _FINGERPRINT_BYTES))
            digest.update(handle.read(_FINGERPRINT_BYTES))
    except (FileNotFoundError, IsADirectoryError):
        return None
    return {"size": size, "sha256": digest.hexdigest()}


# --------------------------------------------------------------------------- reading


def _read_exact(handle: IO[bytes], shard: str, offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise OSError(f"short read from shard {shard!r}: wanted {size} bytes at {offset}, got {len(data)}")
    return data


def read_member(shard: str, offset: int, size: int) -> bytes:
    """Read ``size`` bytes at ``offset`` of ``shard`` (local path or fsspec URL)."""
    with _open(shard) as handle:
        return _read_exact(handle, shard, int(offset), int(size))


class ShardReader:
    """Reads image bytes by row, keeping one open handle per shard.

    Handles are opened lazily, dropped when pickled and reopened after a fork,
    so a reader can be built in the parent and used in DataLoader workers.
    """

    def __init__(self, index: ShardIndex) -> None:
        self.index = index
        self._handles: dict[int, IO[bytes]] = {}
        self._pid = os.getpid()

    def read(self, i: int) -> bytes:
        """Image bytes of row ``i``."""
        position = int(self.index.shard[i])
        shard = self.index.shards[position]
        return _read_exact(self._handle(position), shard, int(self.index.offset[i]), int(self.index.size[i]))

    def _handle(self, position: int) -> IO[bytes]:
        if self._pid != os.getpid():  # inherited across fork: file offsets are shared
            self._handles = {}
            self._pid = os.getpid()
        if position not in self._handles:
            self._handles[position] = _open(self.index.shards[position])
        return self._handles[position]

    def close(self) -> None:
        """Close every open handle."""
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.close()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"index": self.index}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["index"])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- writing


def _sample(key: str, data: bytes, ext: str, label: int | None) -> dict:
    ext = ext.lstrip(".").lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"{key!r}: extension {ext!r} is not one of {IMAGE_EXTENSIONS}")
    if "." in key.rsplit("/", 1)[-1]:
        raise ValueError(f"key {key!r} must not contain '.' in its last path component (webdataset)")
    sample = {"__key__": key, ext: bytes(data)}
    if label is not None:
        sample["cls"] = str(int(label)).encode("ascii")
    return sample


def write_shards(
    samples: Iterable[tuple[str, bytes, str, int | None]], pattern: str, per_shard: int
) -> list[str]:
    """Write ``(key, image_bytes, ext, label_or_None)`` samples as webdataset shards.

    ``pattern`` is a printf pattern such as ``"/tmp/x/train-%06d.tar"``. A ``.cls``
    member is written when a label is given. Returns the shard paths written.
    """
    from webdataset import ShardWriter

    if per_shard < 1:
        raise ValueError(f"per_shard must be >= 1, got {per_shard}")
    written: list[str] = []
    with ShardWriter(pattern, maxcount=per_shard, verbose=0, post=written.append, mtime=0) as sink:
        for key, data, ext, label in samples:
            sink.write(_sample(key, data, ext, label))
    return written
