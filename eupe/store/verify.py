"""Checking a feature store: completeness, chunk checksums, and cached-vs-fresh teacher outputs.

Every chunk of every array is read back (zstd + crc32c: a flipped byte fails its checksum);
incomplete and corrupt chunks are reported by the image keys they hold. ``teacher_check``
re-renders N random stored views from the source images, runs the teacher again and reports
the per-token cosine between cached and fresh outputs against the codec's threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zarr

from eupe.data.shards import ShardReader
from eupe.models import create_teacher
from eupe.models import run_teacher
from eupe.store.store import OK, FeatureStore
from eupe.store.teacher_group import TeacherGroup
from eupe.views import ViewSpec, decode_image, render


@dataclass
class TeacherReport:
    teacher: str
    incomplete: list[str] = field(default_factory=list)  # image keys in chunks not marked done
    corrupt: list[dict] = field(default_factory=list)  # {"array", "chunk", "keys", "error"}
    failed_images: int = 0
    check: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.incomplete and not self.corrupt and (self.check is None or self.check["passed"])


def _chunk_keys(store: FeatureStore, chunk: int) -> list[str]:
    rows = store.chunk_rows(chunk)
    return [str(k) for k in store.keys[rows.start:rows.stop]]


def scan_array(store: FeatureStore, array: zarr.Array, label: str) -> list[dict]:
    """Read every chunk along the image axis; report those that fail to decode."""
    problems = []
    per_chunk = (array.shards or array.chunks)[0]  # the unit one writer wrote
    for chunk in range(-(-array.shape[0] // per_chunk)):
        try:
            array[chunk * per_chunk:(chunk + 1) * per_chunk]
        except Exception as err:  # noqa: BLE001 - any decode failure is corruption to report
            keys = _chunk_keys(store, chunk) if per_chunk == store.params.images_per_chunk else []
            problems.append({"array": label, "chunk": chunk, "keys": keys, "error": str(err)})
    return problems


def _arrays(group: zarr.Group, prefix: str):
    for name, array in group.arrays():
        yield f"{prefix}/{name}", array
    for name, sub in group.groups():
        if name != "stats":
            yield from _arrays(sub, f"{prefix}/{name}")


def verify_teacher(store: FeatureStore, name: str) -> TeacherReport:
    group = store.teacher(name)
    report = TeacherReport(name)
    for label, array in _arrays(group.group, f"teachers/{name}"):
        if label.endswith("/done"):
            continue
        report.corrupt += scan_array(store, array, label)
    done = group.done_flags()
    for chunk in np.flatnonzero(~done):
        report.incomplete += _chunk_keys(store, int(chunk))
    report.failed_images = int((group.status() == 2).sum())
    return report


def verify_images(store: FeatureStore) -> list[dict]:
    return [p for label, arr in _arrays(store.group["images"], "images") for p in scan_array(store, arr, label)]


def teacher_check(group: TeacherGroup, n: int, seed: int = 0, weights: str | Path | None = None,
                  test_scale: bool = False) -> dict:
    """Cosine between cached targets and the teacher re-run on N random stored views."""
    teacher = create_teacher(group.attrs["name"], weights, test_scale)
    if teacher.fingerprint != group.attrs["weights_sha256"]:
        return {"passed": False, "error": f"teacher weights differ from the store's "
                f"({teacher.fingerprint[:16]} vs {group.attrs['weights_sha256'][:16]})"}
    picks = _pick_views(group, n, seed)
    reader = ShardReader(group.store.shard_index())
    cosines = []
    for row, k, res in picks:
        cached = group.targets(row, res, k)
        view = ViewSpec.from_array(group.views(row)[k])
        pixels = render(decode_image(reader.read(row)), view, res)[None]
        summary, patch = run_teacher(teacher, pixels, 1, torch.device("cpu"))
        fresh = np.concatenate([summary[:, None], patch], axis=1)[0]  # [1 + T, D]
        stored = np.concatenate([cached["summary"][None], cached["patch"].reshape(-1, group.dim)])
        cosines.append(_token_cosine(stored, fresh))
    reader.close()
    return _check_summary(cosines, group.codec.min_cosine)


def _pick_views(group: TeacherGroup, n: int, seed: int) -> list[tuple[int, int, int]]:
    rows = np.flatnonzero(group.status() == OK)
    rng = np.random.default_rng(seed)
    k = group.store.params.views_per_image
    chosen = rng.choice(len(rows), size=min(n, len(rows)), replace=False) if len(rows) else []
    return [(int(rows[i]), int(rng.integers(k)), int(rng.choice(group.resolutions))) for i in chosen]


def _token_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def _check_summary(cosines: list[np.ndarray], threshold: float) -> dict:
    if not cosines:
        return {"passed": False, "error": "no completed views to check"}
    per_view = np.array([c.mean() for c in cosines])
    all_tokens = np.concatenate(cosines)
    return {"views": len(cosines), "mean_cosine": float(all_tokens.mean()), "min_cosine": float(all_tokens.min()),
            "worst_view_mean": float(per_view.min()), "threshold": threshold,
            "passed": bool(all_tokens.mean() >= threshold)}
