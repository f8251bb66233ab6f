"""Checking a feature store: identity, completeness, every chunk file against its manifest, statistics,
and cached-vs-fresh teacher outputs.

Every done chunk's files are read in full and compared with the size and digest recorded when they
were written, so a missing, truncated, moved (swapped) or altered file is reported by the array,
chunk and image keys it holds; edited attributes or array metadata fail the identity fingerprint.
``teacher_check`` re-renders N random stored views from the source images, runs the teacher again
and reports the per-token cosine between cached and fresh outputs against the codec's threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eupe.data.shards import ShardReader
from eupe.models.features import run_teacher
from eupe.models.teachers import create_teacher
from eupe.store import manifest
from eupe.store.codecs.metrics import fidelity
from eupe.store.dims import COORDINATES, coordinate_problems
from eupe.store.layout import OK, READ_ERROR, StoreError
from eupe.store.stats import load_stats, stats_method
from eupe.store.store import FeatureStore
from eupe.store.teacher_group.group import TeacherGroup
from eupe.store.teacher_group.identity import resolution_group_name
from eupe.views.renderer import render
from eupe.views.source import open_image
from eupe.views.spec import ViewSpec


@dataclass
class TeacherReport:
    teacher: str
    incomplete: list[str] = field(default_factory=list)  # image keys in chunks not done
    corrupt: list[dict] = field(default_factory=list)  # {"array", "chunk", "keys", "error"}
    failed_images: int = 0
    read_errors: list[str] = field(default_factory=list)  # keys that failed to *read* (transient: retry)
    stats: dict = field(default_factory=dict)  # resolution -> "ok" | "absent" | "stale" | "partial or altered"
    stats_method: dict = field(default_factory=dict)  # resolution -> how they were computed (stats_method)
    check: dict | None = None
    nonfinite: list[dict] = field(default_factory=list)  # {"resolution", "chunk", "keys", "kinds"} (finite=True)
    no_usable_images: bool = False  # every image failed: the teacher has no target to train on

    @property
    def ok(self) -> bool:
        damaged = any(v == "partial or altered" for v in self.stats.values())
        return (not self.incomplete and not self.corrupt and not damaged and not self.read_errors
                and not self.nonfinite and not self.no_usable_images
                and (self.check is None or self.check["passed"]))


def _chunk_keys(store: FeatureStore, chunk: int) -> list[str]:
    rows = store.chunk_rows(chunk)
    return [str(k) for k in store.keys[rows.start:rows.stop]]


def verify_teacher(store: FeatureStore, name: str, finite: bool = False, progress=None) -> TeacherReport:
    """Every done chunk's files (of every view block) against the manifest; chunks not done are
    listed as incomplete. ``finite``: also decode every stored target and list the images holding
    NaN or infinite values (checksums vouch for the bytes, not for what was written).
    ``progress``: an optional tqdm-like bar, reset to the chunks and updated."""
    report = TeacherReport(name)
    try:
        group = store.teacher(name)
        blocks = group.blocks
    except StoreError as err:
        report.corrupt.append({"array": f"teachers/{name}", "chunk": None, "keys": [], "error": str(err)})
        return report
    if progress is not None:
        progress.reset(total=sum(block.chunks.num_chunks for block in blocks))
    done = [_verify_block(store, block, report, progress) for block in blocks]
    if not report.corrupt:
        for block, flags in zip(blocks, done):
            failures = block.reader.failures(block.reader.status(flags))
            report.failed_images += len(failures) if block is group else 0  # an image fails in every block alike
            report.read_errors += [_label(key, block) for key, reason in failures if reason.startswith(READ_ERROR)]
        report.no_usable_images = bool(store.num_images) and report.failed_images == store.num_images
        report.stats = {str(resolution): stats_state(group, resolution) for resolution in group.resolutions}
        report.stats_method = {str(resolution): stats_method(group, resolution) for resolution in group.resolutions}
        if finite:
            report.nonfinite = [p for block, flags in zip(blocks, done) for p in nonfinite_targets(store, block, flags)]
    return report


def nonfinite_targets(store: FeatureStore, block: TeacherGroup, done: np.ndarray) -> list[dict]:
    """Per done chunk and resolution, the images whose decoded targets hold NaN or infinite values."""
    problems = []
    for chunk in np.flatnonzero(done):
        rows = store.chunk_rows(int(chunk))
        for resolution in block.resolutions:
            targets = block.reader.targets(slice(rows.start, rows.stop), resolution)
            bad = {kind: ~np.isfinite(t.reshape(len(t), -1)).all(axis=1) for kind, t in targets.items()}  # [C]
            images = np.flatnonzero(bad["summary"] | bad["patch"])
            if len(images):
                problems.append({"resolution": resolution, "chunk": int(chunk),
                                 "keys": [_label(str(store.keys[rows.start + i]), block) for i in images],
                                 "kinds": [kind for kind in ("summary", "patch") if bad[kind].any()]})
    return problems


def _verify_block(store: FeatureStore, block: TeacherGroup, report: TeacherReport, progress=None) -> np.ndarray:
    """Check one block's done chunks in full into ``report``; returns its done flags."""
    rows = block.chunks.manifest_rows()
    for problem in coordinate_problems(block.group, block.attrs.get(COORDINATES, {})):
        report.corrupt.append({"array": problem.split(":")[0], "chunk": None, "keys": [], "error": problem})
    for chunk in range(block.chunks.num_chunks):
        if progress is not None:
            progress.update(1)
        if rows[chunk, 0, manifest.SIZE] == 0:
            report.incomplete += [_label(key, block) for key in _chunk_keys(store, chunk)]
            continue
        for column, array_name in enumerate(block.array_names):
            problem = manifest.check_full(block.array(array_name), array_name, chunk, rows[chunk, column],
                                          block.fingerprint)
            if problem:
                report.corrupt.append({"array": f"{block.group.path}/{array_name}", "chunk": chunk,
                                       "keys": _chunk_keys(store, chunk), "error": problem})
    return rows[:, 0, manifest.SIZE] > 0


