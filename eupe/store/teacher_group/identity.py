"""What a teacher group is: its identity, what its fingerprint covers, and the names of its parts.

A teacher group's attributes and array metadata are fingerprinted when it is created
(:func:`identity_document`, hashed into ``identity_sha256``); opening a group whose fingerprint no
longer matches is refused naming what changed (:func:`check_fingerprint`), and a later run adding to
the group must match its :class:`TeacherIdentity` (:func:`check_identity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import zarr

from eupe.store import dims
from eupe.store.codecs.base import Codec
from eupe.store.layout import MANIFEST, StoreIntegrityError, StoreMismatchError, changed_keys, differences, sha256_of

CLAIMS = "claims"  # a zarr group holding rank-<r>.json claims of running extractions
BLOCKS = "blocks"  # view blocks added when a store grows: blocks/<first view>/
IDENTITY_KEYS = ("name", "weights_sha256", "preprocessing", "resolutions", "grids", "dim", "summary_dim", "codec")


def resolution_group_name(resolution: int) -> str:
    return f"r{resolution}"


@dataclass(frozen=True, kw_only=True)
class TeacherIdentity:
    """What a teacher group was built with; a later run must match it to add to the group."""

    name: str
    fingerprint: str
    preprocessing: dict
    resolutions: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    dim: int  # patch token width
    summary_dim: int  # summary token width (PE-core's projected embedding is narrower than its patches)
    codec: dict

    def to_attrs(self) -> dict:
        return {
            "name": self.name, "weights_sha256": self.fingerprint, "preprocessing": self.preprocessing,
            "resolutions": list(self.resolutions), "grids": [list(g) for g in self.grids],
            "dim": self.dim, "summary_dim": self.summary_dim, "codec": self.codec,
        }


def chunk_array_names(resolutions: list[int], codec: Codec, dim: int, summary_dim: int,
                      grids: dict[int, tuple[int, int]]) -> list[str]:
    """Every array written per chunk of images, in manifest column order (``codec``, ``dim``,
    ``summary_dim`` and ``grids`` do not change the names: one summary and one patch array per
    resolution, whatever the codec's components)."""
    names = ["views", "status", "error"]
    for resolution in resolutions:
        names += [f"{resolution_group_name(resolution)}/summary", f"{resolution_group_name(resolution)}/patch"]
    return names


def identity_document(group: zarr.Group, store_fingerprint: str, attrs: dict, names: list[str],
                      block: dict | None = None) -> dict:
    """What a teacher group's fingerprint covers: its identity attributes, the store's identity,
    and the metadata (shape, dtype, chunking, codecs, fill value) of every array; a view block's
    also covers its parent's fingerprint and its view range (``block``)."""
    arrays = {}
    coordinates = attrs.get(dims.COORDINATES)  # absent in groups made before coordinates existed
    for name in [*names, MANIFEST, *sorted(coordinates or {})]:
        try:
            meta = group[name].metadata.to_dict()
        except KeyError:
            raise StoreIntegrityError(f"{group.path}/{name} is missing (its zarr.json was deleted)") from None
        meta.pop("attributes", None)
        arrays[name] = meta
    document = {"teacher": {k: attrs.get(k) for k in IDENTITY_KEYS}, "store": store_fingerprint,
                "chunk_arrays": list(names), "arrays": arrays}
    if block is not None:
        document["block"] = block
    if coordinates is not None:
        document["coordinates"] = coordinates
    return document


def check_fingerprint(group: zarr.Group, document: dict, fingerprint: str, written: Callable[[], dict]) -> None:
    """Refuse a group whose ``document`` no longer hashes to its ``fingerprint``, naming what changed
    against ``written()`` (the copy of the document kept in its manifest's attributes, read only then)."""
    if sha256_of(document) == fingerprint:
        return
    changed = changed_keys(written(), document)
    raise StoreIntegrityError(
        f"teacher group {group.path}: attributes or array metadata changed since it was written "
        f"({', '.join(changed) or 'the fingerprint itself'}); the cached targets cannot be trusted. "
        "Restore the original zarr.json files or re-extract into a new store")


def check_identity(attrs: dict, identity: TeacherIdentity) -> None:
    """Refuse to add ``identity``'s targets to a group built with other settings (``attrs``)."""
    problems = differences({k: attrs.get(k) for k in IDENTITY_KEYS}, identity.to_attrs(), f"teachers/{identity.name}")
    if problems:
        raise StoreMismatchError(
            f"teacher {identity.name!r} is already in the store with other settings "
            "(weights, preprocessing, resolutions or codec); use the same settings or another --out:\n  "
            + "\n  ".join(problems)
        )
