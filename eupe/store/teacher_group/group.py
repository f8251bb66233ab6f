"""``TeacherGroup``: one teacher's part of a feature store (or one of its view blocks), opened.

Opening checks the group's fingerprint (:mod:`.identity`); the work is done by its collaborators:
``blocks`` (:class:`~.blocks.ViewBlocks`: its view blocks, growing them), ``reader``
(:class:`~.reader.GroupReader`: checked reads of views, status and targets), ``writer``
(:class:`~.writer.GroupWriter`: writing chunks), ``chunks`` (:class:`~.chunks.ChunkProgress`: which
chunks are done) and ``checks`` (:class:`~.checks.ChunkChecks`: a chunk's files checked against its
manifest before they are read). A new group is made by :func:`~.create.create_teacher`.
"""

from __future__ import annotations

from typing import Any

import zarr

from eupe.store.codecs.registry import codec_from_dict
from eupe.store.layout import MANIFEST, StoreIntegrityError
from eupe.store.teacher_group.blocks import ViewBlocks
from eupe.store.teacher_group.checks import ChunkChecks
from eupe.store.teacher_group.chunks import ChunkProgress
from eupe.store.teacher_group.identity import IDENTITY_KEYS, check_fingerprint, identity_document
from eupe.store.teacher_group.reader import GroupReader
from eupe.store.teacher_group.writer import GroupWriter


class TeacherGroup:
    """One teacher's arrays in a feature store (a view block: its parent's other views' arrays)."""

    def __init__(self, store: Any, group: zarr.Group, parent: TeacherGroup | None = None) -> None:
        self.store = store  # the FeatureStore it belongs to
        self.group = group
        self.parent = parent  # the teacher group a view block belongs to (None: the group itself)
        self.attrs = _identity_attrs(group, parent)
        self.view_start = int(self.attrs.get("view_start", 0))
        self.view_stop = int(self.attrs.get("view_stop", store.params.views_per_image))
        self.codec = codec_from_dict(self.attrs["codec"])
        self.resolutions = [int(r) for r in self.attrs["resolutions"]]
        self.grids = {r: tuple(g) for r, g in zip(self.resolutions, self.attrs["grids"])}
        self.dim = int(self.attrs["dim"])
        self.summary_dim = int(self.attrs["summary_dim"])
        self.array_names: list[str] = list(self.attrs["chunk_arrays"])
        self.fingerprint: str = self.attrs["identity_sha256"]
        self._arrays: dict[str, zarr.Array] = {}
        check_fingerprint(group, self._identity_document(), self.fingerprint,
                          lambda: dict(self.array(MANIFEST).attrs).get("identity", {}))
        self._connect()

    def _connect(self) -> None:
        """The collaborators, each given what it uses (the reader reads another block's views through
        that block's reader; progress counts images through the reader's checked status)."""
        self.checks = ChunkChecks(self)
        self.chunks = ChunkProgress(self, lambda done: self.reader.status(done))
        self.blocks = ViewBlocks(self, lambda block: TeacherGroup(self.store, block, self))
        self.reader = GroupReader(self, self.checks, self.chunks, lambda view: self.blocks.block_of(view).reader)
        self.writer = GroupWriter(self, self.checks, self.reader)

    @property
    def name(self) -> str:
        return str(self.attrs["name"])

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            try:
                # every chunk gets its file, even when it equals the fill value (all images failed):
                # a chunk's manifest lists every file, so an absent one always means damage
                self._arrays[name] = self.group[name].with_config({"write_empty_chunks": True})
            except KeyError:
                raise StoreIntegrityError(f"{self.group.path}/{name} is missing (its zarr.json was deleted)") from None
        return self._arrays[name]

    @property
    def block_views(self) -> int:
        """Views this group (or view block) holds itself per image: global views view_start..view_stop-1."""
        return self.view_stop - self.view_start

    @property
    def views_per_image(self) -> int:
        """Views per image the teacher holds over all its view blocks (``blocks.total_views``; a grown
        teacher counts its grown views, a view block its own: :attr:`block_views`). How many of them
        are complete: ``blocks.complete_views()``."""
        return self.blocks.total_views if self.parent is None else self.block_views

    def _identity_document(self) -> dict:
        """What the fingerprint covers (see :func:`~.identity.identity_document`)."""
        block = None if self.parent is None else {"parent": self.parent.fingerprint,
                                                  "views": [self.view_start, self.view_stop]}
        return identity_document(self.group, self.store.fingerprint, self.attrs, self.array_names, block)

    def __repr__(self) -> str:
        from eupe.store.notebook import group_text

        return group_text(self)

    def _repr_html_(self) -> str:
        from eupe.store.notebook import as_html

        return as_html(repr(self))


def _identity_attrs(group: zarr.Group, parent: TeacherGroup | None) -> dict:
    """The group's attributes (a view block's completed with its teacher's identity); a group without
    an identity fingerprint is refused."""
    attrs = dict(group.attrs)
    if not attrs.get("identity_sha256"):  # "" while a remote group is being created
        raise StoreIntegrityError(f"teacher group {group.path} has no identity fingerprint: its creation was "
                                  "interrupted (re-run the extract command), it was not created by this "
                                  "version of eupe, or its attributes were edited")
    if parent is not None:  # a view block shares its teacher's identity
        attrs.update({k: parent.attrs[k] for k in IDENTITY_KEYS})
    return attrs
