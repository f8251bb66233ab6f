"""Checked reads of a teacher group: view parameters, image status, stored components, targets.

Targets are stored as float32 zarr arrays ``r<res>/summary [N, K, Ds]`` and ``r<res>/patch
[N, K, h, w, D]`` through the ``eupe.features`` zarr codec (:mod:`eupe.store.zarr_codecs`): each
inner chunk holds one (image, view)'s codec components packed together, so plain zarr reads decoded
features and :meth:`GroupReader.read_parts` reads the components. :meth:`GroupReader.targets` is
the one call that turns them back into ``{"summary": [K, D], "patch": [K, h, w, D]}``; the trainer,
``verify`` and ``stats`` use it. Every read goes through a chunk check first (:mod:`.checks`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np
import zarr

from eupe.store.fastread import Reader, Unsupported, read_components, reader_for
from eupe.store.layout import FAILED, PENDING, StoreIntegrityError, StoreLookupError
from eupe.store.teacher_group.checks import ChunkChecks
from eupe.store.teacher_group.chunks import ChunkProgress, chunk_region
from eupe.store.teacher_group.handle import GroupHandle
from eupe.store.teacher_group.identity import resolution_group_name

_META_CACHE = 64  # chunks whose views/status a reader keeps


class GroupReader:
    """Reads one teacher group's (or view block's) arrays, each chunk checked before its first read.

    ``block_reader(view)`` is the reader of the block holding global view ``view`` (another block's
    views are read there)."""

    def __init__(self, group: GroupHandle, checks: ChunkChecks, chunks: ChunkProgress,
                 block_reader: Callable[[int], GroupReader]) -> None:
        self._group = group
        self._checks = checks
        self._chunks = chunks
        self._block_reader = block_reader
        self._meta: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._fast: dict[int, dict[str, Reader]] = {}

    # -- per image ----------------------------------------------------------------------------

    def chunk_meta(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(views [C, K, VIEW_DIM] float64, status [C] uint8) of a done chunk, read once and kept."""
        if chunk not in self._meta:
            self._checks.require_chunk(chunk, ["views", "status"])
            region = chunk_region(self._group.store, chunk)
            self._meta[chunk] = (np.asarray(self._group.array("views")[region]),
                                 np.asarray(self._group.array("status")[region]))
            if len(self._meta) > _META_CACHE:
                self._meta.popitem(last=False)
        return self._meta[chunk]

    def views(self, row: int) -> np.ndarray:
        """[K, VIEW_DIM] float64 parameters of this group's (or block's) own views of one image."""
        chunk, i = divmod(row, self._group.store.params.images_per_chunk)
        return self.chunk_meta(chunk)[0][i]

    def status(self, done: np.ndarray | None = None) -> np.ndarray:
        """[N] uint8 status of every image (files checked); images of chunks not done are PENDING.

        ``done`` (from ``ChunkProgress.done_flags``) saves reading the manifest again when the caller has it."""
        done = self._chunks.done_flags() if done is None else done
        for chunk in np.flatnonzero(done):
            self._checks.require_chunk(int(chunk), ["status"])
        status = np.asarray(self._group.array("status")[:])  # one read; every done chunk's file was checked
        status[~np.repeat(done, self._group.store.params.images_per_chunk)[: len(status)]] = PENDING
        return status

    def failures(self, status: np.ndarray | None = None) -> list[tuple[str, str]]:
        """(image key, reason) of every image that failed to decode (``status``: see :meth:`status`)."""
        status = self.status() if status is None else status
        rows = np.flatnonzero(status == FAILED)
        errors = self._group.array("error")[:] if len(rows) else []
        return [(str(self._group.store.keys[r]), str(errors[r])) for r in rows]

    # -- targets ------------------------------------------------------------------------------

    def targets(self, rows: int | slice, resolution: int, view: int | slice = slice(None)) -> dict[str, np.ndarray]:
        """Decoded targets of one image: {"summary": [K, D], "patch": [K, h, w, D]} of this group's own
        views, or of one global view (an int, see :meth:`read_parts`); a slice of rows (e.g. a chunk's
        :func:`~.chunks.chunk_region`) adds the leading image axis."""
        return self.decode(self.read_parts(rows, resolution, view), resolution)

    def target_names(self, resolution: int) -> dict[str, list[str]]:
        prefix = f"{resolution_group_name(resolution)}/"
        names = [n for n in self._group.array_names if n.startswith(prefix)]
        return {kind: [n for n in names if n.split("/")[1] == kind] for kind in ("summary", "patch")}

    def target_arrays(self, resolution: int) -> dict[str, zarr.Array]:
        """{"summary"|"patch": float32 zarr array} of one resolution (unchecked zarr handles: indexing
        them decodes through the ``eupe.features`` zarr codec, bit for bit as :meth:`decode`)."""
        return {kind: self._group.array(names[0]) for kind, names in self.target_names(resolution).items()}

    def fast_readers(self, resolution: int) -> dict[str, Reader]:
        """Direct single-view readers of the summary and patch arrays, local or on object storage."""
        if resolution not in self._fast:
            try:
                self._fast[resolution] = {kind: reader_for(a) for kind, a in self.target_arrays(resolution).items()}
            except Unsupported as e:
                raise StoreIntegrityError(f"{self._group.group.path}/r{resolution}: {e}; its zarr.json was "
                                          "edited") from None
        return self._fast[resolution]

    def read_parts(self, rows: int | slice, resolution: int, view: int | slice = slice(None)) -> dict[str, dict]:
        """Stored components ``{kind: {component: array}}`` of rows x views (checked), shaped like
        numpy indexing of ``[N, K, *suffix]`` (an int drops its axis); one (row, view) is one read
        per kind.

        An int ``view`` is a global view index (it may lie in a view block); a slice selects among
        this group's own views."""
        group = self._group
        self._check_lookup(rows, resolution)
        if isinstance(view, (int, np.integer)):
            if not group.view_start <= view < group.view_stop:
                return self._block_reader(int(view)).read_parts(rows, resolution, int(view))
            view = int(view) - group.view_start
        names = self.target_names(resolution)
        for chunk in self._chunks_of(rows):
            self._checks.require_chunk(chunk, names["summary"] + names["patch"])
        readers = self.fast_readers(resolution)
        if isinstance(rows, (int, np.integer)) and isinstance(view, int):
            return read_components(readers, int(rows), view)
        row_list = [int(rows)] if isinstance(rows, (int, np.integer)) else range(*rows.indices(group.store.num_images))
        view_list = [view] if isinstance(view, int) else range(*view.indices(group.block_views))
        return _stacked(readers, row_list, view_list, isinstance(rows, (int, np.integer)), isinstance(view, int))

    def decode(self, parts: dict[str, dict], resolution: int) -> dict[str, np.ndarray]:
        """Stored components -> float32 targets; the one decode call shared by every reader."""
        h, w = self._group.grids[resolution]
        summary = self._group.codec.decode_vector(parts["summary"])
        patch = self._group.codec.decode(parts["patch"])
        return {"summary": summary, "patch": patch.reshape(*patch.shape[:-2], h, w, patch.shape[-1])}

    def forget(self, chunk: int) -> None:
        """Drop what this reader knows of a chunk this process rewrites (metadata, open shard files)."""
        self._meta.pop(chunk, None)
        for readers in self._fast.values():
            for reader in readers.values():
                reader.forget(chunk)  # one shard per chunk of images

    def _check_lookup(self, rows: int | slice, resolution: int) -> None:
        """A row or resolution the group does not hold: StoreLookupError naming those it does."""
        group = self._group
        if resolution not in group.grids:
            raise StoreLookupError(f"teacher {group.name!r} holds resolutions "
                                   f"{', '.join(map(str, group.resolutions))}, not {resolution}")
        n = group.store.num_images
        if isinstance(rows, (int, np.integer)) and not 0 <= rows < n:
            raise StoreLookupError(f"row {rows} is not in the store: it holds {n} images (rows 0..{n - 1})")

    def _chunks_of(self, rows: int | slice) -> range:
        per = self._group.store.params.images_per_chunk
        if isinstance(rows, (int, np.integer)):
            return range(int(rows) // per, int(rows) // per + 1)
        start, stop, _ = rows.indices(self._group.store.num_images)
        return range(start // per, -(-stop // per))


def _stacked(readers: dict[str, Reader], row_list: list[int] | range, view_list: list[int] | range,
             drop_row: bool, drop_view: bool) -> dict[str, dict]:
    """Components of rows x views, one read each, stacked to ``[rows, views, *suffix]`` with the
    row and/or view axis dropped (an int index)."""
    grid = [[read_components(readers, r, v) for v in view_list] for r in row_list]
    out = {kind: {n: np.stack([np.stack([cell[kind][n] for cell in line]) for line in grid])
                  for n in grid[0][0][kind]} if grid and grid[0] else {} for kind in readers}
    squeeze = (0,) if drop_row else ()
    squeeze += (len(squeeze),) if drop_view else ()
    return {kind: {n: a.reshape([s for i, s in enumerate(a.shape) if i not in squeeze]) for n, a in parts.items()}
            for kind, parts in out.items()}
