"""``eupe-cache upgrade``: convert a store of an older format (2) into today's, resumable and verified.

Format 2 kept every codec component as its own zarr array (``r<res>/patch/codes``, ``.../scale``,
...), which plain zarr returns as raw integers; format 3 stores float32 target arrays through the
``eupe.features`` zarr codec (:mod:`eupe.store.zarr_codecs`). The conversion writes a NEW store and
leaves the old one as it is:

1. the new root (the old attributes at version 3, ``images/*`` copied byte for byte) is built under
   a staging name and renamed into place, as ``extract`` creates a store;
2. every teacher and view block is created with the old identity (name, weights hash,
   preprocessing, resolutions, codec); each chunk the old store holds complete is read, checked in
   full against the old manifest (a damaged chunk stops the upgrade, naming it), and written with
   ``TeacherGroup.writer.write_chunk`` -- its manifest row last, so a run killed at any point (even
   ``kill -9``) is finished by running the same command again, redoing only chunks not recorded;
3. then every converted chunk is verified: the targets the new store decodes equal the old
   components decoded, bit for bit, for every image and view;
4. normalisation statistics that were current in the old store are carried over (they describe the
   same decoded values), recorded against the new store's chunks.

Chunks the old store had not finished stay pending in the new one (``extract`` finishes them).
Local stores only.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import zarr

from eupe.store import manifest
from eupe.store.layout import (
    MANIFEST, STORE_VERSION, TEACHERS, StoreError, StoreIntegrityError, StoreMismatchError, canonical, failpoint,
    is_url,
    publish_dir, remove_stale_staging, sha256_of, staging_name,
)
from eupe.store.store import FeatureStore, identity_document
from eupe.store.teacher_group.chunks import chunk_region
from eupe.store.teacher_group.group import TeacherGroup
from eupe.store.teacher_group.identity import TeacherIdentity, check_identity, resolution_group_name
from eupe.store.teacher_group.writer import ChunkResult

Progress = Callable[[str], None]


def upgrade_store(old_path: str | Path, out_path: str | Path, progress: Progress = lambda _: None) -> dict:
    """Convert the store at ``old_path`` into a new one at ``out_path``; returns a summary
    ``{"teachers": {name: {"chunks_converted", "chunks_verified", "stats"}}}``."""
    for path in (old_path, out_path):
        if is_url(path):
            raise StoreError(f"{path}: upgrade converts local stores; copy it to a local disk first")
    old = FeatureStore.open(old_path, legacy=True)
    if old.attrs["version"] == STORE_VERSION:
        raise StoreMismatchError(f"{old_path} is already in store format {STORE_VERSION}: nothing to upgrade")
    new = _open_or_create_root(old, Path(out_path))
    summary = {}
    for name in old.teacher_names():
        summary[name] = _upgrade_teacher(old.teacher(name), new, progress)
    return {"store": str(out_path), "version": STORE_VERSION, "teachers": summary}


# -- the root ------------------------------------------------------------------------------------


def _root_attrs(old: FeatureStore) -> dict:
    return {**{k: v for k, v in old.attrs.items() if k != "identity_sha256"}, "version": STORE_VERSION}


def _open_or_create_root(old: FeatureStore, out: Path) -> FeatureStore:
    if not (out / "zarr.json").is_file():
        if out.exists() and any(out.iterdir()):
            raise StoreMismatchError(f"{out} exists and is not a store: choose a new --out")
        _create_root(old, out)
    new = FeatureStore.open(out, mode="a")
    wanted, have = _root_attrs(old), {k: v for k, v in new.attrs.items() if k != "identity_sha256"}
    if canonical(wanted) != canonical(have):
        raise StoreMismatchError(f"{out} holds another store than an upgrade of {old.where}: choose a new --out")
    return new


def _create_root(old: FeatureStore, out: Path) -> None:
    """The new root, staged and renamed into place: old attributes at the new version, images/* copied."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.parent / staging_name(out.name)
    try:
        group = zarr.open_group(str(staged), mode="w-")
        shutil.copytree(Path(old.where) / "images", staged / "images")
        group.create_group(TEACHERS)
        attrs = _root_attrs(old)
        images = group["images"]
        document = identity_document(attrs, images)
        images.attrs["identity"] = document
        group.attrs.put({**attrs, "identity_sha256": sha256_of(document)})
        failpoint("store-staged")
        publish_dir(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    remove_stale_staging(out)


# -- teachers --------------------------------------------------------------------------------------


def _upgrade_teacher(old: TeacherGroup, new_store: FeatureStore, progress: Progress) -> dict:
    attrs = old.attrs
    identity = TeacherIdentity(name=attrs["name"], fingerprint=attrs["weights_sha256"],
                               preprocessing=attrs["preprocessing"], resolutions=tuple(attrs["resolutions"]),
                               grids=tuple(tuple(g) for g in attrs["grids"]), dim=attrs["dim"],
                               summary_dim=attrs["summary_dim"], codec=attrs["codec"])
    new = new_store.open_or_create_teacher(identity, old.codec)
    check_identity(new.attrs, identity)
    new.blocks.add_views(old.blocks.total_views, old.codec)
    converted = verified = 0
    for old_block, new_block in zip(old.blocks, new.blocks):
        if (old_block.view_start, old_block.view_stop) != (new_block.view_start, new_block.view_stop):
            raise StoreMismatchError(f"{new_block.group.path} holds views {new_block.view_start}.."
                                     f"{new_block.view_stop - 1}, the old store {old_block.view_start}.."
                                     f"{old_block.view_stop - 1}: choose a new --out")
        done_old, done_new = old_block.chunks.done_flags(), new_block.chunks.done_flags()
        for chunk in np.flatnonzero(done_old & ~done_new):
            new_block.writer.write_chunk(legacy_chunk(old_block, int(chunk)))
            converted += 1
            progress(f"{old.name}: converted chunk {chunk} of {old_block.group.path}")
        for chunk in np.flatnonzero(done_old):
            _verify_chunk(old_block, new_block, int(chunk))
            verified += 1
    stats = [r for r in old.resolutions if _carry_stats(old, new, r)]
    progress(f"{old.name}: {converted} chunks converted, {verified} verified bit for bit")
    return {"chunks_converted": converted, "chunks_verified": verified, "stats": stats}


def _legacy_names(group: TeacherGroup, resolution: int, kind: str) -> dict[str, str]:
    """{component: array name} of a format-2 target (``r<res>/<kind>/<component>``)."""
    prefix = f"{resolution_group_name(resolution)}/{kind}/"
    return {n[len(prefix):]: n for n in group.array_names if n.startswith(prefix)}


def legacy_chunk(group: TeacherGroup, chunk: int) -> ChunkResult:
    """One complete chunk of a format-2 teacher group (or view block), every file checked in full
    against its manifest; the components as stored."""
    rows = np.asarray(group.array(MANIFEST)[chunk])
    for column, name in enumerate(group.array_names):
        problem = manifest.check_full(group.array(name), name, chunk, rows[column], group.fingerprint)
        if problem:
            raise StoreIntegrityError(f"{group.group.path}/{name} chunk {chunk}: {problem}; the old store is "
                                      "damaged there (`eupe-cache verify` lists every such chunk): restore it or "
                                      "re-extract")
    region = chunk_region(group.store, chunk)
    parts = {kind: {r: {c: np.asarray(group.array(n)[region]) for c, n in _legacy_names(group, r, kind).items()}
                    for r in group.resolutions} for kind in ("summary", "patch")}
    return ChunkResult(chunk=chunk, views=np.asarray(group.array("views")[region]),
                       status=np.asarray(group.array("status")[region]),
                       errors=[str(e) for e in group.array("error")[region]],
                       summary=parts["summary"], patch=parts["patch"])


def _verify_chunk(old: TeacherGroup, new: TeacherGroup, chunk: int) -> None:
    """The new store's decoded targets of a chunk equal the old components decoded, bit for bit."""
    legacy = legacy_chunk(old, chunk)
    region = chunk_region(old.store, chunk)
    for resolution in old.resolutions:
        want = old.reader.decode({"summary": legacy.summary[resolution], "patch": legacy.patch[resolution]}, resolution)
        have = new.reader.targets(region, resolution)
        for kind in ("summary", "patch"):
            if not np.array_equal(want[kind], have[kind]):
                raise StoreIntegrityError(f"{new.group.path}: chunk {chunk} {kind} targets at {resolution} px differ "
                                          "from the old store's after conversion; delete the new store and re-run")
    for name, a, b in (("views", legacy.views, new.array("views")[region]),
                       ("status", legacy.status, new.array("status")[region])):
        if not np.array_equal(a, np.asarray(b), equal_nan=name == "views"):
            raise StoreIntegrityError(f"{new.group.path}: chunk {chunk} {name} differ from the old store's")


def _carry_stats(old: TeacherGroup, new: TeacherGroup, resolution: int) -> bool:
    """Copy statistics that were current in the old store (same decoded values), recorded against
    the new store's done chunks; False when there were none to carry."""
    from eupe.store.stats import NAMES, _digest, load_stats

    values = load_stats(old, resolution)
    if values is None or not np.array_equal(old.chunks.done_flags(), new.chunks.done_flags()):
        return False
    src = old.group[resolution_group_name(resolution)]["stats"]
    dst = new.group[resolution_group_name(resolution)].require_group("stats")
    dst.attrs.put({})
    for name in NAMES:
        dst.create_array(name, data=np.asarray(values[name], np.float64), overwrite=True,
                         compressors=src[name].compressors)
    complete = dict(src.attrs["complete"])
    attrs = {k: v for k, v in dict(src.attrs).items() if k != "complete"}
    dst.attrs.put({**attrs, "complete": {**complete, "covers": new.chunks.done_set_digest(),
                                         "values_sha256": _digest(values)}})
    return True


__all__ = ["legacy_chunk", "upgrade_store"]
