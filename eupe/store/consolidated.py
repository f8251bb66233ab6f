"""The feature store and zarr's consolidated metadata: one behaviour (issue 21 item 4).

``zarr.consolidate_metadata(STORE)`` copies every node's metadata into the root ``zarr.json``
(what xarray suggests, and what a notebook user may run). A copy is a snapshot: after the store
grows it would hide the new view block or teacher from anyone who trusts it. So:

* the store never reads consolidated metadata: every open (:func:`open_group`) passes
  ``use_consolidated=False`` and sees the nodes on disk, so growing, adding a teacher, ``info``
  and ``verify`` behave the same whether or not someone consolidated;
* whenever the store changes its hierarchy (a new teacher group, a view block, statistics, the
  start-up status record) and finds consolidated metadata at its root, it consolidates again
  (:func:`refresh`), so xarray and plain zarr readers that use it see the store as it is. A
  store nobody consolidated is never consolidated by eupe.

Chunk writes change no metadata, so extraction's data path never rewrites the root. zarr writes
the root ``zarr.json`` atomically (temporary file, then rename); two processes refreshing at once
each write a complete snapshot, and the next change refreshes again. A view block or teacher still
being built by another process (a hidden ``.<name>.eupe-staging-*`` directory) can appear in a
snapshot taken meanwhile; the store itself ignores such names.
"""

from __future__ import annotations

from typing import Any

import zarr


def open_group(where: Any, mode: str = "r", **kwargs: Any) -> zarr.Group:
    """``zarr.open_group`` that reads the hierarchy on disk, never a consolidated copy of it."""
    return zarr.open_group(where, mode=mode, use_consolidated=False, **kwargs)


def is_consolidated(store: Any) -> bool:
    """The root ``zarr.json`` of the zarr ``store`` holds consolidated metadata (one small read)."""
    try:
        return zarr.open_group(store, mode="r").metadata.consolidated_metadata is not None
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False


def refresh(store: Any) -> bool:
    """Consolidate the zarr ``store`` again when it is consolidated (True when it was rewritten)."""
    if not is_consolidated(store):
        return False
    import warnings

    writable = store.with_read_only(False) if getattr(store, "read_only", False) else store
    with warnings.catch_warnings():  # "not part of the Zarr format 3 specification": the user chose it
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(writable)
    return True
