"""The feature store: a plain Zarr v3 group holding teachers' outputs per image and per view.

Layout (every array is readable with plain ``zarr``; nothing is pickled)::

    STORE/                              attrs: format, version, dataset identity, view policy, seed, K
      images/keys        [N]            str     webdataset __key__ of each image, in dataset order
      images/shard       [N]            int32   position of its tar shard in attrs.dataset.shards
      images/offset      [N]            int64   byte offset of the image inside that tar
      images/size        [N]            int64   byte size of the image
      images/label       [N]            int64   class from a .cls member, -1 when absent
      teachers/<name>/                  attrs: identity (weights sha256, preprocessing, codec, resolutions...)
        views            [N, K, F]      float64 view parameters (columns: root attrs.view_fields)
        status           [N]            uint8   0 pending, 1 ok, 2 failed (see error)
        error            [N]            str     why an image failed ("" when ok)
        done             [n_chunks]     uint8   1 once every array of that chunk of images is written
        r<res>/summary/<component>  [N, K, ...]      codec components of the summary token
        r<res>/patch/<component>    [N, K, T, ...]   codec components of the h*w patch tokens
                                          (sharded: one file per chunk of images, one inner chunk per view)
        r<res>/stats/{summary,patch}_{mean,std}  [D] float64, written by `eupe-cache stats`

Images are grouped into chunks of ``images_per_chunk`` consecutive rows; every array is chunked
along N the same way, so each chunk of images is written by exactly one process, and its
``done`` flag is set only after its data has been written and flushed to disk.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from eupe.data.shards import ShardIndex
from eupe.views import VIEW_FIELDS, ViewPolicy

if TYPE_CHECKING:
    from eupe.store.teacher_group import TeacherGroup

STORE_FORMAT = "eupe-feature-store"
STORE_VERSION = 1
PENDING, OK, FAILED = 0, 1, 2


class StoreMismatchError(ValueError):
    """An existing store does not match what the caller asked for; the message says what differs."""


def compressors(level: int = 3) -> list:
    """zstd, then a crc32c checksum of the compressed chunk (verify detects corrupted chunks)."""
    return [ZstdCodec(level=level), Crc32cCodec()]


def differences(stored: dict, wanted: dict, where: str) -> list[str]:
    """Human-readable list of keys whose values differ between two identity dicts."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        if _canon(stored.get(key)) != _canon(wanted.get(key)):
            out.append(f"{where}.{key}: store has {_short(stored.get(key))}, requested {_short(wanted.get(key))}")
    return out


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class StoreParams:
    """What defines a store's views: K views per image drawn by ``policy`` from ``seed``."""

    views_per_image: int
    seed: int
    policy: ViewPolicy
    images_per_chunk: int = 16

    def identity(self) -> dict:
        return {
            "views_per_image": self.views_per_image,
            "seed": self.seed,
            "view_policy": self.policy.to_dict(),
            "view_policy_sha256": self.policy.fingerprint(),
            "images_per_chunk": self.images_per_chunk,
        }


