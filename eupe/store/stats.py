"""Per-teacher normalization statistics over a feature store (docs/design.md, "Targets").

Float64 per-coordinate mean and standard deviation of the summary and patch tokens, merged
with Chan's parallel update (numerically stable, constant memory). By default they are
estimated from a seeded uniform sample of ``DEFAULT_SAMPLE`` (image, view) pairs drawn without
replacement among the usable images of done chunks; ``sample=None`` makes a full pass over every
view. Work is split in blocks of chunks between ``workers`` threads (numpy's array operations
release the GIL; the speed-up could not be measured on the loaded 2-core development machine) and
the blocks' moments are merged in chunk order, so the values do not depend on the number of threads
nor on their timing. Why 8192 views: one paper-sized batch; the estimate's error shrinks as 1/sqrt(views)
(docs/cache.md, "Statistics", gives the error measured against a full pass by ``bench/plan.py``),
and at the paper's shapes it reads in seconds per teacher instead of the ~31 h of a full pass.

The result is stored in the teacher's resolution group as plain arrays:
``r<resolution>/stats/{summary,patch}_{mean,std}`` [D] float64 with ``count`` in the attributes.
Statistics are written arrays first and the ``complete`` record last: it names the set of done
chunks they were computed over (a digest of the manifest), a digest of the values, and how they
were computed (``method``: full pass or sample size, population and seed), so statistics
interrupted while saving, computed over a store that has grown since, or edited are never used
-- :func:`load_stats` returns None for them and callers recompute.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from eupe.store import consolidated, dims
from eupe.store.layout import OK, StoreError, compressors, failpoint, sha256_of
from eupe.store.teacher_group.group import TeacherGroup
from eupe.store.teacher_group.identity import resolution_group_name

NAMES = ("summary_mean", "summary_std", "patch_mean", "patch_std")
DEFAULT_SAMPLE = 8192  # (image, view) pairs; see the module docstring
DEFAULT_SEED = 0
_BLOCK = 64  # chunks per unit of parallel work
Progress = Callable[[int, int], None]  # (views just done, views in all)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations of vectors, updated in float64."""

    dim: int
    covers: str = ""  # done-set digest of the store the moments were computed over
    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    method: dict = field(default_factory=dict)  # how the vectors were chosen (full pass or sample)

    def update(self, x: np.ndarray) -> None:
        d = np.array(x, dtype=np.float64).reshape(-1, self.dim)  # [..., D] -> [n, D], a copy changed in place
        if len(d):
            batch_mean = d.sum(axis=0) / len(d)
            d -= batch_mean
            self._add(len(d), batch_mean, np.einsum("ij,ij->j", d, d))  # no squared temporary: ~2x faster

    def merge(self, other: "RunningMoments") -> None:
        """Fold in moments of other vectors (Chan et al.'s pairwise update)."""
        if other.count:
            self._add(other.count, other.mean, other.m2)

    def _add(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean.copy(), m2.copy()
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count - 1, 1))


