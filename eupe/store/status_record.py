"""The consolidated status record: every image's extraction status in one file per teacher.

A store with thousands of chunks keeps each chunk's image statuses in the chunk's own file, so
reading all of them (``info``, the trainer's usable rows) costs one file per chunk. A finished
extraction, and a trainer's main process, write them once more into ``startup/<teacher>/``:
``status`` [N] uint8 and ``error`` [n_failed] str, with the digest of the manifest they were
built from (``covers``) and a digest of their values, written last. A record is used only while
it covers exactly the teacher's current done set and its values check out; anything stale,
partial or edited is ignored and the per-chunk files are read (and checked) instead. Chunks are
still checked against their manifest whenever their data is read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import zarr

from eupe.store import dims, manifest
from eupe.store.consolidated import open_group, refresh as refresh_consolidated
from eupe.store.layout import FAILED, compressors

STARTUP = "startup"  # root group holding one record per teacher


@dataclass
class TeacherProgress:
    """One teacher's done chunks (one manifest read) and, once asked for, its image statuses."""

    rows: np.ndarray  # [n_chunks, n_arrays, 3] uint64 manifest (zeros: chunk not done)
    digest: str  # done-set digest (TeacherGroup.chunks.done_set_digest of these rows)
    status: np.ndarray | None = None  # [N] uint8; PENDING in chunks not done
    errors: list[str] | None = None  # failure reason of each FAILED row, in row order
    consolidated: bool = False  # a stored record covering these statuses exists

    @property
    def done(self) -> np.ndarray:
        return self.rows[:, 0, manifest.SIZE] > 0



def read_record(root: zarr.Group, name: str, digest: str, num_images: int) -> tuple[np.ndarray, list[str]] | None:
    """(status [N], failure reasons) of teacher ``name`` when its record covers ``digest`` intact, else None."""
    try:
        record = root[f"{STARTUP}/{name}"]
        attrs = dict(record.attrs)
        if attrs.get("covers") != digest:
            return None
        status = np.asarray(record["status"][:])  # [N] uint8, one file
        errors = [str(e) for e in record["error"][:]]  # [n_failed] str, one file
    except (KeyError, ValueError, RuntimeError, OSError):  # absent, or damaged (crc32c fails the read)
        return None
    if (status.shape != (num_images,) or len(errors) != int((status == FAILED).sum())
            or _values_sha256(status, errors) != attrs.get("values_sha256")):
        return None
    return status, errors


def save_record(store, name: str, digest: str, status: np.ndarray, errors: list[str]) -> bool:
    """Write teacher ``name``'s record into the zarr ``store``. Best effort (True when written): a
    store on read-only media, or a concurrent writer, leaves the record for a later start."""
    try:
        root = open_group(store.with_read_only(False), mode="r+")
        record = root.require_group(STARTUP).require_group(name)
        record.attrs.put({})  # an older record must not vouch for the arrays being replaced
        record.create_array("status", data=status, chunks=(max(len(status), 1),), compressors=compressors(),
                            overwrite=True, dimension_names=(dims.IMAGE,))
        error = record.create_array("error", shape=(len(errors),), dtype=str, chunks=(max(len(errors), 1),),
                                    overwrite=True, dimension_names=(dims.FAILED_IMAGE,))
        if errors:
            error[:] = np.asarray(errors, dtype=str)
        record.attrs.put({"covers": digest, "values_sha256": _values_sha256(status, errors)})  # last
        refresh_consolidated(root.store)  # a consolidated copy lists the record too
    except (OSError, ValueError, KeyError, zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError):
        return False
    return True


def _values_sha256(status: np.ndarray, errors: list[str]) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(status, dtype=np.uint8).tobytes())
    digest.update(json.dumps(errors).encode())
    return digest.hexdigest()
