"""View blocks: the views a teacher group holds, in blocks, and growing it by a block.

A teacher group holds the views ``0..K-1`` it was created with (K: the store's
``views_per_image``). Growing a store (``extract --views K2``) adds a *view block* ``blocks/<K>/``
holding views ``K..K2-1`` of every image: the same arrays, manifest and checks, shaped
``[N, K2-K, ...]``, fingerprinted together with its parent's fingerprint and its view range. View
``v`` of an image is drawn from (seed, key, v) alone, so a grown store holds exactly the values a
store made with K2 views from the start would hold, and the old chunks are never touched.
:class:`ViewBlocks` lists the teacher's own views first, then each block by start; an integer view
index is always global (``reader.read_parts(row, r, 6)`` reads block ``4``'s third view).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Protocol, overload

import numpy as np
import zarr

from eupe.store.codecs.base import Codec
from eupe.store.layout import StoreIntegrityError, StoreLookupError
from eupe.store.teacher_group.chunks import ChunkProgress
from eupe.store.teacher_group.create import create_block
from eupe.store.teacher_group.handle import GroupHandle
from eupe.store.teacher_group.identity import BLOCKS
from eupe.store.teacher_group.reader import GroupReader


class Block(GroupHandle, Protocol):
    """A teacher group or view block, with the collaborators the block list reads through."""

    chunks: ChunkProgress
    reader: GroupReader


class ViewBlocks(Sequence):
    """The view blocks of one teacher group, in view order (listed once; see :meth:`refresh`); a
    view block lists only itself. ``open_block`` opens a view block's zarr group as a ``Block``."""

    def __init__(self, group: Block, open_block: Callable[[zarr.Group], Block]) -> None:
        self._group = group
        self._open_block = open_block
        self._list: list[Block] | None = None

    @overload
    def __getitem__(self, index: int) -> Block: ...

    @overload
    def __getitem__(self, index: slice) -> list[Block]: ...

    def __getitem__(self, index: int | slice) -> Block | list[Block]:
        return self._listed()[index]

    def __len__(self) -> int:
        return len(self._listed())

    def refresh(self) -> list[Block]:
        """List the view blocks again (another process may have added one)."""
        self._list = None
        return self._listed()

    @property
    def total_views(self) -> int:
        """Views per image over all blocks, complete or not."""
        return self[-1].view_stop

    def complete_views(self, done: np.ndarray | None = None) -> int:
        """Views per image in the leading blocks whose every chunk is done (what a trainer may use).

        ``done`` (this group's ``chunks.done_flags()``) saves reading its manifest again when the caller has it."""
        count = 0
        for block in self:
            flags = done if block is self._group and done is not None else block.chunks.done_flags()
            if not flags.all():
                break
            count = block.view_stop
        return count

    def add_views(self, stop: int, codec: Codec) -> list[Block]:
        """Grow the teacher to ``stop`` views per image: a new view block (atomic; a process that
        loses the race to add the same block uses the winner's). Old chunks are never touched."""
        group = self._group
        while self.refresh()[-1].view_stop < stop:
            create_block(group.store, group.group, group.attrs, group.fingerprint, self.total_views, stop, codec)
        return self._listed()

    def block_of(self, view: int) -> Block:
        """The block holding global view ``view``."""
        for block in self:
            if block.view_start <= view < block.view_stop:
                return block
        raise StoreLookupError(f"{self._group.group.path} holds views 0..{self.total_views - 1} per image; "
                               f"view {view} is not in the store")

    def view_params(self, row: int, view: int) -> np.ndarray:
        """[VIEW_DIM] float64 parameters of global view ``view`` of image ``row``."""
        block = self.block_of(view)
        return block.reader.views(row)[view - block.view_start]

    def _listed(self) -> list[Block]:
        if self._group.parent is not None:
            return [self._group]
        if self._list is None:
            self._list = self._list_blocks()
        return self._list

    def _list_blocks(self) -> list[Block]:
        try:
            children = dict(self._group.group[BLOCKS].groups())
        except KeyError:
            return [self._group]
        found = [self._group]
        for start in sorted(int(n) for n in children if n.isdigit()):
            if not dict(children[str(start)].attrs).get("identity_sha256"):
                continue  # a remote block still being created (a local one is only visible once complete)
            block = self._open_block(children[str(start)])
            if block.view_start != found[-1].view_stop:
                raise StoreIntegrityError(f"{block.group.path} holds views {block.view_start}..{block.view_stop - 1} "
                                          f"but views start at {found[-1].view_stop} there; its attributes were "
                                          "edited or a block was removed: restore it or re-extract")
            found.append(block)
        return found