def _label(key: str, block: TeacherGroup) -> str:
    """An image key, with the views when they are a view block's."""
    return key if block.parent is None else f"{key} (views {block.view_start}..{block.view_stop - 1})"


def stats_state(group: TeacherGroup, resolution: int) -> str:
    """'ok', 'absent', 'stale' (the store changed since: recomputed when used) or 'partial or altered'."""
    resolution_group = group.group[resolution_group_name(resolution)]
    if "stats" not in resolution_group:
        return "absent"
    if load_stats(group, resolution) is not None:
        return "ok"
    complete = dict(resolution_group["stats"].attrs).get("complete")
    if complete and complete.get("covers") != group.chunks.done_set_digest():
        return "stale"
    return "partial or altered"


def verify_images(store: FeatureStore) -> list[dict]:
    """The dataset index arrays against the digests recorded at creation."""
    problems = []
    for name in ("keys", "shard", "offset", "size", "label"):
        try:
            store.image_array(name)
        except StoreError as err:
            problems.append({"array": f"images/{name}", "chunk": None, "keys": [], "error": str(err)})
    return problems


def teacher_check(group: TeacherGroup, n: int, seed: int = 0, weights: str | Path | None = None,
                  test_scale: bool = False, progress=None) -> dict:
    """Cosine between cached targets and the teacher re-run on N random stored views (``rule`` words the
    pass rule). ``progress``: an optional tqdm-like bar, updated per view."""
    teacher = create_teacher(group.attrs["name"], weights, test_scale)
    if teacher.fingerprint != group.attrs["weights_sha256"]:
        return {"passed": False, "error": f"teacher weights differ from the store's "
                f"({teacher.fingerprint[:16]} vs {group.attrs['weights_sha256'][:16]})"}
    picks = _pick_views(group, n, seed)
    reader = ShardReader(group.store.shard_index())
    cosines, pairs = [], []
    for row, k, resolution in picks:
        cached = group.reader.targets(row, resolution, k)
        view = ViewSpec.from_array(group.blocks.view_params(row, k))
        pixels = render(open_image(reader.read(row), None), view, resolution)[None]
        summary, patch = run_teacher(teacher, pixels, 1, torch.device("cpu"))
        # summary [Ds] and patch [T, D] tokens may differ in width: one cosine per token, pooled
        cosines.append(np.concatenate([_token_cosine(cached["summary"][None], summary),
                                       _token_cosine(cached["patch"].reshape(-1, group.dim), patch[0])]))
        pairs.append((resolution, patch[0], cached["patch"].reshape(-1, group.dim)))
        if progress is not None:
            progress.update(1)
    reader.close()
    rule = (f"pass when the mean cosine, over every summary and patch token of the {len(picks)} views, between the "
            f"cached targets (decoded) and the teacher re-run now on the same stored views (same crop, flip and "
            f"photometrics, raw features) is at least {group.codec.min_cosine:.5g}, the {group.codec.name} codec's "
            f"threshold; the normalized figures are reported, not judged")
    return {**_check_summary(cosines, group.codec.min_cosine), **_normalized(group, pairs), "rule": rule}


