"""The store in a notebook: lookup by image key, summaries that explain it, one call per sample.

``FeatureStore.row(key)`` finds an image by its webdataset key; ``FeatureStore.sample(key)``
returns one stored view with everything about it -- the exact pixels it was computed on
(re-rendered from the source image with its stored view parameters), its view parameters and its
decoded targets; ``repr(store)`` and ``repr(store.teacher(name))`` (and their HTML in Jupyter)
list teachers, images, views (per view block), resolutions, codec, bytes and completeness.

Every wrong key, view, resolution or teacher raises :class:`StoreLookupError` (a ``StoreError``:
one ``Error:`` line in the CLIs) naming what the store holds instead.
"""

from __future__ import annotations

import difflib
import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from eupe.store.layout import FAILED, OK, StoreLookupError


@dataclass
class Sample:
    """One stored view of one image: its pixels, view parameters and decoded targets."""

    key: str
    row: int
    teacher: str
    view: int
    resolution: int
    params: dict[str, float]  # the stored view parameters, by field name (eupe.views.VIEW_FIELDS)
    pixels: np.ndarray  # [H, W, 3] float32 in [0, 1]: the view as rendered for the teacher
    summary: np.ndarray  # [Ds] float32 decoded summary token
    patch: np.ndarray  # [h, w, D] float32 decoded patch tokens
    label: int = -1  # the image's class (.cls member), -1 when it has none

    def __repr__(self) -> str:
        h, w, d = self.patch.shape
        return (f"Sample(key={self.key!r}, row={self.row}, teacher={self.teacher!r}, view={self.view}, "
                f"resolution={self.resolution}, pixels {self.pixels.shape[0]}x{self.pixels.shape[1]}, "
                f"summary [{self.summary.shape[0]}], patch [{h}, {w}, {d}])")


# -- lookups ------------------------------------------------------------------------------------


