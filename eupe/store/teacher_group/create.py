"""Creating a teacher group, or a view block of one, in a store: every array, then its fingerprint.

Both are built atomically in a local store (staged under a temporary name, then renamed into place;
of two processes racing, the first rename wins and the other opens the winner's); on object storage
they are written in place with the fingerprint last, so a half-made group never opens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from eupe.store import consolidated, dims, manifest
from eupe.store.codecs.base import Codec
from eupe.store.layout import (MANIFEST, TARGET_ZSTD_LEVEL, compressors, failpoint, publish_dir, remove_stale_staging,
                               sha256_of, staging_name)
from eupe.store.teacher_group.handle import GroupHandle
from eupe.store.teacher_group.identity import (BLOCKS, CLAIMS, IDENTITY_KEYS, TeacherIdentity, chunk_array_names,
                                               identity_document, resolution_group_name)
from eupe.store.zarr_codecs import FeatureCodec
from eupe.views.spec import VIEW_DIM, VIEW_FIELDS

DECODING_NOTE = ("summary [N, K, D] and patch [N, K, h, w, D] are float32 features: zarr decodes them through "
                 "the 'eupe.features' codec, which the eupe package registers with zarr (pip install eupe); "
                 "plain zarr checks crc32c checksums but not the store's manifest (read through "
                 "eupe.store.store.FeatureStore for that)")


def create_teacher(store: Any, identity: TeacherIdentity, codec: Codec) -> GroupHandle:
    """Create every array of a new teacher group atomically (staged, then renamed into place) and
    return the store's opened TeacherGroup.

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


def create_block(store: Any, teacher: zarr.Group, attrs: dict, fingerprint: str, start: int, stop: int,
                 codec: Codec) -> None:
    """Build view block ``blocks/<start>`` of views start..stop-1 of the teacher group ``teacher``
    (its attributes ``attrs``, its fingerprint ``fingerprint``), staged and renamed into place
    locally (remote: written in place, its fingerprint last, by rank 0 only)."""
    root = store.local_root
    blocks = teacher.require_group(BLOCKS)
    name = str(start) if root is None else staging_name(str(start))
    identity = {k: attrs[k] for k in IDENTITY_KEYS}
    _create_arrays(blocks.create_group(name, overwrite=root is None), store, identity, codec, fingerprint,
                   (start, stop))
    failpoint("block-staged")
    if root is not None:
        final = root / teacher.path / BLOCKS / str(start)
        publish_dir(root / teacher.path / BLOCKS / name, final)
        remove_stale_staging(final)
    consolidated.refresh(store.group.store)


def _create_arrays(group: zarr.Group, store: Any, identity: dict, codec: Codec, parent: str | None = None,
                   views: tuple[int, int] | None = None) -> None:
    """Every array of a new teacher group (or of a view block, ``parent`` its teacher's fingerprint,
    holding global views ``views``), then its attributes and fingerprint, last. ``identity``:
    TeacherIdentity.to_attrs()."""
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
    block = None if parent is None else {"parent": parent, "views": [start, stop]}
    document = identity_document(group, store.fingerprint, {**dict(group.attrs), **identity}, names, block)
    group[MANIFEST].attrs["identity"] = document  # a copy, to name what changed if attributes are edited
    failpoint("teacher-fingerprint")
    group.attrs["identity_sha256"] = sha256_of(document)  # written last


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
