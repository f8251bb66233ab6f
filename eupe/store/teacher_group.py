"""One teacher's part of a feature store: identity, chunk writes, and decoding cached targets.

``TeacherGroup.write_chunk`` writes every array of one chunk of images, flushes the files,
and only then sets the chunk's ``done`` flag. ``TeacherGroup.targets`` is the single call
that turns stored components back into ``{"summary": [K, D], "patch": [K, h, w, D]}``; the
trainer, ``verify`` and ``stats`` all read through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import zarr

from eupe.store.codecs import Codec
from eupe.store.fastread import ShardedArrayReader, reader_or_none
from eupe.store.store import (
    FAILED, OK, StoreMismatchError, compressors, differences, fsync_paths, local_chunk_files,
)
from eupe.views import VIEW_DIM

if TYPE_CHECKING:
    from eupe.store.store import FeatureStore


def res_group_name(resolution: int) -> str:
    return f"r{resolution}"


@dataclass(frozen=True)
class TeacherIdentity:
    """What a teacher group was built with; a later run must match it to add to the group."""

    name: str
    fingerprint: str
    preprocessing: dict
    resolutions: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    dim: int
    codec: dict

    def to_attrs(self) -> dict:
        return {
            "name": self.name, "weights_sha256": self.fingerprint, "preprocessing": self.preprocessing,
            "resolutions": list(self.resolutions), "grids": [list(g) for g in self.grids],
            "dim": self.dim, "codec": self.codec,
        }


@dataclass
class ChunkResult:
    """Teacher outputs for one chunk of images (rows whose status is FAILED hold zeros)."""

    chunk: int
    views: np.ndarray  # [C, K, VIEW_DIM] float64
    status: np.ndarray  # [C] uint8
    errors: list[str]  # [C]
    summary: dict[int, np.ndarray]  # res -> [C, K, D] float32
    patch: dict[int, np.ndarray]  # res -> [C, K, T, D] float32


class TeacherGroup:
    """Reads and writes one teacher's arrays in a feature store.

    Codec components are stored as ``[N, K, *suffix]`` where ``suffix`` comes from
    ``codec.components(tokens, dim)`` and starts with the token axis; the summary token is
    encoded as T=1 and stored without that axis.
    """

    def __init__(self, store: "FeatureStore", group: zarr.Group) -> None:
        self.store = store
        self.group = group
        self.attrs = dict(group.attrs)
        self.codec = Codec.from_dict(self.attrs["codec"])
        self.resolutions = [int(r) for r in self.attrs["resolutions"]]
        self.grids = {r: tuple(g) for r, g in zip(self.resolutions, self.attrs["grids"])}
        self.dim = int(self.attrs["dim"])
        self._targets: dict[int, dict[str, dict[str, zarr.Array]]] = {}  # res -> kind -> component
        self._fast: dict[int, dict[str, dict[str, ShardedArrayReader]] | None] = {}

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def create(cls, store: "FeatureStore", identity: TeacherIdentity, codec: Codec) -> "TeacherGroup":
        """Create every array of a new teacher group; the identity attributes are written last."""
        group = store.group.require_group(f"teachers/{identity.name}")
        n, k, c = store.num_images, store.params.views_per_image, store.params.images_per_chunk
        group.create_array("views", shape=(n, k, VIEW_DIM), dtype="float64", chunks=(c, k, VIEW_DIM),
                           compressors=compressors(), fill_value=np.nan, overwrite=True)
        group.create_array("status", shape=(n,), dtype="uint8", chunks=(c,), compressors=compressors(),
                           fill_value=0, overwrite=True)
        group.create_array("error", shape=(n,), dtype=str, chunks=(c,), overwrite=True)
        group.create_array("done", shape=(store.num_chunks,), dtype="uint8", chunks=(1,), fill_value=0,
                           overwrite=True)
        for res, grid in zip(identity.resolutions, identity.grids):
            _create_targets(group.require_group(res_group_name(res)), codec, n, k, c, grid, identity.dim)
        group.attrs.update(identity.to_attrs())
        return cls(store, group)

    def check_identity(self, identity: TeacherIdentity) -> None:
        problems = differences(self.attrs, identity.to_attrs(), f"teachers/{identity.name}")
        if problems:
            raise StoreMismatchError(
                f"teacher {identity.name!r} is already in the store with other settings "
                "(weights, preprocessing, resolutions or codec); use the same settings or another --out:\n  "
                + "\n  ".join(problems)
            )

    # -- progress ---------------------------------------------------------------------------

    def done_flags(self) -> np.ndarray:
        return np.asarray(self.group["done"][:], dtype=bool)

    def pending_chunks(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """Chunks this rank owns (chunk % world_size == rank) that are not complete yet."""
        done = self.done_flags()
        return [c for c in range(len(done)) if c % world_size == rank and not done[c]]

    # -- writing ----------------------------------------------------------------------------

    def write_chunk(self, result: ChunkResult) -> None:
        """Write all arrays of one chunk, flush them, then mark the chunk done."""
        rows = self.store.chunk_rows(result.chunk)
        region = slice(rows.start, rows.stop)
        written = [self._write(self.group["views"], region, result.views),
                   self._write(self.group["status"], region, result.status)]
        self.group["error"][region] = np.asarray(result.errors, dtype=str)
        written.append(local_chunk_files(self.group["error"], (result.chunk,)))
        for res in self.resolutions:
            written += self._write_targets(res, region, result.summary[res], result.patch[res])
        fsync_paths(written)
        self.group["done"][result.chunk] = 1
        fsync_paths([local_chunk_files(self.group["done"], (result.chunk,))])

    def _write(self, array: zarr.Array, region: slice, values: np.ndarray):
        array[region] = values
        return local_chunk_files(array, (region.start // self.store.params.images_per_chunk,) + (0,) * (array.ndim - 1))

    def _write_targets(self, res: int, region: slice, summary: np.ndarray, patch: np.ndarray) -> list:
        group = self.group[res_group_name(res)]
        written = []
        for name, part in self.codec.encode_vector(summary).items():
            written.append(self._write(group[f"summary/{name}"], region, part))
        for name, part in self.codec.encode(patch).items():
            written.append(self._write(group[f"patch/{name}"], region, part))
        return written

    # -- reading ----------------------------------------------------------------------------

    def views(self, row: int) -> np.ndarray:
        """[K, VIEW_DIM] float64 view parameters of one image."""
        return self.group["views"][row]

    def status(self) -> np.ndarray:
        return np.asarray(self.group["status"][:])

    def targets(self, row: int, res: int, view: int | slice = slice(None)) -> dict[str, np.ndarray]:
        """Decoded targets of one image: {"summary": [K, D], "patch": [K, h, w, D]} (or one view)."""
        return self.decode(self.read_parts(row, res, view), res)

    def target_arrays(self, res: int) -> dict[str, dict[str, zarr.Array]]:
        """Array handles of the codec components, opened once (listing a group costs ~3 ms)."""
        if res not in self._targets:
            group = self.group[res_group_name(res)]
            self._targets[res] = {kind: dict(group[kind].arrays()) for kind in ("summary", "patch")}
        return self._targets[res]

    def fast_readers(self, res: int) -> dict[str, dict[str, ShardedArrayReader]] | None:
        """Direct single-view readers for local stores (None when any array needs zarr)."""
        if res not in self._fast:
            readers = {kind: {name: reader_or_none(arr) for name, arr in arrays.items()}
                       for kind, arrays in self.target_arrays(res).items()}
            ok = all(r is not None for kind in readers.values() for r in kind.values())
            self._fast[res] = readers if ok else None
        return self._fast[res]

    def read_parts(self, rows: int | slice, res: int, view: int | slice = slice(None)) -> dict[str, dict]:
        """Stored components of rows x views; one (row, view) takes the direct path when it can."""
        fast = self.fast_readers(res) if isinstance(rows, int) and isinstance(view, int) else None
        if fast is not None:
            return {kind: {name: r.read(rows, view) for name, r in readers.items()}
                    for kind, readers in fast.items()}
        return {kind: {name: arr[rows, view] for name, arr in arrays.items()}
                for kind, arrays in self.target_arrays(res).items()}

    def decode(self, parts: dict[str, dict], res: int) -> dict[str, np.ndarray]:
        """Stored components -> float32 targets; the one decode call shared by every reader."""
        h, w = self.grids[res]
        summary = self.codec.decode_vector(parts["summary"])
        patch = self.codec.decode(parts["patch"])
        return {"summary": summary, "patch": patch.reshape(*patch.shape[:-2], h, w, patch.shape[-1])}

    def failures(self) -> list[tuple[str, str]]:
        """(image key, reason) of every image that failed to decode."""
        rows = np.flatnonzero(self.status() == FAILED)
        errors = self.group["error"][:] if len(rows) else []
        return [(str(self.store.keys[r]), str(errors[r])) for r in rows]

    def counts(self) -> dict[str, int]:
        status = self.status()
        done = self.done_flags()
        return {"images": int(len(status)), "ok": int((status == OK).sum()),
                "failed": int((status == FAILED).sum()), "chunks": int(len(done)),
                "chunks_done": int(done.sum())}


def _create_targets(group: zarr.Group, codec: Codec, n: int, k: int, c: int, grid: tuple[int, int], dim: int) -> None:
    h, w = grid
    group.attrs.update({"grid": [h, w], "dim": dim, "tokens": h * w})
    for kind, specs in (("summary", codec.vector_components(dim)), ("patch", codec.components(h * w, dim))):
        sub = group.require_group(kind)
        for name, (dtype, suffix) in specs.items():
            # one shard file per chunk of images (one writer each); inner chunks of one view,
            # so reading a single (image, view) decodes only that view
            sub.create_array(name, shape=(n, k, *suffix), dtype=dtype, shards=(c, k, *suffix),
                             chunks=(1, 1, *suffix), compressors=compressors(), fill_value=0, overwrite=True)