class FeatureStore:
    """A feature store on disk (or any zarr store URL)."""

    def __init__(self, group: zarr.Group) -> None:
        self.group = group
        attrs = dict(group.attrs)
        if attrs.get("format") != STORE_FORMAT:
            raise StoreMismatchError(f"{group.store} is not an eupe feature store (no '{STORE_FORMAT}' attribute)")
        self.attrs = attrs
        self.params = StoreParams(
            attrs["views_per_image"], attrs["seed"], ViewPolicy.from_dict(attrs["view_policy"]),
            attrs["images_per_chunk"],
        )
        self._keys: np.ndarray | None = None

    # -- creation and opening ---------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "FeatureStore":
        if not _exists(path):
            raise FileNotFoundError(f"no feature store at {path}")
        return cls(zarr.open_group(str(path), mode=mode))

    @classmethod
    def create(cls, path: str | Path, index: ShardIndex, params: StoreParams, limit: int | None) -> "FeatureStore":
        """Write the dataset index and identity; the ``ready`` attribute is written last."""
        group = zarr.open_group(str(path), mode="w")
        group.attrs.update({"format": STORE_FORMAT, "ready": False})  # an interrupted creation is redone
        images = group.create_group("images")
        n, chunk = len(index), (params.images_per_chunk,)
        for name, values in (("shard", index.shard), ("offset", index.offset), ("size", index.size),
                             ("label", index.label)):
            images.create_array(name, data=np.asarray(values), chunks=chunk, compressors=compressors())
        keys = images.create_array("keys", shape=(n,), dtype=str, chunks=chunk)
        keys[:] = np.asarray(index.keys, dtype=str)
        group.create_group("teachers")
        group.attrs.update({
            "version": STORE_VERSION, **params.identity(),
            "view_fields": list(VIEW_FIELDS), "dataset": dataset_identity(index, limit), "ready": True,
        })
        return cls(group)

    # -- dataset ----------------------------------------------------------------------------

    @property
    def dataset(self) -> dict:
        return self.attrs["dataset"]

    @property
    def num_images(self) -> int:
        return int(self.dataset["num_images"])

    @property
    def num_chunks(self) -> int:
        return -(-self.num_images // self.params.images_per_chunk)

    def chunk_rows(self, chunk: int) -> range:
        start = chunk * self.params.images_per_chunk
        return range(start, min(start + self.params.images_per_chunk, self.num_images))

    @property
    def keys(self) -> np.ndarray:
        if self._keys is None:
            self._keys = np.array(self.group["images/keys"][:].tolist(), dtype=str)  # StringDType -> <U
        return self._keys

    def shard_index(self) -> ShardIndex:
        """The stored dataset index (for reading images back by random access)."""
        images = self.group["images"]
        n = self.num_images
        return ShardIndex(
            shards=list(self.dataset["shards"]), keys=self.keys, shard=images["shard"][:],
            offset=images["offset"][:], size=images["size"][:], ext=np.array([""] * n),
            label=images["label"][:], failures=[],
        )

    def check_params(self, params: StoreParams, data_identity: dict | None) -> None:
        """Refuse to extend a store whose views or dataset differ from the request."""
        problems = differences(
            {k: self.attrs.get(k) for k in params.identity()}, params.identity(), "store"
        )
        if data_identity is not None:
            stored = {k: self.dataset.get(k) for k in ("shards", "limit")}
            problems += differences(stored, {k: data_identity[k] for k in stored}, "dataset")
        if problems:
            raise StoreMismatchError(
                "the existing store was built differently; use another --out or the same settings:\n  "
                + "\n  ".join(problems)
            )

    # -- teachers ---------------------------------------------------------------------------

    def teacher_names(self) -> list[str]:
        return sorted(name for name, _ in self.group["teachers"].groups())

    def teacher(self, name: str) -> "TeacherGroup":
        from eupe.store.teacher_group import TeacherGroup

        if name not in self.teacher_names():
            raise KeyError(f"teacher {name!r} is not in this store; it has: {', '.join(self.teacher_names()) or 'none'}")
        return TeacherGroup(self, self.group[f"teachers/{name}"])

    def disk_bytes(self, sub: str = "") -> int | None:
        """Bytes on local disk under the store (or a sub-path), None for remote stores."""
        root = _local_root(self.group)
        if root is None:
            return None
        base = root / sub if sub else root
        return sum(f.stat().st_size for f in base.rglob("*") if f.is_file())


def dataset_identity(index: ShardIndex, limit: int | None) -> dict:
    return {
        "shards": list(index.shards),
        "num_images": len(index),
        "keys_sha256": index.keys_sha256(),
        "limit": limit,
        "failed_shards": [{"shard": f.shard, "reason": f.reason} for f in index.failures],
    }


def _exists(path: str | Path) -> bool:
    if "://" in str(path):
        try:
            zarr.open_group(str(path), mode="r")
            return True
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return False
    return (Path(path) / "zarr.json").is_file()


def _local_root(group: zarr.Group) -> Path | None:
    root = getattr(group.store, "root", None)
    return Path(root) / group.path if root is not None else None


def local_chunk_files(array: zarr.Array, chunk_coords: tuple[int, ...]) -> Path | None:
    """Path of one chunk file of a local array (for fsync); None for remote stores."""
    root = getattr(array.store, "root", None)
    if root is None:
        return None
    return Path(root) / array.path / array.metadata.encode_chunk_key(chunk_coords)


def fsync_paths(paths: list[Path]) -> None:
    """Flush written chunk files to disk so a completion flag never precedes its data."""
    for path in paths:
        if path is not None and path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def wait_for(predicate, what: str, timeout_s: float = 600.0, poll_s: float = 0.5) -> None:
    """Poll until ``predicate()`` is true (other ranks waiting for rank 0 to create a group)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)

