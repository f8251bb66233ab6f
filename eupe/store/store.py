"""The feature store: a plain Zarr v3 group holding teachers' outputs per image and per view.

Layout (every array is readable with plain ``zarr``; nothing is pickled)::

    STORE/                              attrs: format, version (3), dataset identity, view policy, seed, K,
                                               identity_sha256 (fingerprint of all of it)
      images/keys        [N]            str     webdataset __key__ of each image, in dataset order
      images/shard       [N]            int32   position of its tar shard in attrs.dataset.shards
      images/offset      [N]            int64   byte offset of the image inside that tar
      images/size        [N]            int64   byte size of the image
      images/label       [N]            int64   class from a .cls member, -1 when absent
      teachers/<name>/                  attrs: identity (weights sha256, preprocessing, codec, resolutions...),
                                               chunk_arrays, identity_sha256
        views            [N, K, F]      float64 view parameters (columns: root attrs.view_fields)
        status           [N]            uint8   0 pending, 1 ok, 2 failed (see error)
        error            [N]            str     why an image failed ("" when ok)
        manifest         [n_chunks, A, 3] uint64  per chunk and array: bytes, digest, index digest;
                                                  a chunk is done once its row is written
        image, view, view_field, resolution, chunk_array   coordinates for xarray (eupe.store.dims;
                                                  a view block: block_view), written at creation
        r<resolution>/summary   [N, K, Ds]        float32 summary token  } through the eupe.features zarr
        r<resolution>/patch     [N, K, h, w, D]   float32 patch tokens   } codec (eupe.store.zarr_codecs)
                                          (sharded: one file per chunk of images, one inner chunk per view
                                          holding that view's codec components; plain zarr decodes them)
        r<resolution>/stats/{summary,patch}_{mean,std}  [D] float64, written by `eupe-cache stats`
        blocks/<K>/                     a view block: views K..K2-1 of every image, added by
                                        `extract --views K2` on a store holding K; the same arrays
                                        (views, status, error, manifest, r<resolution>/...) as
                                        [N, K2-K, ...]; attrs: view_start, view_stop, identity_sha256
      startup/<name>/                   consolidated statuses (eupe.store.status_record); attrs: covers
                                        (done-set digest), values_sha256; written by extract and the trainer
        status           [N]            uint8   every image's status, consolidated in one file
        error            [n_failed]     str     failure reason of each failed image, in row order

Every array has zarr ``dimension_names`` (:mod:`eupe.store.dims`), so xarray opens the store as a
DataTree. Consolidated metadata is never read and is kept current when present
(:mod:`eupe.store.consolidated`).

Images are grouped into chunks of ``images_per_chunk`` consecutive rows; every teacher array is
chunked along N the same way, so each chunk of images is written by exactly one process, and its
manifest row is written only after its data has been written and flushed to disk.

Creation is atomic: a local store is built under a staging name beside ``--out`` and renamed into
place (a remote one is marked ``creating`` until its identity is written, last), so an interrupted
creation never leaves a half-made store, and a directory that is not an eupe store is never
written into or deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import zarr

from eupe.data.shards import DatasetError, ShardIndex, shard_fingerprint
from eupe.store import consolidated, dims, manifest
from eupe.store.layout import (DEFAULT_IMAGES_PER_CHUNK, FAILED, IMAGE_ROWS_PER_CHUNK, OK, PENDING, STORE_FORMAT,
                               STORE_VERSION, TEACHERS, UPGRADABLE_VERSIONS, StoreIntegrityError, StoreMismatchError,
                               changed_keys, compressors, differences, failpoint, is_url, publish_dir,
                               remove_stale_staging, sha256_of, staging_name)
from eupe.store.status_record import TeacherProgress, read_record, save_record
from eupe.store.teacher_group.create import create_teacher
from eupe.store.teacher_group.group import TeacherGroup
from eupe.store.teacher_group.identity import TeacherIdentity, check_identity
from eupe.views.policy import ViewPolicy
from eupe.views.spec import VIEW_FIELDS

__all__ = ["FAILED", "OK", "PENDING", "FeatureStore", "StoreMismatchError", "StoreParams", "TeacherProgress",
           "compressors"]

IMAGE_ARRAYS = ("keys", "shard", "offset", "size", "label")
_ALL_CHUNKS = {"write_empty_chunks": True}  # every chunk has a file, also one equal to the fill value


@dataclass(frozen=True)
class StoreParams:
    """What defines a store's views: K views per image drawn by ``policy`` from ``seed``."""

    views_per_image: int
    seed: int
    policy: ViewPolicy
    images_per_chunk: int = DEFAULT_IMAGES_PER_CHUNK

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

    def __init__(self, group: zarr.Group, where: str, legacy: bool = False) -> None:
        """``legacy``: also accept an older format `eupe-cache upgrade` converts (its targets are read
        by ``eupe.store.upgrade`` only)."""
        self.group = group
        self.where = where
        attrs = dict(group.attrs)
        _check_format(attrs, where, legacy)
        self.attrs = attrs
        try:
            policy = ViewPolicy.from_stored(attrs["view_policy"], attrs.get("view_policy_sha256"))
        except ValueError as err:
            raise StoreMismatchError(f"{where}: {err}") from None
        self.params = StoreParams(attrs["views_per_image"], attrs["seed"], policy, attrs["images_per_chunk"])
        self.fingerprint: str = attrs["identity_sha256"]
        self._keys: np.ndarray | None = None
        self._shards: list[str] | None = None  # where images are read from, when not the recorded paths (relocate)
        self._teachers: dict[str, TeacherGroup] = {}
        self._progress: dict[str, TeacherProgress] = {}
        self._key_rows: dict[str, int] | None = None  # key -> row, built on the first lookup by key
        self._notebook_index: ShardIndex | None = None  # the dataset index FeatureStore.sample reads images with
        self._check_fingerprint()
        if is_url(where):
            _REMOTE_STORES[id(group.store)] = group.store

    # -- opening and creation ---------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", legacy: bool = False) -> "FeatureStore":
        """Open an existing store; refuse anything that is not a complete, unaltered eupe store
        (``legacy``: see ``__init__``)."""
        where = str(path)
        if not is_url(path) and not (Path(path) / "zarr.json").is_file():
            raise FileNotFoundError(f"no feature store at {where} (no zarr.json there)")
        try:
            group = consolidated.open_group(where, mode=mode, storage_options=remote_options(where))
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            raise FileNotFoundError(f"no feature store at {where}") from None
        except (json.JSONDecodeError, ValueError, KeyError, TypeError) as err:
            raise StoreIntegrityError(f"{where}/zarr.json is not valid zarr metadata ({err}); "
                                      "the store was damaged: restore it or re-extract") from None
        return cls(group, where, legacy)

    @classmethod
    def open_or_create(cls, path: str | Path, params: StoreParams, shards: list[str], limit: int | None,
                       index: Callable[[], ShardIndex]) -> "FeatureStore":
        """Open the store at ``path`` (checking it matches) or create it from ``index()``.

        Refuses, without writing anything, a path that holds something other than an eupe store.
        """
        if _state(path) != "store":
            if not is_url(path):
                _creation_target(Path(path))  # `--out .` is refused before the dataset is indexed
            built = index().head(limit)
            if len(built) == 0:
                reasons = "; ".join(f"{f.shard}: {f.reason}" for f in built.failures) or "no image members"
                raise DatasetError(f"no readable images in the dataset ({reasons}); nothing was written")
            cls.create(path, built, params, limit)
        store = cls.open(path, mode="a")
        store.check_params(params, {"shards": shards, "limit": limit})
        return store

    @classmethod
    def create(cls, path: str | Path, index: ShardIndex, params: StoreParams, limit: int | None) -> "FeatureStore":
        """Create a store atomically; if another process created it first, open theirs."""
        if _state(path) == "store":
            return cls.open(path, mode="a")
        if is_url(path):
            _create_remote(str(path), index, params, limit)
        else:
            _create_local(Path(path), index, params, limit)
        return cls.open(path, mode="a")

    def writable(self) -> "FeatureStore":
        """The same store opened for writing (statistics), checked again like any open."""
        return FeatureStore(consolidated.open_group(self.group.store.with_read_only(False), mode="r+"), self.where)

    @staticmethod
    def exists(path: str | Path) -> bool:
        """A finished store is at ``path`` (False while absent or being created; anything else that
        is there and is not an eupe store is refused with StoreMismatchError)."""
        return _state(path) == "store"

    @classmethod
    def existing_params(cls, path: str | Path) -> StoreParams | None:
        """The view parameters of the store at ``path``, None when there is none (yet)."""
        return cls.open(path).params if cls.exists(path) else None

    # -- identity ---------------------------------------------------------------------------

    def _check_fingerprint(self) -> None:
        document = identity_document(self.attrs, self.group["images"])
        if sha256_of(document) == self.fingerprint:
            return
        changed = changed_keys(dict(self.group["images"].attrs).get("identity", {}), document)
        raise StoreIntegrityError(f"{self.where}: store attributes changed since it was created "
                                  f"({', '.join(changed) or 'the fingerprint itself'}); restore its zarr.json or re-extract")

    def check_params(self, params: StoreParams, data_identity: dict | None) -> None:
        """Refuse to extend a store whose views or dataset differ from the request. More views per
        image than the store was created with is no difference: extraction adds view blocks."""
        wanted = {**params.identity(), "views_per_image": self.params.views_per_image}  # checked below
        problems = differences({k: self.attrs.get(k) for k in wanted}, wanted, "store")
        if params.views_per_image < self.params.views_per_image:
            problems.append(f"store.views_per_image: the store holds {self.params.views_per_image} views per image "
                            f"and --views {params.views_per_image} asks for fewer; --views can only grow a store "
                            f"(pass --views {self.params.views_per_image} or more)")
        if data_identity is not None:  # the shards themselves are compared by content (relocate)
            problems += differences({"limit": self.dataset.get("limit")}, {"limit": data_identity["limit"]}, "dataset")
        if problems:
            raise StoreMismatchError(
                "the existing store was built differently; use another --out or the same settings:\n  "
                + "\n  ".join(problems))

    @property
    def shards(self) -> list[str]:
        """Where the images are read from: the shards recorded at creation, or those :meth:`relocate` set."""
        return list(self._shards if self._shards is not None else self.dataset["shards"])

    def shard_problems(self, shards: Sequence[str] | None = None) -> list[str]:
        """Shards (default: the recorded ones) that are missing or whose content is not what the store
        recorded at creation (size, head/tail hash), position by position."""
        recorded = list(self.dataset["shards"])
        shards = recorded if shards is None else list(shards)
        if len(shards) != len(recorded):
            return [f"dataset shards differ: the store was built from {len(recorded)} shards ({recorded[0]} ...), "
                    f"{len(shards)} are given ({shards[0] if shards else 'none'} ...)"]
        problems = []
        for shard, was, stored in zip(shards, recorded, self.dataset["shard_fingerprints"]):
            now = shard_fingerprint(shard)
            named = shard if shard == was else f"{shard} (the store's {was})"
            what = "changed since the store was created" if shard == was else "is not the one the store was built from"
            if now is None:
                problems.append(f"shard {named} is missing")
            elif now != stored:
                problems.append(f"shard {named} {what} (size {stored['size']} -> {now['size']}, or different content)")
        return problems

    def relocate(self, shards: Sequence[str], check: bool = True) -> None:
        """Read the images from ``shards``: the dataset's identity is its content, not its paths, so
        a copy of the shards elsewhere (node-local disk, a symlinked directory) serves when each one
        has the size and head/tail hash recorded at creation (``check``; refused naming the shards
        that differ). The store itself is not changed."""
        problems = self.shard_problems(shards) if check else []
        if problems:
            raise StoreMismatchError("the dataset's shards are not the ones this store was built from; restore "
                                     "them, name their copies in the same order (or build a new store):\n  "
                                     + "\n  ".join(problems))
        self._shards = list(shards)

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

    def image_array(self, name: str) -> np.ndarray:
        """One images/* column, every chunk file checked against its recorded digest first."""
        array = self.group[f"images/{name}"]
        records = self.attrs["images_manifest"][name]
        for chunk, expected in enumerate(records):
            problem = manifest.check_full(array, f"images/{name}", chunk, np.asarray(expected, np.uint64),
                                          self.fingerprint_seed)
            if problem:
                raise StoreIntegrityError(f"{self.where}/images/{name} chunk {chunk}: {problem}")
        return np.asarray(array[:])

    @property
    def fingerprint_seed(self) -> str:
        """What images/* digests are bound to (the dataset identity, fixed before they are written)."""
        return self.dataset["keys_sha256"]

    @property
    def keys(self) -> np.ndarray:
        if self._keys is None:
            self._keys = np.array(self.image_array("keys").tolist(), dtype=str)  # StringDType -> <U
        return self._keys

    def shard_index(self, keys: bool = True) -> ShardIndex:
        """The stored dataset index (for reading images back by random access).

        ``keys=False`` leaves the keys column out (None): what a ``ShardReader`` needs (shard,
        offset, size) without decoding every key, ~7x cheaper at 1.28M images (a DataLoader
        worker's start, see bench/startup.py)."""
        n = self.num_images
        return ShardIndex(
            shards=self.shards, keys=self.keys if keys else None, shard=self.image_array("shard"),
            offset=self.image_array("offset"), size=self.image_array("size"), ext=np.zeros(n, dtype="<U1"),
            label=self.image_array("label"), failures=[],
        )

    # -- start-up records ---------------------------------------------------------------------

    def progress(self, name: str) -> TeacherProgress:
        """The teacher's manifest, read once per opened store (a snapshot: open the store again to
        see later progress)."""
        if name not in self._progress:
            rows = self.teacher(name).chunks.manifest_rows()  # [n_chunks, n_arrays, 3]
            self._progress[name] = TeacherProgress(rows, sha256_of(rows.tolist()))  # == chunks.done_set_digest()
        return self._progress[name]

    def image_status(self, name: str, save: bool = False) -> np.ndarray:
        """[N] uint8 status of every image as of :meth:`progress` (PENDING in chunks not done).

        Read from the record consolidated under ``startup/<teacher>`` (statuses and failure reasons,
        two files) when it covers exactly the current done set; otherwise every done chunk's status
        file is checked and read (``TeacherGroup.reader.status``) and, with ``save``, the record is written
        for the next start. The record holds the digest of the manifest it was built from (which
        holds each status and error file's digest) and a digest of its values: a stale, partial or
        edited record is never used. Chunks are still checked against their manifest when read.
        """
        found = self.progress(name)
        if found.status is None:
            stored = read_record(self.group, name, found.digest, self.num_images)
            found.consolidated = stored is not None
            found.status, found.errors = stored or (self.teacher(name).reader.status(found.done), None)
        if save and not found.consolidated:
            found.consolidated = save_record(self.group.store, name, found.digest, found.status, self._errors(name))
        return found.status

    def failures(self, name: str, save: bool = False) -> list[tuple[str, str]]:
        """(image key, reason) of every image whose extraction failed, as of :meth:`progress`."""
        rows = np.flatnonzero(self.image_status(name, save) == FAILED)
        return [(str(self.keys[r]), reason) for r, reason in zip(rows, self._errors(name))] if len(rows) else []

    def usable_rows(self, teachers: Sequence[str], save: bool = False) -> np.ndarray:
        """Rows whose image decoded and whose chunk is done for every teacher (see :meth:`image_status`)."""
        ok = np.ones(self.num_images, dtype=bool)
        for name in teachers:
            ok &= self.image_status(name, save) == OK
        return np.flatnonzero(ok)

    def _errors(self, name: str) -> list[str]:
        """Failure reasons of the FAILED rows of :meth:`image_status`, in row order."""
        found = self.progress(name)
        if found.errors is None:
            failures = self.teacher(name).reader.failures(found.status)  # every error file
            found.errors = [reason for _, reason in failures]
        return found.errors

    # -- teachers ---------------------------------------------------------------------------

    def teacher_names(self) -> list[str]:
        """Groups under ``teachers/`` that are teacher groups under their own name: a copy such as
        ``pecore_g.bak`` (its attributes name ``pecore_g``) is not a teacher (see :meth:`ignored_groups`)."""
        return sorted(name for name, group in self._teacher_groups() if _own_name(group) == name)

    def ignored_groups(self) -> list[tuple[str, str]]:
        """(name, why) of the groups under ``teachers/`` that are not teachers of this store."""
        return [(name, f"a copy of teacher {_own_name(group)}'s group" if _own_name(group) else
                 "not an eupe teacher group") for name, group in self._teacher_groups() if _own_name(group) != name]

    def _teacher_groups(self) -> list[tuple[str, zarr.Group]]:
        return sorted(((n, g) for n, g in self.group[TEACHERS].groups() if not n.startswith(".")), key=lambda x: x[0])

    def teacher(self, name: str) -> TeacherGroup:
        """The teacher's group, opened once and kept (it caches array handles and checks)."""
        if name not in self._teachers:
            if name not in self.teacher_names():
                raise StoreMismatchError(f"teacher {name!r} is not in the store {self.where}; it has: "
                                         f"{', '.join(self.teacher_names()) or 'none'}")
            self._teachers[name] = TeacherGroup(self, self.group[f"{TEACHERS}/{name}"])
        return self._teachers[name]

    def open_or_create_teacher(self, identity: TeacherIdentity, codec) -> TeacherGroup:
        """The teacher's group, created atomically when absent, checked against ``identity``."""
        if not self.teacher_ready(identity.name):  # absent, or a remote creation that was killed
            create_teacher(self, identity, codec)
        group = self.teacher(identity.name)
        check_identity(group.attrs, identity)
        return group

    def teacher_ready(self, name: str) -> bool:
        """The teacher's group exists and is complete: its fingerprint, written last at creation, is
        there (a local group is staged and renamed, so a visible one always is)."""
        if name not in self.teacher_names():
            return False
        return bool(dict(self.group[f"{TEACHERS}/{name}"].attrs).get("identity_sha256"))  # "" until the end

    # -- notebook use (eupe.store.notebook) ------------------------------------------------------

    def row(self, key: str | int) -> int:
        """The row of the image with webdataset key ``key`` (StoreLookupError naming keys that exist)."""
        from eupe.store.notebook import row_of

        return row_of(self, key)

    def sample(self, key: str | int, teacher: str | None = None, view: int = 0, resolution: int | None = None):
        """One stored view of image ``key`` (or row): the pixels it was computed on, its view parameters
        and its decoded targets, as an ``eupe.store.notebook.Sample``. ``teacher``: needed when the
        store holds several; ``resolution``: the teacher's first when None."""
        from eupe.store.notebook import sample

        return sample(self, key, teacher, view, resolution)

    def __repr__(self) -> str:
        from eupe.store.notebook import store_text

        return store_text(self)

    def _repr_html_(self) -> str:
        from eupe.store.notebook import store_html

        return store_html(self)

    @property
    def local_root(self) -> Path | None:
        root = getattr(self.group.store, "root", None)
        return Path(root) / self.group.path if root is not None else None


