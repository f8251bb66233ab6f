"""Dimension names and coordinate arrays of the store: what makes it an xarray DataTree.

Every array a new store creates carries zarr v3 ``dimension_names``, so
``xarray.open_datatree(STORE, engine="zarr")`` opens the whole store and
``xarray.open_zarr(STORE, group="teachers/<name>")`` opens one teacher. Dimensions:

=================  ==========================================================================
``image``          one row per image, in dataset order (coordinate: the image keys)
``view``           a teacher's own views ``0..K-1`` (coordinate: the view numbers)
``block_view``     the views of a view block ``blocks/<K>/`` (coordinate: their global numbers,
                   ``K..K2-1``); a DataTree child must align with its parent, whose ``view`` axis
                   has another length, so a block names its view axis differently
``view_field``     the columns of ``views`` (coordinate: the field names, ``eupe.views.VIEW_FIELDS``)
``patch_row``      the rows and columns of the ``h x w`` patch-token grid (``r<res>/patch [N, K, h, w, D]``);
``patch_col``
``channel``        patch token width; ``summary_channel`` the summary token's (they may differ)
``chunk``, ``chunk_array``, ``record_field``  the manifest's axes (coordinate: ``chunk_array``)
``failed_image``   the start-up record's failure reasons (``startup/<name>/error``)
=================  ==========================================================================

A teacher group also holds the coordinate ``resolution`` (its resolutions), and its ``views``
array (the view parameters ``[image, view, view_field]``) is a coordinate too (the CF
``coordinates`` attribute of the group), so ``.sel(image=KEY, view=0)`` shows them. Coordinates are
written once, when the group is created, and fingerprinted with it: their array metadata with
the group's identity and their values' sha256 in the group's ``coordinate_sha256`` attribute, which
``eupe-cache verify`` checks (:func:`coordinate_problems`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

IMAGE, VIEW, BLOCK_VIEW, VIEW_FIELD = "image", "view", "block_view", "view_field"
CHANNEL, SUMMARY_CHANNEL = "channel", "summary_channel"
CHUNK, CHUNK_ARRAY, RECORD_FIELD, RESOLUTION = "chunk", "chunk_array", "record_field", "resolution"
PATCH_ROW, PATCH_COL = "patch_row", "patch_col"  # the h x w token grid of a decoded patch array
FAILED_IMAGE = "failed_image"  # the start-up record's failure reasons, one per failed image
CF_COORDINATES = {"coordinates": "views"}  # CF convention: xarray shows the view parameters as a coordinate
COORDINATES = "coordinate_sha256"  # teacher group attribute: {coordinate name: sha256 of its values}


def view_dim(block: bool) -> str:
    """The name of the view axis in a teacher group (``view``) or in one of its view blocks."""
    return BLOCK_VIEW if block else VIEW


def target_dims(kind: str, views: str = VIEW) -> tuple[str, ...]:
    """Dimension names of a decoded target array: ``summary [N, K, Ds]`` or ``patch [N, K, h, w, D]``
    (the layout where zarr decodes targets through a codec, one array per kind)."""
    if kind == "summary":
        return (IMAGE, views, SUMMARY_CHANNEL)
    return (IMAGE, views, PATCH_ROW, PATCH_COL, CHANNEL)


def coordinate_values(keys: np.ndarray | None, views: tuple[int, int], block: bool, fields: list[str],
                      resolutions: list[int], chunk_arrays: list[str]) -> dict[str, np.ndarray]:
    """{name: values} of the coordinates of a teacher group (or of a view block: its views only)."""
    axis = view_dim(block)
    found = {axis: np.arange(*views, dtype=np.int64)}
    if not block:
        found.update({IMAGE: np.asarray(keys, dtype=str), VIEW_FIELD: np.asarray(fields, dtype=str),
                      RESOLUTION: np.asarray(resolutions, dtype=np.int64),
                      CHUNK_ARRAY: np.asarray(chunk_arrays, dtype=str)})
    return found


def values_sha256(values: np.ndarray) -> str:
    """Digest of a coordinate's values (strings as their JSON list, numbers as int64 bytes)."""
    import hashlib
    import json

    if values.dtype.kind in "US" or values.dtype == object or values.dtype.kind == "T":
        data = json.dumps([str(v) for v in values.tolist()]).encode()
    else:
        data = np.ascontiguousarray(values, dtype=np.int64).tobytes()
    return hashlib.sha256(data).hexdigest()


def write_coordinates(group: Any, values: dict[str, np.ndarray]) -> dict[str, str]:
    """Create the coordinate arrays in the zarr ``group``; returns {name: values_sha256}."""
    from eupe.store.layout import compressors

    digests = {}
    for name, data in values.items():
        chunk = (max(len(data), 1),)
        if data.dtype.kind == "U":
            array = group.create_array(name, shape=data.shape, dtype=str, chunks=chunk, dimension_names=(name,))
            if len(data):
                array[:] = data
        else:
            group.create_array(name, data=data, chunks=chunk, compressors=compressors(), dimension_names=(name,))
        digests[name] = values_sha256(data)
    return digests


def coordinate_problems(group: Any, digests: dict[str, str]) -> list[str]:
    """Coordinates of the zarr ``group`` whose values differ from the digests written with them."""
    problems = []
    for name, expected in digests.items():
        try:
            now = values_sha256(np.asarray(group[name][:]))
        except (KeyError, ValueError, OSError, RuntimeError) as err:  # absent, or crc32c fails the read
            problems.append(f"{group.path}/{name}: unreadable ({err})")
            continue
        if now != expected:
            problems.append(f"{group.path}/{name}: values changed since the group was created")
    return problems
