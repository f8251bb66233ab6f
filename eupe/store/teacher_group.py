"""One teacher's part of a feature store: identity, chunk writes with manifests, checked reads.

``TeacherGroup.write_chunk`` writes every array of one chunk of images, flushes the files, and
only then records the chunk's manifest row (its completion record, ``eupe.store.manifest``).
Every read goes through a chunk check first: a chunk that is not done, or whose files are
missing, resized, moved or altered, is refused with ``StoreIntegrityError`` -- a missing file
never decodes as zeros. The group's attributes and array metadata are fingerprinted when the
group is created; opening a group whose fingerprint no longer matches is refused, naming what
changed. ``TeacherGroup.targets`` is the one call that turns stored components back into
``{"summary": [K, D], "patch": [K, h, w, D]}``; the trainer, ``verify`` and ``stats`` use it.

View blocks. A teacher group holds the views ``0..K-1`` it was created with (K: the store's
``views_per_image``). Growing a store (``extract --views K2``) adds a *view block*
``blocks/<K>/`` holding views ``K..K2-1`` of every image: the same arrays, manifest and checks,
shaped ``[N, K2-K, ...]``, fingerprinted together with its parent's fingerprint and its view
range. View ``v`` of an image is drawn from (seed, key, v) alone, so a grown store holds exactly
the values a store made with K2 views from the start would hold, and the old chunks are never
touched. ``TeacherGroup.blocks`` lists the teacher's own views first, then each block by start;
an integer view index is always global (``read_parts(row, r, 6)`` reads block ``4``'s third view).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import zarr

from eupe.store import consolidated, dims, manifest
from eupe.store.codecs import Codec
from eupe.store.fastread import Reader, Unsupported, read_components, reader_for, write_shard
from eupe.store.layout import (
    FAILED, MANIFEST, OK, PENDING, TARGET_ZSTD_LEVEL, StoreIntegrityError, StoreLookupError, StoreMismatchError,
    changed_keys, compressors, differences, failpoint, fsync_paths, publish_dir, remove_stale_staging, sha256_of,
    staging_name,
)
from eupe.store.zarr_codecs import FeatureCodec
from eupe.views import VIEW_DIM, VIEW_FIELDS

CLAIMS = "claims"  # a zarr group holding rank-<r>.json claims of running extractions
BLOCKS = "blocks"  # view blocks added when a store grows: blocks/<first view>/
IDENTITY_KEYS = ("name", "weights_sha256", "preprocessing", "resolutions", "grids", "dim", "summary_dim", "codec")
_META_CACHE = 64  # chunks whose views/status a reader keeps
DECODING_NOTE = ("summary [N, K, D] and patch [N, K, h, w, D] are float32 features: zarr decodes them through "
                 "the 'eupe.features' codec, which the eupe package registers with zarr (pip install eupe); "
                 "plain zarr checks crc32c checksums but not the store's manifest (read through "
                 "eupe.store.FeatureStore for that)")


def resolution_group_name(resolution: int) -> str:
    return f"r{resolution}"


@dataclass(frozen=True)
class TeacherIdentity:
    """What a teacher group was built with; a later run must match it to add to the group."""

    name: str
    fingerprint: str
    preprocessing: dict
    resolutions: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    dim: int  # patch token width
    summary_dim: int  # summary token width (PE-core's projected embedding is narrower than its patches)
    codec: dict

    def to_attrs(self) -> dict:
        return {
            "name": self.name, "weights_sha256": self.fingerprint, "preprocessing": self.preprocessing,
            "resolutions": list(self.resolutions), "grids": [list(g) for g in self.grids],
            "dim": self.dim, "summary_dim": self.summary_dim, "codec": self.codec,
        }


Targets = Union[np.ndarray, Mapping[str, np.ndarray]]  # float32 features, or the codec's components of them


@dataclass
class ChunkResult:
    """Teacher outputs for one chunk of images (rows whose status is FAILED hold zeros).

    ``summary``/``patch`` hold, per resolution, either the codec's components already encoded
    (``{name: [C, K, *suffix]}``, what extraction passes: it encodes on the teacher's device) or
    float32 features (``[C, K, Ds]`` / ``[C, K, T, D]``), which ``write_chunk`` encodes with numpy.
    """

    chunk: int
    views: np.ndarray  # [C, K, VIEW_DIM] float64
    status: np.ndarray  # [C] uint8
    errors: list[str]  # [C]
    summary: dict[int, Targets]  # resolution -> components {name: [C, K, *suffix]} or [C, K, Ds] float32
    patch: dict[int, Targets]  # resolution -> components {name: [C, K, *suffix]} or [C, K, T, D] float32


def chunk_array_names(resolutions: list[int], codec: Codec, dim: int, summary_dim: int,
                      grids: dict[int, tuple[int, int]]) -> list[str]:
    """Every array written per chunk of images, in manifest column order (``codec``, ``dim``,
    ``summary_dim`` and ``grids`` do not change the names: one summary and one patch array per
    resolution, whatever the codec's components)."""
    names = ["views", "status", "error"]
    for resolution in resolutions:
        names += [f"{resolution_group_name(resolution)}/summary", f"{resolution_group_name(resolution)}/patch"]
    return names


class TeacherGroup:
    """Reads and writes one teacher's arrays in a feature store.

    Targets are stored as float32 zarr arrays ``r<res>/summary [N, K, Ds]`` and ``r<res>/patch
    [N, K, h, w, D]`` through the ``eupe.features`` zarr codec (:mod:`eupe.store.zarr_codecs`):
    each inner chunk holds one (image, view)'s codec components packed together, so plain zarr
    reads decoded features and this class reads the components (:meth:`read_parts`).
    """

    def __init__(self, store: Any, group: zarr.Group, parent: "TeacherGroup | None" = None) -> None:
        self.store = store  # the FeatureStore it belongs to
        self.group = group
        self.parent = parent  # the teacher group a view block belongs to (None: the group itself)
        self.attrs = dict(group.attrs)
        if not self.attrs.get("identity_sha256"):  # "" while a remote group is being created
            raise StoreIntegrityError(f"teacher group {group.path} has no identity fingerprint: its creation was "
                                      "interrupted (re-run the extract command), it was not created by this "
                                      "version of eupe, or its attributes were edited")
        if parent is not None:  # a view block shares its teacher's identity
            self.attrs.update({k: parent.attrs[k] for k in IDENTITY_KEYS})
        self.view_start = int(self.attrs.get("view_start", 0))
        self.view_stop = int(self.attrs.get("view_stop", store.params.views_per_image))
        self.codec = Codec.from_dict(self.attrs["codec"])
        self.resolutions = [int(r) for r in self.attrs["resolutions"]]
        self.grids = {r: tuple(g) for r, g in zip(self.resolutions, self.attrs["grids"])}
        self.dim = int(self.attrs["dim"])
        self.summary_dim = int(self.attrs["summary_dim"])
        self.array_names: list[str] = list(self.attrs["chunk_arrays"])
        self.fingerprint: str = self.attrs["identity_sha256"]
        self._arrays: dict[str, zarr.Array] = {}
        self._checked: set[tuple[int, str]] = set()
        self._meta: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._fast: dict[int, dict[str, dict[str, Reader]] | None] = {}
        self._block_list: list[TeacherGroup] | None = None
        self._check_fingerprint()

    # -- identity ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.attrs["name"])

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            try:
                # every chunk gets its file, even when it equals the fill value (all images failed):
                # a chunk's manifest lists every file, so an absent one always means damage
                self._arrays[name] = self.group[name].with_config({"write_empty_chunks": True})
            except KeyError:
                raise StoreIntegrityError(f"{self.group.path}/{name} is missing (its zarr.json was deleted)") from None
        return self._arrays[name]

    @property
    def block_views(self) -> int:
        """Views this group (or view block) holds itself per image: global views view_start..view_stop-1."""
        return self.view_stop - self.view_start

    @property
    def views_per_image(self) -> int:
        """Views per image the teacher holds over all its view blocks (:attr:`total_views`; a grown
        teacher counts its grown views, a view block its own: :attr:`block_views`). How many of them
        are complete: :meth:`complete_views`."""
        return self.total_views if self.parent is None else self.block_views

    def identity_document(self) -> dict:
        """What the fingerprint covers (see :func:`identity_document`)."""
        return identity_document(self.group, self.store.fingerprint, self.attrs, self.array_names, self._block_key())

    def _block_key(self) -> dict | None:
        if self.parent is None:
            return None
        return {"parent": self.parent.fingerprint, "views": [self.view_start, self.view_stop]}

    def _check_fingerprint(self) -> None:
        document = self.identity_document()
        if sha256_of(document) == self.fingerprint:
            return
        written = dict(self.array(MANIFEST).attrs).get("identity", {})
        changed = changed_keys(written, document)
        raise StoreIntegrityError(
            f"teacher group {self.group.path}: attributes or array metadata changed since it was written "
            f"({', '.join(changed) or 'the fingerprint itself'}); the cached targets cannot be trusted. "
            "Restore the original zarr.json files or re-extract into a new store")

    def check_identity(self, identity: TeacherIdentity) -> None:
        problems = differences({k: self.attrs.get(k) for k in IDENTITY_KEYS}, identity.to_attrs(),
                               f"teachers/{identity.name}")
        if problems:
            raise StoreMismatchError(
                f"teacher {identity.name!r} is already in the store with other settings "
                "(weights, preprocessing, resolutions or codec); use the same settings or another --out:\n  "
                + "\n  ".join(problems)
            )

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def create(cls, store: Any, identity: TeacherIdentity, codec: Codec) -> "TeacherGroup":
        """Create every array of a new teacher group atomically (staged, then renamed into place).

        Two processes creating the same teacher at once both build a staged copy; the first
        rename wins and the other discards its copy and opens the winner's.
        """
        teachers = store.group["teachers"]
        root = store.local_root
        staged_name = identity.name if root is None else staging_name(identity.name)
        group = teachers.create_group(staged_name, overwrite=root is None)
        _create_arrays(group, store, identity.to_attrs(), codec)
        failpoint("teacher-staged")
        if root is not None:
            publish_dir(root / "teachers" / staged_name, root / "teachers" / identity.name)
            remove_stale_staging(root / "teachers" / identity.name)
        consolidated.refresh(store.group.store)
        return store.teacher(identity.name)

    # -- view blocks ------------------------------------------------------------------------

    @property
    def blocks(self) -> list["TeacherGroup"]:
        """The teacher's own views, then each view block by first view (listed once; see
        :meth:`refresh_blocks`). A view block lists only itself."""
        if self.parent is not None:
            return [self]
        if self._block_list is None:
            self._block_list = self._list_blocks()
        return self._block_list

    def refresh_blocks(self) -> list["TeacherGroup"]:
        """List the view blocks again (another process may have added one)."""
        self._block_list = None
        return self.blocks

    def _list_blocks(self) -> list["TeacherGroup"]:
        try:
            children = dict(self.group[BLOCKS].groups())
        except KeyError:
            return [self]
        found = [self]
        for start in sorted(int(n) for n in children if n.isdigit()):
            if not dict(children[str(start)].attrs).get("identity_sha256"):
                continue  # a remote block still being created (a local one is only visible once complete)
            block = TeacherGroup(self.store, children[str(start)], self)
            if block.view_start != found[-1].view_stop:
                raise StoreIntegrityError(f"{block.group.path} holds views {block.view_start}..{block.view_stop - 1} "
                                          f"but views start at {found[-1].view_stop} there; its attributes were "
                                          "edited or a block was removed: restore it or re-extract")
            found.append(block)
        return found

    @property
    def total_views(self) -> int:
        """Views per image over all blocks, complete or not."""
        return self.blocks[-1].view_stop

    def complete_views(self, done: np.ndarray | None = None) -> int:
        """Views per image in the leading blocks whose every chunk is done (what a trainer may use).

        ``done`` (this group's :meth:`done_flags`) saves reading its manifest again when the caller has it."""
        count = 0
        for block in self.blocks:
            flags = done if block is self and done is not None else block.done_flags()
            if not flags.all():
                break
            count = block.view_stop
        return count

    def add_views(self, stop: int, codec: Codec) -> list["TeacherGroup"]:
        """Grow the teacher to ``stop`` views per image: a new view block (atomic; a process that
        loses the race to add the same block uses the winner's). Old chunks are never touched."""
        while self.refresh_blocks()[-1].view_stop < stop:
            _create_block(self, self.total_views, stop, codec)
        return self.blocks

    def block_of(self, view: int) -> "TeacherGroup":
        """The block holding global view ``view``."""
        for block in self.blocks:
            if block.view_start <= view < block.view_stop:
                return block
        raise StoreLookupError(f"{self.group.path} holds views 0..{self.total_views - 1} per image; view {view} "
                               "is not in the store")

    def view_params(self, row: int, view: int) -> np.ndarray:
        """[VIEW_DIM] float64 parameters of global view ``view`` of image ``row``."""
        block = self.block_of(view)
        return block.views(row)[view - block.view_start]

    @property
    def claims_dir(self) -> Path | None:
        """Where running extractions record their rank (local stores only)."""
        root = getattr(self.group.store, "root", None)
        return None if root is None else Path(root) / self.group.path / CLAIMS

    # -- progress ---------------------------------------------------------------------------

    @property
    def num_chunks(self) -> int:
        return self.store.num_chunks

    def manifest_rows(self) -> np.ndarray:
        """[n_chunks, n_arrays, 3] uint64 completion records (zeros: chunk not done)."""
        return np.asarray(self.array(MANIFEST)[:])

    def done_flags(self) -> np.ndarray:
        return self.manifest_rows()[:, 0, manifest.SIZE] > 0

    def pending_chunks(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """Chunks this rank owns (chunk % world_size == rank) that are not complete yet."""
        done = self.done_flags()
        return [c for c in range(len(done)) if c % world_size == rank and not done[c]]

    def images_done(self, done: np.ndarray | None = None) -> int:
        """How many images lie in chunks that are done (``done``: :meth:`done_flags`, read when not given)."""
        done = self.done_flags() if done is None else done
        return sum(len(self.store.chunk_rows(int(c))) for c in np.flatnonzero(done))

    def done_set_digest(self) -> str:
        """Fingerprint of which chunks are done and what they hold (statistics record it)."""
        return sha256_of(self.manifest_rows().tolist())

    # -- writing ----------------------------------------------------------------------------

    def write_chunk(self, result: ChunkResult) -> int:
        """Write all arrays of one chunk, flush them, then record the chunk's manifest row; returns bytes."""
        region = self._region(result.chunk)
        self.array("views")[region] = result.views
        self.array("status")[region] = result.status
        self.array("error")[region] = np.asarray(result.errors, dtype=str)
        for resolution in self.resolutions:
            self._write_targets(resolution, region, result.summary[resolution], result.patch[resolution])
        fsync_paths([manifest.local_path(self.array(n), result.chunk) for n in self.array_names])
        failpoint("chunk-data")
        rows = np.stack([manifest.record(self.array(n), n, result.chunk, self.fingerprint) for n in self.array_names])
        self.array(MANIFEST)[result.chunk] = rows
        fsync_paths([manifest.local_path(self.array(MANIFEST), result.chunk)])
        failpoint("chunk-done")
        self._forget(result.chunk)
        return int(rows[:, manifest.SIZE].sum())

    def reset_chunk(self, chunk: int) -> None:
        """Drop a chunk's completion record so the next extraction redoes it (--retry-failed)."""
        path = manifest.local_path(self.array(MANIFEST), chunk)
        if path is not None:
            path.unlink(missing_ok=True)
        else:
            self.array(MANIFEST)[chunk] = 0
        self._forget(chunk)

    def _region(self, chunk: int) -> slice:
        rows = self.store.chunk_rows(chunk)
        return slice(rows.start, rows.stop)

    def _write_targets(self, resolution: int, region: slice, summary: Targets, patch: Targets) -> None:
        """Write one chunk's components (encoding float32 features with numpy first when given those)."""
        prefix = resolution_group_name(resolution)
        summary = summary if isinstance(summary, Mapping) else self.codec.encode_vector(summary)
        patch = patch if isinstance(patch, Mapping) else self.codec.encode(patch)
        chunk = region.start // self.store.params.images_per_chunk
        for kind, parts in (("summary", summary), ("patch", patch)):
            write_shard(self.array(f"{prefix}/{kind}"), chunk, {n: np.asarray(p) for n, p in parts.items()})

    def _forget(self, chunk: int) -> None:
        """Drop what this process knows of a chunk it rewrites (checks, metadata, open shard files)."""
        self._checked = {c for c in self._checked if c[0] != chunk}
        self._meta.pop(chunk, None)
        for readers in self._fast.values():
            for reader in readers.values():
                reader.forget(chunk)  # one shard per chunk of images

    # -- checked reading --------------------------------------------------------------------

    def require_chunk(self, chunk: int, names: list[str] | None = None) -> None:
        """Refuse to read a chunk that is not done or whose files do not match its manifest."""
        names = names or self.array_names
        todo = [n for n in names if (chunk, n) not in self._checked]
        if not todo:
            return
        row = np.asarray(self.array(MANIFEST)[chunk])
        if row[0, manifest.SIZE] == 0:
            raise StoreIntegrityError(f"{self.group.path}: chunk {chunk} (images {self._span(chunk)}) is not "
                                      "complete; finish the extraction (re-run the same extract command)")
        for name in todo:
            problem = manifest.check_quick(self.array(name), name, chunk, row[self.array_names.index(name)],
                                           self.fingerprint)
            if problem:
                raise StoreIntegrityError(f"{self.group.path}/{name} chunk {chunk} (images {self._span(chunk)}): "
                                          f"{problem}; run `eupe-cache verify` and re-extract into a new store")
            self._checked.add((chunk, name))

    def _span(self, chunk: int) -> str:
        rows = self.store.chunk_rows(chunk)
        return f"{rows.start}..{rows.stop - 1}"

    def chunk_meta(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(views [C, K, VIEW_DIM] float64, status [C] uint8) of a done chunk, read once and kept."""
        if chunk not in self._meta:
            self.require_chunk(chunk, ["views", "status"])
            region = self._region(chunk)
            self._meta[chunk] = (np.asarray(self.array("views")[region]), np.asarray(self.array("status")[region]))
            if len(self._meta) > _META_CACHE:
                self._meta.popitem(last=False)
        return self._meta[chunk]

    def views(self, row: int) -> np.ndarray:
        """[K, VIEW_DIM] float64 parameters of this group's (or block's) own views of one image."""
        chunk, i = divmod(row, self.store.params.images_per_chunk)
        return self.chunk_meta(chunk)[0][i]

    def status(self, done: np.ndarray | None = None) -> np.ndarray:
        """[N] uint8 status of every image (files checked); images of chunks not done are PENDING.

        ``done`` (from :meth:`done_flags`) saves reading the manifest again when the caller has it."""
        done = self.done_flags() if done is None else done
        for chunk in np.flatnonzero(done):
            self.require_chunk(int(chunk), ["status"])
        status = np.asarray(self.array("status")[:])  # one read; every done chunk's file was checked
        status[~np.repeat(done, self.store.params.images_per_chunk)[: len(status)]] = PENDING
        return status

    def targets(self, row: int, resolution: int, view: int | slice = slice(None)) -> dict[str, np.ndarray]:
        """Decoded targets of one image: {"summary": [K, D], "patch": [K, h, w, D]} of this group's own
        views, or of one global view (an int, see :meth:`read_parts`)."""
        return self.decode(self.read_parts(row, resolution, view), resolution)

    def target_names(self, resolution: int) -> dict[str, list[str]]:
        prefix = f"{resolution_group_name(resolution)}/"
        names = [n for n in self.array_names if n.startswith(prefix)]
        return {kind: [n for n in names if n.split("/")[1] == kind] for kind in ("summary", "patch")}

    def target_arrays(self, resolution: int) -> dict[str, zarr.Array]:
        """{"summary"|"patch": float32 zarr array} of one resolution (unchecked zarr handles: indexing
        them decodes through the ``eupe.features`` zarr codec, bit for bit as :meth:`decode`)."""
        return {kind: self.array(names[0]) for kind, names in self.target_names(resolution).items()}

    def fast_readers(self, resolution: int) -> dict[str, Reader]:
        """Direct single-view readers of the summary and patch arrays, local or on object storage."""
        if resolution not in self._fast:
            try:
                self._fast[resolution] = {kind: reader_for(a) for kind, a in self.target_arrays(resolution).items()}
            except Unsupported as e:
                raise StoreIntegrityError(f"{self.group.path}/r{resolution}: {e}; its zarr.json was edited") from None
        return self._fast[resolution]

    def read_parts(self, rows: int | slice, resolution: int, view: int | slice = slice(None)) -> dict[str, dict]:
        """Stored components ``{kind: {component: array}}`` of rows x views (checked), shaped like
        numpy indexing of ``[N, K, *suffix]`` (an int drops its axis); one (row, view) is one read
        per kind.

        An int ``view`` is a global view index (it may lie in a view block); a slice selects among
        this group's own views."""
        self._check_lookup(rows, resolution)
        if isinstance(view, (int, np.integer)):
            if not self.view_start <= view < self.view_stop:
                return self.block_of(int(view)).read_parts(rows, resolution, int(view))
            view = int(view) - self.view_start
        names = self.target_names(resolution)
        for chunk in self._chunks_of(rows):
            self.require_chunk(chunk, names["summary"] + names["patch"])
        readers = self.fast_readers(resolution)
        if isinstance(rows, (int, np.integer)) and isinstance(view, int):
            return read_components(readers, int(rows), view)
        row_list = [int(rows)] if isinstance(rows, (int, np.integer)) else range(*rows.indices(self.store.num_images))
        view_list = [view] if isinstance(view, int) else range(*view.indices(self.block_views))
        grid = [[read_components(readers, r, v) for v in view_list] for r in row_list]
        out = {kind: {n: np.stack([np.stack([cell[kind][n] for cell in line]) for line in grid])
                      for n in grid[0][0][kind]} if grid and grid[0] else {} for kind in readers}
        squeeze = (0,) if isinstance(rows, (int, np.integer)) else ()
        squeeze += (len(squeeze),) if isinstance(view, int) else ()
        return {kind: {n: a.reshape([s for i, s in enumerate(a.shape) if i not in squeeze]) for n, a in parts.items()}
                for kind, parts in out.items()}

    def _check_lookup(self, rows: int | slice, resolution: int) -> None:
        """A row or resolution the group does not hold: StoreLookupError naming those it does."""
        if resolution not in self.grids:
            raise StoreLookupError(f"teacher {self.name!r} holds resolutions "
                                   f"{', '.join(map(str, self.resolutions))}, not {resolution}")
        n = self.store.num_images
        if isinstance(rows, (int, np.integer)) and not 0 <= rows < n:
            raise StoreLookupError(f"row {rows} is not in the store: it holds {n} images (rows 0..{n - 1})")

    def __repr__(self) -> str:
        from eupe.store.notebook import group_text

        return group_text(self)

    def _repr_html_(self) -> str:
        from eupe.store.notebook import as_html

        return as_html(repr(self))

    def _chunks_of(self, rows: int | slice) -> range:
        per = self.store.params.images_per_chunk
        if isinstance(rows, int):
            return range(rows // per, rows // per + 1)
        start, stop, _ = rows.indices(self.store.num_images)
        return range(start // per, -(-stop // per))

    def decode(self, parts: dict[str, dict], resolution: int) -> dict[str, np.ndarray]:
        """Stored components -> float32 targets; the one decode call shared by every reader."""
        h, w = self.grids[resolution]
        summary = self.codec.decode_vector(parts["summary"])
        patch = self.codec.decode(parts["patch"])
        return {"summary": summary, "patch": patch.reshape(*patch.shape[:-2], h, w, patch.shape[-1])}

    def failures(self, status: np.ndarray | None = None) -> list[tuple[str, str]]:
        """(image key, reason) of every image that failed to decode (``status``: see :meth:`status`)."""
        status = self.status() if status is None else status
        rows = np.flatnonzero(status == FAILED)
        errors = self.array("error")[:] if len(rows) else []
        return [(str(self.store.keys[r]), str(errors[r])) for r in rows]

    def counts(self, rows: np.ndarray | None = None, status: np.ndarray | None = None) -> dict[str, int]:
        """Images, chunks and bytes written, counting only chunks that are done (``rows``: the
        manifest, ``status``: see :meth:`status`; read here when not given)."""
        rows = self.manifest_rows() if rows is None else rows
        done = rows[:, 0, manifest.SIZE] > 0
        status = self.status(done) if status is None else status
        return {"images": int(len(status)), "images_done": self.images_done(done), "ok": int((status == OK).sum()),
                "failed": int((status == FAILED).sum()), **self.chunk_counts(rows)}

    def chunk_counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        """Chunks, done chunks and bytes written, from the manifest alone (``rows``: read when not given)."""
        rows = self.manifest_rows() if rows is None else rows
        done = rows[:, 0, manifest.SIZE] > 0
        return {"chunks": int(len(done)), "chunks_done": int(done.sum()),
                "bytes_written": int(rows[:, :, manifest.SIZE].sum())}


def identity_document(group: zarr.Group, store_fingerprint: str, attrs: dict, names: list[str],
                      block: dict | None = None) -> dict:
    """What a teacher group's fingerprint covers: its identity attributes, the store's identity,
    and the metadata (shape, dtype, chunking, codecs, fill value) of every array; a view block's
    also covers its parent's fingerprint and its view range (``block``)."""
    arrays = {}
    coordinates = attrs.get(dims.COORDINATES)  # absent in groups made before coordinates existed
    for name in [*names, MANIFEST, *sorted(coordinates or {})]:
        try:
            meta = group[name].metadata.to_dict()
        except KeyError:
            raise StoreIntegrityError(f"{group.path}/{name} is missing (its zarr.json was deleted)") from None
        meta.pop("attributes", None)
        arrays[name] = meta
    document = {"teacher": {k: attrs.get(k) for k in IDENTITY_KEYS}, "store": store_fingerprint,
                "chunk_arrays": list(names), "arrays": arrays}
    if block is not None:
        document["block"] = block
    if coordinates is not None:
        document["coordinates"] = coordinates
    return document


def _create_arrays(group: zarr.Group, store: Any, identity: dict, codec: Codec,
                   parent: TeacherGroup | None = None, views: tuple[int, int] | None = None) -> None:
    """Every array of a new teacher group (or of a view block of ``parent`` holding global views
    ``views``), then its attributes and fingerprint, last. ``identity``: TeacherIdentity.to_attrs()."""
    start, stop = views or (0, store.params.views_per_image)
    n, k, c = store.num_images, stop - start, store.params.images_per_chunk
    axis = dims.view_dim(parent is not None)
    group.create_array("views", shape=(n, k, VIEW_DIM), dtype="float64", chunks=(c, k, VIEW_DIM),
                       compressors=compressors(), fill_value=np.nan,
                       dimension_names=(dims.IMAGE, axis, dims.VIEW_FIELD))
    group.create_array("status", shape=(n,), dtype="uint8", chunks=(c,), compressors=compressors(), fill_value=0,
                       dimension_names=(dims.IMAGE,))
    group.create_array("error", shape=(n,), dtype=str, chunks=(c,), dimension_names=(dims.IMAGE,))
    if parent is None:
        group.create_group(CLAIMS)
    grids = {int(r): tuple(g) for r, g in zip(identity["resolutions"], identity["grids"])}
    for resolution, grid in grids.items():
        _create_targets(group.require_group(resolution_group_name(resolution)), codec, n, k, c, grid,
                        identity["dim"], identity["summary_dim"], axis)
    names = chunk_array_names(list(grids), codec, identity["dim"], identity["summary_dim"], grids)
    group.create_array(MANIFEST, shape=(store.num_chunks, len(names), manifest.ROW_FIELDS), dtype="uint64",
                       chunks=(1, len(names), manifest.ROW_FIELDS), compressors=compressors(), fill_value=0,
                       dimension_names=(dims.CHUNK, dims.CHUNK_ARRAY, dims.RECORD_FIELD))
    keys = None if parent is not None else store.keys  # a view block inherits its teacher's image coordinate
    coordinates = dims.write_coordinates(group, dims.coordinate_values(
        keys, (start, stop), parent is not None, list(VIEW_FIELDS), list(grids), names))
    own = identity if parent is None else {"name": identity["name"], "view_start": start, "view_stop": stop}
    group.attrs.update({**own, "chunk_arrays": names, dims.COORDINATES: coordinates, **dims.CF_COORDINATES,
                        "identity_sha256": ""})
    block = None if parent is None else {"parent": parent.fingerprint, "views": [start, stop]}
    document = identity_document(group, store.fingerprint, {**dict(group.attrs), **identity}, names, block)
    group[MANIFEST].attrs["identity"] = document  # a copy, to name what changed if attributes are edited
    failpoint("teacher-fingerprint")
    group.attrs["identity_sha256"] = sha256_of(document)  # written last


def _create_block(teacher: TeacherGroup, start: int, stop: int, codec: Codec) -> None:
    """Build view block ``blocks/<start>`` of views start..stop-1, staged and renamed into place
    locally (remote: written in place, its fingerprint last, by rank 0 only)."""
    root = teacher.store.local_root
    blocks = teacher.group.require_group(BLOCKS)
    name = str(start) if root is None else staging_name(str(start))
    identity = {k: teacher.attrs[k] for k in IDENTITY_KEYS}
    _create_arrays(blocks.create_group(name, overwrite=root is None), teacher.store, identity, codec, teacher,
                   (start, stop))
    failpoint("block-staged")
    if root is not None:
        final = root / teacher.group.path / BLOCKS / str(start)
        publish_dir(root / teacher.group.path / BLOCKS / name, final)
        remove_stale_staging(final)
    consolidated.refresh(teacher.store.group.store)


def _create_targets(group: zarr.Group, codec: Codec, n: int, k: int, c: int, grid: tuple[int, int], dim: int,
                    summary_dim: int, views: str = dims.VIEW) -> None:
    h, w = grid
    group.attrs.update({"grid": [h, w], "dim": dim, "summary_dim": summary_dim, "tokens": h * w,
                        "decoding": DECODING_NOTE})
    for kind, view_shape in (("summary", (summary_dim,)), ("patch", (h, w, dim))):
        # one shard file per chunk of images (one writer each); one inner chunk per view holding its
        # components together (one read per sample); plain zarr decodes it (eupe.features codec);
        # NaN: what plain zarr shows for a chunk not extracted yet
        group.create_array(kind, shape=(n, k, *view_shape), dtype="float32", shards=(c, k, *view_shape),
                           chunks=(1, 1, *view_shape), serializer=FeatureCodec(codec=codec, view_shape=view_shape),
                           compressors=compressors(TARGET_ZSTD_LEVEL), fill_value=np.nan,
                           dimension_names=dims.target_dims(kind, views))
