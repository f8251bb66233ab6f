"""Checked reads: a chunk is read only once its manifest row says it is done and its files match.

A chunk that is not done, or whose files are missing, resized, moved or altered, is refused with
``StoreIntegrityError`` -- a missing file never decodes as zeros. Each (chunk, array) is checked
once per process (:meth:`ChunkChecks.require_chunk`) until the chunk is rewritten
(:meth:`ChunkChecks.forget`); the checks themselves are :func:`eupe.store.manifest.check_quick`.
"""

from __future__ import annotations

import numpy as np

from eupe.store import manifest
from eupe.store.layout import MANIFEST, StoreIntegrityError
from eupe.store.teacher_group.handle import GroupHandle


class ChunkChecks:
    """Which chunks of one teacher group (or view block) this process has checked."""

    def __init__(self, group: GroupHandle) -> None:
        self._group = group
        self._checked: set[tuple[int, str]] = set()

    def require_chunk(self, chunk: int, names: list[str] | None = None) -> None:
        """Refuse to read a chunk that is not done or whose files do not match its manifest."""
        group = self._group
        names = names or group.array_names
        todo = [n for n in names if (chunk, n) not in self._checked]
        if not todo:
            return
        row = np.asarray(group.array(MANIFEST)[chunk])
        if row[0, manifest.SIZE] == 0:
            raise StoreIntegrityError(f"{group.group.path}: chunk {chunk} (images {self._span(chunk)}) is not "
                                      "complete; finish the extraction (re-run the same extract command)")
        for name in todo:
            problem = manifest.check_quick(group.array(name), name, chunk, row[group.array_names.index(name)],
                                           group.fingerprint)
            if problem:
                raise StoreIntegrityError(f"{group.group.path}/{name} chunk {chunk} (images {self._span(chunk)}): "
                                          f"{problem}; run `eupe-cache verify` and re-extract into a new store")
            self._checked.add((chunk, name))

    def forget(self, chunk: int) -> None:
        """Check a chunk again before its next read (this process rewrites it)."""
        self._checked = {c for c in self._checked if c[0] != chunk}

    def _span(self, chunk: int) -> str:
        rows = self._group.store.chunk_rows(chunk)
        return f"{rows.start}..{rows.stop - 1}"