def sample_pairs(group: TeacherGroup, sample: int | None = DEFAULT_SAMPLE, seed: int = DEFAULT_SEED,
                 status: np.ndarray | None = None) -> np.ndarray:
    """[S, 2] int64 (row, view) pairs sorted by row: a seeded uniform sample without replacement of
    ``sample`` pairs among the usable (OK) images of done chunks, or all of them when ``sample`` is
    None or at least their number."""
    status = group.reader.status() if status is None else status
    rows = np.flatnonzero(status == OK)
    k = group.block_views
    total = len(rows) * k
    if sample is None or sample >= total:
        picks = np.arange(total, dtype=np.int64)
    else:
        picks = np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False))
    return np.stack([rows[picks // k], picks % k], axis=1).astype(np.int64)  # pair i -> (row, view)


def compute_stats(group: TeacherGroup, resolution: int, progress: Progress | None = None,
                  sample: int | None = DEFAULT_SAMPLE, seed: int = DEFAULT_SEED,
                  workers: int | None = None) -> dict[str, RunningMoments]:
    """Moments of the decoded summary and patch tokens over :func:`sample_pairs` (``sample=None``:
    every usable view of every done chunk), read by ``workers`` threads (default: up to 8)."""
    rows = group.chunks.manifest_rows()
    covers = sha256_of(rows.tolist())  # == group.chunks.done_set_digest() as of now
    status = group.reader.status(rows[:, 0, 0] > 0)
    pairs = sample_pairs(group, sample, seed, status)
    if not len(pairs):
        raise StoreError(f"{group.group.path}: no usable views in done chunks to compute statistics from; "
                         "extract first (or check `eupe-cache info` for failed inputs)")
    population = int((status == OK).sum()) * group.block_views
    method = {"full": len(pairs) == population, "views": len(pairs), "population": population,
              "seed": None if len(pairs) == population else seed}
    group.reader.fast_readers(resolution)  # built once here, not raced by the threads
    per_chunk = np.split(pairs, np.flatnonzero(np.diff(pairs[:, 0] // group.store.params.images_per_chunk)) + 1)
    # blocks of _BLOCK chunks are the unit of work, merged in order: the same values bit for bit
    # whatever the number of threads or their timing
    blocks = np.array_split(np.arange(len(per_chunk)), -(-len(per_chunk) // _BLOCK))

    def run(indices: np.ndarray) -> dict[str, RunningMoments]:
        moments = _empty(group)
        for i in indices:
            _accumulate(group, resolution, per_chunk[i], moments)
            if progress:
                progress(len(per_chunk[i]), len(pairs))
        return moments

    with ThreadPoolExecutor(max_workers=min(workers or default_workers(), len(blocks))) as pool:
        results = list(pool.map(run, blocks))
    total = _empty(group, covers, method)
    for result in results:  # in chunk order
        for kind in total:
            total[kind].merge(result[kind])
    return total


def _empty(group: TeacherGroup, covers: str = "", method: dict | None = None) -> dict[str, RunningMoments]:
    return {"summary": RunningMoments(group.summary_dim, covers, method=dict(method or {})),
            "patch": RunningMoments(group.dim, covers, method=dict(method or {}))}


def _accumulate(group: TeacherGroup, resolution: int, pairs: np.ndarray, moments: dict[str, RunningMoments]) -> None:
    """Add the targets of ``pairs`` (all in one chunk): one direct (row, view) read each on a local
    store (0.7 ms/view against 1.6 ms through zarr for a whole chunk of 16 x 4 views at T=256,
    D=768), the whole chunk at once through zarr elsewhere (object stores) when it holds many."""
    rows = group.store.chunk_rows(int(pairs[0, 0]) // group.store.params.images_per_chunk)
    dense = len(pairs) * 2 >= len(rows) * group.block_views
    if dense and group.store.local_root is None:  # object storage: a chunk's objects in whole
        chunk = group.reader.targets(slice(rows.start, rows.stop), resolution)
        views = ({kind: chunk[kind][row - rows.start, view] for kind in moments} for row, view in pairs)
    else:
        views = (group.reader.targets(int(row), resolution, int(view)) for row, view in pairs)
    for targets in views:  # one update per view either way: the same values bit for bit on every path
        for kind in moments:
            moments[kind].update(targets[kind])


_CHANNEL_DIMS = {"summary": dims.SUMMARY_CHANNEL, "patch": dims.CHANNEL}


def save_stats(group: TeacherGroup, resolution: int, moments: dict[str, RunningMoments],
               covers: str | None = None) -> None:
    """Write the statistics next to the targets they describe; the ``complete`` record goes last.

    ``covers`` is the done-set digest the moments were computed over (default: the current one).
    """
    _check_finite(group, resolution, moments)
    stats = group.group[resolution_group_name(resolution)].require_group("stats")
    stats.attrs.put({})  # an older complete record must not vouch for the arrays being replaced
    values = {}
    for kind, m in moments.items():
        for name, data in (("mean", m.mean), ("std", m.std)):
            values[f"{kind}_{name}"] = np.asarray(data, np.float64)
            stats.create_array(f"{kind}_{name}", data=values[f"{kind}_{name}"], compressors=compressors(),
                               overwrite=True, dimension_names=(_CHANNEL_DIMS[kind],))
    failpoint("stats-arrays")
    stats.attrs.put({**{kind: {"count": m.count} for kind, m in moments.items()},
                     "complete": {"covers": covers or moments["patch"].covers or group.chunks.done_set_digest(),
                                  "values_sha256": _digest(values), "method": moments["patch"].method}})
    consolidated.refresh(group.store.group.store)


def _check_finite(group: TeacherGroup, resolution: int, moments: dict[str, RunningMoments]) -> None:
    """Refuse NaN or infinite moments: they come from non-finite targets and would normalize every target to NaN."""
    for kind, m in moments.items():
        bad = int((~np.isfinite(m.mean) | ~np.isfinite(m.std)).sum())
        if bad:
            where = group.store.where
            raise StoreError(f"{where}/{group.group.path} r{resolution}: {bad} of {m.dim} {kind} statistics coordinates "
                             "are NaN or infinite, so the store holds non-finite targets; nothing was saved. List them "
                             f"with `eupe-cache verify {where} --finite` and re-extract into a new store")


def _digest(values: dict[str, np.ndarray]) -> str:
    return sha256_of({k: np.asarray(values[k], np.float64).tobytes().hex() for k in sorted(values)})


def load_stats(group: TeacherGroup, resolution: int, covers: str | None = None) -> dict[str, np.ndarray] | None:
    """{"summary_mean", "summary_std", "patch_mean", "patch_std"} float64, or None when absent,
    partly written, edited, or computed over another set of done chunks than the store has now
    (``covers``: the current done-set digest when the caller has it, else read here)."""
    resolution_group = group.group[resolution_group_name(resolution)]
    if "stats" not in resolution_group:
        return None
    stats = resolution_group["stats"]
    complete = dict(stats.attrs).get("complete")
    if not complete or complete.get("covers") != (covers or group.chunks.done_set_digest()):
        return None
    try:
        values = {name: np.asarray(stats[name][:]) for name in NAMES}
    except (KeyError, ValueError):
        return None
    return values if _digest(values) == complete.get("values_sha256") else None


def stats_method(group: TeacherGroup, resolution: int) -> dict | None:
    """How the saved statistics were computed ({"full", "views", "population", "seed"}), None when
    there are none; stores written before the record existed say {} (a full pass)."""
    resolution_group = group.group[resolution_group_name(resolution)]
    if "stats" not in resolution_group:
        return None
    complete = dict(resolution_group["stats"].attrs).get("complete")
    return None if not complete else dict(complete.get("method", {}))


def describe_method(method: dict | None) -> str:
    """One phrase for verify/info: 'full pass over 96 views' or 'sample of 8192 of 5120000 views (seed 0)'."""
    if method is None:
        return "absent"
    if not method:
        return "full pass (recorded before sampling existed)"
    if method.get("full"):
        return f"full pass over {method['views']} views"
    return f"sample of {method['views']} of {method['population']} views (seed {method['seed']})"
