"""What a collaborator sees of the teacher group it serves.

:class:`~eupe.store.teacher_group.group.TeacherGroup` implements :class:`GroupHandle`; the
collaborators (``blocks``, ``reader``, ``writer``, ``chunks``, ``checks``) are typed against this
protocol, so none of them imports ``group.py``.
"""

from __future__ import annotations

from typing import Any, Protocol

import zarr

from eupe.store.codecs.base import Codec


class GroupHandle(Protocol):
    """One opened teacher group or view block: its zarr group, parsed attributes and array handles."""

    store: Any  # the FeatureStore it belongs to
    group: zarr.Group
    parent: GroupHandle | None  # the teacher group a view block belongs to (None: the group itself)
    attrs: dict
    view_start: int
    view_stop: int
    codec: Codec
    resolutions: list[int]
    grids: dict[int, tuple[int, int]]
    dim: int
    summary_dim: int
    array_names: list[str]
    fingerprint: str

    @property
    def name(self) -> str: ...

    @property
    def block_views(self) -> int: ...

    def array(self, name: str) -> zarr.Array: ...