def _own_name(group: zarr.Group) -> str | None:
    """The teacher name a teacher group records in its attributes (None: not a teacher group)."""
    name = dict(group.attrs).get("name")
    return name if isinstance(name, str) else None


# -- identity documents ------------------------------------------------------------------------


def dataset_identity(index: ShardIndex, limit: int | None) -> dict:
    return {
        "shards": list(index.shards),
        "shard_fingerprints": [shard_fingerprint(s) for s in index.shards],
        "num_images": len(index),
        "keys_sha256": index.keys_sha256(),
        "limit": limit,
        "failed_shards": [{"shard": f.shard, "reason": f.reason} for f in index.failures],
        "skipped_samples": list(index.skipped),
    }


def identity_document(attrs: dict, images: zarr.Group) -> dict:
    """What a store's fingerprint covers: every root attribute and the images/* array metadata."""
    document = {k: v for k, v in attrs.items() if k != "identity_sha256"}
    for name in IMAGE_ARRAYS:
        meta = images[name].metadata.to_dict()
        meta.pop("attributes", None)
        document[f"images/{name}"] = meta
    return document


# -- object storage -----------------------------------------------------------------------------


def remote_options(path: str | Path) -> dict | None:
    """fsspec options of every remote store: no cached directory listings, since other ranks and
    processes add groups and objects while this one runs (a stale listing would hide a teacher
    group that exists). Credentials and endpoints come from the environment (docs/object-storage.md)."""
    return {"use_listings_cache": False} if is_url(path) else None