def _normalized(group: TeacherGroup, pairs: list[tuple[int, np.ndarray, np.ndarray]]) -> dict:
    """Patch fidelity where the loss looks: per-coordinate normalized cosine and the smooth-L1 floor.

    Normalized with the store's statistics of each resolution, or, where the store has none, with
    the statistics of the fresh tokens checked here (said in ``normalized_with``)."""
    if not pairs:
        return {}
    fresh = np.concatenate([p[1] for p in pairs])
    cached = np.concatenate([p[2] for p in pairs])
    stored = [load_stats(group, resolution) for resolution in sorted({p[0] for p in pairs})]
    if len(stored) == 1 and stored[0] is not None:
        mean, std, source = stored[0]["patch_mean"], stored[0]["patch_std"], "store statistics"
    else:
        mean, std, source = fresh.mean(0), fresh.std(0) + 1e-6, "the checked views' own statistics"
    result = fidelity(fresh, cached, mean, np.maximum(std, 1e-6))
    return {"norm_cosine": result["norm_cosine"], "norm_cosine_min": result["norm_cosine_min"],
            "smooth_l1_floor": result["smooth_l1"], "normalized_with": source}


def _pick_views(group: TeacherGroup, n: int, seed: int) -> list[tuple[int, int, int]]:
    rows = np.flatnonzero(group.reader.status() == OK)
    rng = np.random.default_rng(seed)
    k = group.blocks.complete_views() or group.block_views  # views in complete blocks (else the first block's)
    chosen = rng.choice(len(rows), size=min(n, len(rows)), replace=False) if len(rows) else []
    return [(int(rows[i]), int(rng.integers(k)), int(rng.choice(group.resolutions))) for i in chosen]


def _token_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-token cosine; tokens whose difference is negligible count as equal (cosine 1), so two
    all-zero tokens pass instead of giving 0/0."""
    num = (a * b).sum(-1)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    scale = max(float(np.abs(b).max(initial=0.0)), 1.0)
    same = np.abs(a - b).max(axis=-1) <= 1e-6 * scale
    return np.where(same, 1.0, num / np.maximum(na * nb, 1e-30))


def _check_summary(cosines: list[np.ndarray], threshold: float) -> dict:
    if not cosines:
        return {"passed": False, "error": "no completed views to check"}
    per_view = np.array([c.mean() for c in cosines])
    all_tokens = np.concatenate(cosines)
    return {"views": len(cosines), "mean_cosine": float(all_tokens.mean()), "min_cosine": float(all_tokens.min()),
            "worst_view_mean": float(per_view.min()), "threshold": threshold,
            "passed": bool(all_tokens.mean() >= threshold)}
