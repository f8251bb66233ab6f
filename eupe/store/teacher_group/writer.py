"""Writing a teacher group's chunks: every array of one chunk, flushed, then its manifest row.

:meth:`GroupWriter.write_chunk` writes every array of one chunk of images, flushes the files, and
only then records the chunk's manifest row (its completion record, ``eupe.store.manifest``), so a
run killed at any point leaves the chunk not done, never half-written and done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

from eupe.store import manifest
from eupe.store.fastread import write_shard
from eupe.store.layout import MANIFEST, failpoint, fsync_paths
from eupe.store.teacher_group.checks import ChunkChecks
from eupe.store.teacher_group.chunks import chunk_region
from eupe.store.teacher_group.handle import GroupHandle
from eupe.store.teacher_group.identity import resolution_group_name
from eupe.store.teacher_group.reader import GroupReader

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


class GroupWriter:
    """Writes one teacher group's (or view block's) chunks; what this process read of a rewritten
    chunk is forgotten (``checks``, ``reader``)."""

    def __init__(self, group: GroupHandle, checks: ChunkChecks, reader: GroupReader) -> None:
        self._group = group
        self._checks = checks
        self._reader = reader

    def write_chunk(self, result: ChunkResult) -> int:
        """Write all arrays of one chunk, flush them, then record the chunk's manifest row; returns bytes."""
        group = self._group
        region = chunk_region(group.store, result.chunk)
        group.array("views")[region] = result.views
        group.array("status")[region] = result.status
        group.array("error")[region] = np.asarray(result.errors, dtype=str)
        for resolution in group.resolutions:
            self._write_targets(resolution, result.chunk, result.summary[resolution], result.patch[resolution])
        fsync_paths([manifest.local_path(group.array(n), result.chunk) for n in group.array_names])
        failpoint("chunk-data")
        rows = np.stack([manifest.record(group.array(n), n, result.chunk, group.fingerprint)
                         for n in group.array_names])
        group.array(MANIFEST)[result.chunk] = rows
        fsync_paths([manifest.local_path(group.array(MANIFEST), result.chunk)])
        failpoint("chunk-done")
        self._forget(result.chunk)
        return int(rows[:, manifest.SIZE].sum())

    def reset_chunk(self, chunk: int) -> None:
        """Drop a chunk's completion record so the next extraction redoes it (--retry-failed)."""
        path = manifest.local_path(self._group.array(MANIFEST), chunk)
        if path is not None:
            path.unlink(missing_ok=True)
        else:
            self._group.array(MANIFEST)[chunk] = 0
        self._forget(chunk)

    def _write_targets(self, resolution: int, chunk: int, summary: Targets, patch: Targets) -> None:
        """Write one chunk's components (encoding float32 features with numpy first when given those)."""
        group = self._group
        prefix = resolution_group_name(resolution)
        summary = summary if isinstance(summary, Mapping) else group.codec.encode_vector(summary)
        patch = patch if isinstance(patch, Mapping) else group.codec.encode(patch)
        for kind, parts in (("summary", summary), ("patch", patch)):
            write_shard(group.array(f"{prefix}/{kind}"), chunk, {n: np.asarray(p) for n, p in parts.items()})

    def _forget(self, chunk: int) -> None:
        """Drop what this process knows of a chunk it rewrites (checks, metadata, open shard files)."""
        self._checks.forget(chunk)
        self._reader.forget(chunk)