def row_of(store: Any, key: str | int) -> int:
    """The row of image ``key`` (a row number passes through, checked)."""
    n = store.num_images
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not 0 <= int(key) < n:
            raise StoreLookupError(f"row {key} is not in the store: it holds {n} images (rows 0..{n - 1})")
        return int(key)
    index = _key_index(store)
    if str(key) not in index:
        close = difflib.get_close_matches(str(key), list(index), n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise StoreLookupError(f"image key {key!r} is not in the store ({n} images, e.g. "
                               f"{', '.join(map(str, store.keys[:3]))}{hint})")
    return index[str(key)]


def _key_index(store: Any) -> dict[str, int]:
    if store._key_rows is None:
        store._key_rows = {str(k): i for i, k in enumerate(store.keys)}
    return store._key_rows


def check_resolution(group: Any, resolution: int | None) -> int:
    """``resolution`` if the teacher holds it (None: its first), else an error naming those it holds."""
    if resolution is None:
        return group.resolutions[0]
    if int(resolution) not in group.resolutions:
        raise StoreLookupError(f"teacher {group.name!r} holds resolutions {_listed(group.resolutions)}, not "
                               f"{resolution}")
    return int(resolution)


def check_view(group: Any, view: int) -> int:
    """``view`` if it lies in one of the teacher's view blocks, else an error naming its views."""
    total = group.blocks.total_views
    if not isinstance(view, (int, np.integer)) or not 0 <= int(view) < total:
        raise StoreLookupError(f"teacher {group.name!r} holds views 0..{total - 1} per image "
                               f"({_blocks_text(group)}), not view {view}")
    return int(view)


def teacher_of(store: Any, teacher: str | None) -> Any:
    """The named teacher's group, or the only one when ``teacher`` is None."""
    names = store.teacher_names()
    if teacher is None:
        if len(names) != 1:
            raise StoreLookupError(f"the store holds {len(names)} teachers ({_listed(names) or 'none'}); "
                                   "name one with teacher=")
        teacher = names[0]
    if teacher not in names:
        raise StoreLookupError(f"teacher {teacher!r} is not in the store {store.where}; it has: "
                               f"{_listed(names) or 'none'}")
    return store.teacher(teacher)


# -- one sample -----------------------------------------------------------------------------------


def sample(store: Any, key: str | int, teacher: str | None = None, view: int = 0,
           resolution: int | None = None) -> Sample:
    """View ``view`` of image ``key``: its pixels, parameters and decoded targets (checked reads)."""
    from eupe.data.shards import ShardReader
    from eupe.views.renderer import render
    from eupe.views.source import open_image
    from eupe.views.spec import VIEW_FIELDS, ViewSpec

    group = teacher_of(store, teacher)
    row = row_of(store, key)
    view, resolution = check_view(group, view), check_resolution(group, resolution)
    _check_extracted(store, group.name, row)
    targets = group.reader.targets(row, resolution, view)
    params = group.blocks.view_params(row, view)  # [VIEW_DIM] float64
    if store._notebook_index is None:  # read (and checked) once per opened store
        store._notebook_index = store.shard_index()
    index = store._notebook_index
    reader = ShardReader(index)
    try:
        pixels = render(open_image(reader.read(row), None), ViewSpec.from_array(params), resolution)  # [3, H, W]
    finally:
        reader.close()
    return Sample(key=str(store.keys[row]), row=row, teacher=group.name, view=view, resolution=resolution,
                  params=dict(zip(VIEW_FIELDS, map(float, params))),
                  pixels=pixels.permute(1, 2, 0).numpy(),  # [3, H, W] -> [H, W, 3]
                  summary=targets["summary"], patch=targets["patch"], label=int(index.label[row]))


def _check_extracted(store: Any, name: str, row: int) -> None:
    """Refuse an image whose extraction failed (saying why) or whose chunk is not done yet."""
    status, key = store.image_status(name)[row], str(store.keys[row])
    if status == OK:
        return
    state = (f"failed: {dict(store.failures(name)).get(key, '')}" if status == FAILED
             else "not extracted yet (its chunk is not done: re-run the extract command)")
    raise StoreLookupError(f"image {key!r} has no targets for {name!r}: {state}")


# -- summaries ----------------------------------------------------------------------------------


def teacher_summary(store: Any, name: str) -> dict:
    """Views, resolutions, codec, bytes and completeness of one teacher (manifests and statuses only)."""
    group = store.teacher(name)
    status = store.image_status(name)
    blocks = []
    for block in group.blocks:
        counts = block.chunks.chunk_counts()
        blocks.append({"views": [block.view_start, block.view_stop - 1], "chunks_done": counts["chunks_done"],
                       "chunks": counts["chunks"], "bytes": counts["bytes_written"]})
    return {"teacher": name, "views_per_image": group.views_per_image, "complete_views": group.blocks.complete_views(),
            "blocks": blocks, "resolutions": {r: list(group.grids[r]) for r in group.resolutions},
            "dim": group.dim, "summary_dim": group.summary_dim, "codec": group.codec.name,
            "bytes": sum(b["bytes"] for b in blocks), "ok": int((status == OK).sum()),
            "failed": int((status == FAILED).sum()), "images": int(len(status))}


def store_text(store: Any) -> str:
    """What ``repr(store)`` prints."""
    lines = [_store_line(store)]
    names = store.teacher_names()
    lines += [teacher_line(teacher_summary(store, n)) for n in names] or ["  no teachers yet"]
    lines.append("  look up: store.row(key), store.sample(key, teacher, view, resolution); "
                 f"keys e.g. {', '.join(map(str, store.keys[:3]))}")
    return "\n".join(lines)


def _store_line(store: Any) -> str:
    return (f"FeatureStore {store.where}: {store.num_images} images in {store.num_chunks} chunks of "
            f"{store.params.images_per_chunk}, created with {store.params.views_per_image} views per image "
            f"(seed {store.params.seed})")


def teacher_line(info: dict) -> str:
    res = ", ".join(f"{r} ({h}x{w} tokens)" for r, (h, w) in info["resolutions"].items())
    blocks = "; ".join(f"views {b['views'][0]}..{b['views'][1]}: {b['chunks_done']}/{b['chunks']} chunks"
                       for b in info["blocks"])
    return (f"  teacher {info['teacher']}: {info['views_per_image']} views per image "
            f"({info['complete_views']} complete; {blocks}), resolutions {res}, codec {info['codec']}, "
            f"dim {info['dim']} (summary {info['summary_dim']}), {_bytes(info['bytes'])}, "
            f"images {info['ok']} ok / {info['failed']} failed / {info['images']}")


def group_text(group: Any) -> str:
    """What ``repr(teacher_group)`` prints (a view block: its own views)."""
    if group.parent is not None:
        return (f"<view block {group.group.path}: views {group.view_start}..{group.view_stop - 1} of teacher "
                f"{group.name!r}>")
    return "TeacherGroup " + teacher_line(teacher_summary(group.store, group.name)).strip()[len("teacher "):]


def as_html(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


_COLUMNS = ("teacher", "views per image", "complete views", "view blocks", "resolutions", "codec", "dim",
            "bytes", "ok", "failed", "images")


def store_html(store: Any) -> str:
    """What Jupyter shows for a store: its summary line and one table row per teacher."""
    head = html.escape(_store_line(store))
    rows = []
    for name in store.teacher_names():
        info = teacher_summary(store, name)
        cells = (name, info["views_per_image"], info["complete_views"],
                 "; ".join(f"{b['views'][0]}..{b['views'][1]}: {b['chunks_done']}/{b['chunks']} chunks"
                           for b in info["blocks"]),
                 ", ".join(f"{r} ({h}x{w})" for r, (h, w) in info["resolutions"].items()), info["codec"],
                 f"{info['dim']} / {info['summary_dim']}", _bytes(info["bytes"]), info["ok"], info["failed"],
                 info["images"])
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{c}</th>" for c in _COLUMNS) + "</tr>"
    return f"<p>{head}</p><table>{header}{''.join(rows)}</table>"


def _blocks_text(group: Any) -> str:
    return ", ".join(f"{b.view_start}..{b.view_stop - 1}" for b in group.blocks) + " in its view blocks"


def _listed(values: Any) -> str:
    return ", ".join(map(str, values))


def _bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    size, unit = float(n), "B"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000:
            break
    return f"{size:.1f} {unit}"