# -- object storage after fork -----------------------------------------------------------------

_REMOTE_STORES: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()  # id -> zarr store of a remote FeatureStore


def _fresh_clients_after_fork() -> None:
    """A forked child (DataLoader worker) cannot use its parent's async S3/GCS client (it is bound to
    the parent's event loop): give every open remote store a new filesystem object. No I/O here; the
    client is made on first use. fsspec clears its instance cache when the pid changes."""
    import fsspec

    for zstore in list(_REMOTE_STORES.values()):
        fs = getattr(zstore, "fs", None)
        if fs is not None:
            protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
            object.__setattr__(zstore, "fs", fsspec.filesystem(protocol, **fs.storage_options))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_clients_after_fork)


def _check_format(attrs: dict, where: str, legacy: bool = False) -> None:
    if attrs.get("format") != STORE_FORMAT:
        raise StoreMismatchError(f"{where} is not an eupe feature store (no '{STORE_FORMAT}' attribute)")
    if attrs.get("creating"):
        raise StoreIntegrityError(f"{where}: its creation was interrupted; re-run the extract command")
    version = attrs.get("version")
    if version == STORE_VERSION or (legacy and version in UPGRADABLE_VERSIONS):
        return
    if version in UPGRADABLE_VERSIONS:
        raise StoreMismatchError(f"{where} is in eupe store format {version}; this eupe reads format {STORE_VERSION} "
                                 f"(targets that plain zarr decodes). Convert it, verified and resumable, leaving it "
                                 f"as it is: eupe-cache upgrade {where} --out NEW_STORE")
    if isinstance(version, int) and version > STORE_VERSION:
        raise StoreMismatchError(f"{where} was written by a newer eupe (store format {version}; this eupe reads "
                                 f"format {STORE_VERSION}): upgrade eupe (pip install -U eupe) to read it")
    raise StoreMismatchError(f"{where} has an unknown eupe store format version {version!r} (this eupe reads "
                             f"{STORE_VERSION}); its zarr.json was edited: restore it or re-extract")


