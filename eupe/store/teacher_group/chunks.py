"""Which chunks of a teacher group are done: its manifest rows, what is left to extract, counts.

A chunk is done once its manifest row is written (``eupe.store.manifest``: its completion record,
written after every file of the chunk); a rank resumes with the chunks it owns that are not done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from eupe.store import manifest
from eupe.store.layout import FAILED, MANIFEST, OK, sha256_of
from eupe.store.teacher_group.handle import GroupHandle
from eupe.store.teacher_group.identity import CLAIMS


def chunk_region(store: Any, chunk: int) -> slice:
    """The rows of one chunk of images, as a slice."""
    rows = store.chunk_rows(chunk)
    return slice(rows.start, rows.stop)


class ChunkProgress:
    """Done chunks of one teacher group (or view block), from its manifest.

    ``status`` is the group's checked image status (``GroupReader.status``), for :meth:`counts`.
    """

    def __init__(self, group: GroupHandle, status: Callable[[np.ndarray], np.ndarray]) -> None:
        self._group = group
        self._status = status

    @property
    def num_chunks(self) -> int:
        return self._group.store.num_chunks

    @property
    def claims_dir(self) -> Path | None:
        """Where running extractions record their rank (local stores only)."""
        group = self._group.group
        root = getattr(group.store, "root", None)
        return None if root is None else Path(root) / group.path / CLAIMS

    def manifest_rows(self) -> np.ndarray:
        """[n_chunks, n_arrays, 3] uint64 completion records (zeros: chunk not done)."""
        return np.asarray(self._group.array(MANIFEST)[:])

    def done_flags(self) -> np.ndarray:
        return self.manifest_rows()[:, 0, manifest.SIZE] > 0

    def pending_chunks(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """Chunks this rank owns (chunk % world_size == rank) that are not complete yet."""
        done = self.done_flags()
        return [c for c in range(len(done)) if c % world_size == rank and not done[c]]

    def images_done(self, done: np.ndarray | None = None) -> int:
        """How many images lie in chunks that are done (``done``: :meth:`done_flags`, read when not given)."""
        done = self.done_flags() if done is None else done
        return sum(len(self._group.store.chunk_rows(int(c))) for c in np.flatnonzero(done))

    def done_set_digest(self) -> str:
        """Fingerprint of which chunks are done and what they hold (statistics record it)."""
        return sha256_of(self.manifest_rows().tolist())

    def counts(self, rows: np.ndarray | None = None, status: np.ndarray | None = None) -> dict[str, int]:
        """Images, chunks and bytes written, counting only chunks that are done (``rows``: the
        manifest, ``status``: see ``GroupReader.status``; read here when not given)."""
        rows = self.manifest_rows() if rows is None else rows
        done = rows[:, 0, manifest.SIZE] > 0
        status = self._status(done) if status is None else status
        return {"images": int(len(status)), "images_done": self.images_done(done), "ok": int((status == OK).sum()),
                "failed": int((status == FAILED).sum()), **self.chunk_counts(rows)}

    def chunk_counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        """Chunks, done chunks and bytes written, from the manifest alone (``rows``: read when not given)."""
        rows = self.manifest_rows() if rows is None else rows
        done = rows[:, 0, manifest.SIZE] > 0
        return {"chunks": int(len(done)), "chunks_done": int(done.sum()),
                "bytes_written": int(rows[:, :, manifest.SIZE].sum())}