# -- creation ----------------------------------------------------------------------------------


def _state(path: str | Path) -> str:
    """'absent', 'empty', 'store' (complete or ours but interrupted) or refuse anything else."""
    if is_url(path):
        attrs = _remote_root_attrs(str(path))
        if attrs is None:
            return "absent"
        if attrs.get("format") != STORE_FORMAT:
            raise StoreMismatchError(f"{path} holds a zarr group that is not an eupe feature store; choose another --out")
        return "absent" if attrs.get("creating") else "store"
    root = Path(path)
    if not root.exists():
        return "absent"
    if not root.is_dir():
        raise StoreMismatchError(f"--out {root} is a file, not a directory; choose a new or empty directory")
    if (root / "zarr.json").is_file():
        _check_format(_read_json(root / "zarr.json").get("attributes", {}), str(root))
        return "store"
    entries = sorted(p.name for p in root.iterdir())
    if entries:
        raise StoreMismatchError(
            f"--out {root} is not empty and is not an eupe feature store (it holds {len(entries)} entries, e.g. "
            f"{', '.join(entries[:3])}); nothing was written. Choose a new or empty directory")
    return "empty"


def _remote_root_attrs(url: str) -> dict | None:
    """The root group's attributes at ``url``, None when nothing is there yet.

    Objects without a root group are refused (creating a store overwrites its prefix), but only
    once a second look still finds no group: another rank may have begun creating the store (its
    root ``zarr.json`` is its first write) between the first look and the listing.
    """
    for _ in range(2):
        try:
            return dict(consolidated.open_group(url, mode="r", storage_options=remote_options(url)).attrs)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            if _remote_prefix_empty(url):
                return None
    raise StoreMismatchError(f"--out {url} already holds objects and is not an eupe feature store; nothing was "
                             "written. Choose a new or empty prefix")


def _remote_prefix_empty(url: str) -> bool:
    from zarr.core.sync import sync
    from zarr.storage import FsspecStore

    try:
        return sync(FsspecStore.from_url(url, storage_options=remote_options(url), read_only=True).is_empty(""))
    except FileNotFoundError:
        return True


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreIntegrityError(f"{path} is not valid JSON ({err}); the store was damaged: restore it or "
                                  "re-extract into a new directory") from None


def _write_images(group: zarr.Group, index: ShardIndex, params: StoreParams, limit: int | None) -> None:
    """The dataset index arrays, then the root attributes with the fingerprint (last)."""
    images = group.create_group("images")
    chunk = (min(IMAGE_ROWS_PER_CHUNK, max(len(index), 1)),)
    for name, values in (("shard", index.shard), ("offset", index.offset), ("size", index.size),
                         ("label", index.label)):
        images.create_array(name, data=np.asarray(values), chunks=chunk, compressors=compressors(), config=_ALL_CHUNKS,
                            dimension_names=(dims.IMAGE,))
    keys = images.create_array("keys", shape=(len(index),), dtype=str, chunks=chunk, config=_ALL_CHUNKS,
                               dimension_names=(dims.IMAGE,))
    keys[:] = np.asarray(index.keys, dtype=str)
    group.create_group(TEACHERS)
    dataset = dataset_identity(index, limit)
    records = {name: [manifest.record(images[name], f"images/{name}", c, dataset["keys_sha256"]).tolist()
                      for c in range(-(-len(index) // chunk[0]))] for name in IMAGE_ARRAYS}
    attrs = {"format": STORE_FORMAT, "version": STORE_VERSION, **params.identity(), "view_fields": list(VIEW_FIELDS),
             "dataset": dataset, "images_manifest": records}
    document = identity_document(attrs, images)
    images.attrs["identity"] = document  # a copy, to name what changed if attributes are edited
    failpoint("store-fingerprint")
    group.attrs.put({**attrs, "identity_sha256": sha256_of(document)})


def _creation_target(root: Path) -> Path:
    """The directory a new local store becomes: through symbolic links (an empty directory a link
    points to is replaced by the store, the link kept), never the working directory or a parent of
    it (the store is built beside its final name and renamed into place)."""
    target = Path(os.path.realpath(root))
    cwd = Path(os.path.realpath(os.getcwd()))
    if target == cwd or target in cwd.parents:
        raise StoreMismatchError(f"--out {root} is the working directory{'' if target == cwd else ' or holds it'}: "
                                 "a new store is created as a directory of its own; name one, e.g. --out features.zarr")
    return target


def _create_local(root: Path, index: ShardIndex, params: StoreParams, limit: int | None) -> None:
    root = _creation_target(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staged = root.parent / staging_name(root.name)
    try:
        _write_images(zarr.open_group(str(staged), mode="w-"), index, params, limit)
        failpoint("store-staged")
        publish_dir(staged, root)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    remove_stale_staging(root)


def _create_remote(url: str, index: ShardIndex, params: StoreParams, limit: int | None) -> None:
    """Object stores have no rename: the root is marked 'creating' in its first write, cleared last."""
    group = zarr.open_group(url, mode="w", attributes={"format": STORE_FORMAT, "creating": True},
                            storage_options=remote_options(url))
    _write_images(group, index, params, limit)
