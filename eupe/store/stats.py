"""Per-teacher normalization statistics over a feature store (DESIGN §2, §3.3).

Streaming float64 per-coordinate mean and standard deviation of the summary and patch tokens,
merged chunk by chunk with Chan's parallel update (numerically stable, constant memory).
The result is stored in the teacher's resolution group as plain arrays:
``r<resolution>/stats/{summary,patch}_{mean,std}`` [D] float64 with ``count`` in the attributes.

Statistics are written arrays first and the ``complete`` record last: it names the set of done
chunks they were computed over (a digest of the manifest) and a digest of the values, so
statistics interrupted while saving, computed over a store that has grown since, or edited are
never used -- :func:`load_stats` returns None for them and callers recompute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from eupe.store.layout import OK, compressors, failpoint, sha256_of
from eupe.store.teacher_group import TeacherGroup, resolution_group_name

NAMES = ("summary_mean", "summary_std", "patch_mean", "patch_std")


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations of vectors, updated in float64."""

    dim: int
    covers: str = ""  # done-set digest of the store the moments were computed over
    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)  # [..., D] -> [n, D]
        n = len(x)
        if n == 0:
            return
        batch_mean = x.mean(axis=0)
        batch_m2 = ((x - batch_mean) ** 2).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, batch_mean, batch_m2
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count - 1, 1))


def compute_stats(group: TeacherGroup, resolution: int,
                  progress: Callable[[int], None] | None = None) -> dict[str, RunningMoments]:
    """Moments of the decoded summary and patch tokens over every completed chunk."""
    rows = group.manifest_rows()
    covers = sha256_of(rows.tolist())  # == group.done_set_digest() as of now
    moments = {"summary": RunningMoments(group.summary_dim, covers), "patch": RunningMoments(group.dim, covers)}
    done = rows[:, 0, 0] > 0
    status = group.status(done)
    for chunk in np.flatnonzero(done):
        rows = group.store.chunk_rows(int(chunk))
        ok = status[rows.start:rows.stop] == OK
        if ok.any():
            targets = group.decode(group.read_parts(slice(rows.start, rows.stop), resolution), resolution)
            moments["summary"].update(targets["summary"][ok])
            moments["patch"].update(targets["patch"][ok])
        if progress:
            progress(len(rows))
    return moments


def save_stats(group: TeacherGroup, resolution: int, moments: dict[str, RunningMoments],
               covers: str | None = None) -> None:
    """Write the statistics next to the targets they describe; the ``complete`` record goes last.

    ``covers`` is the done-set digest the moments were computed over (default: the current one).
    """
    stats = group.group[resolution_group_name(resolution)].require_group("stats")
    stats.attrs.put({})  # an older complete record must not vouch for the arrays being replaced
    values = {}
    for kind, m in moments.items():
        for name, data in (("mean", m.mean), ("std", m.std)):
            values[f"{kind}_{name}"] = np.asarray(data, np.float64)
            stats.create_array(f"{kind}_{name}", data=values[f"{kind}_{name}"], compressors=compressors(),
                               overwrite=True)
    failpoint("stats-arrays")
    stats.attrs.put({**{kind: {"count": m.count} for kind, m in moments.items()},
                     "complete": {"covers": covers or moments["patch"].covers or group.done_set_digest(), "values_sha256": _digest(values)}})


def _digest(values: dict[str, np.ndarray]) -> str:
    return sha256_of({k: np.asarray(values[k], np.float64).tobytes().hex() for k in sorted(values)})


def load_stats(group: TeacherGroup, resolution: int) -> dict[str, np.ndarray] | None:
    """{"summary_mean", "summary_std", "patch_mean", "patch_std"} float64, or None when absent,
    partly written, edited, or computed over another set of done chunks than the store has now."""
    resolution_group = group.group[resolution_group_name(resolution)]
    if "stats" not in resolution_group:
        return None
    stats = resolution_group["stats"]
    complete = dict(stats.attrs).get("complete")
    if not complete or complete.get("covers") != group.done_set_digest():
        return None
    try:
        values = {name: np.asarray(stats[name][:]) for name in NAMES}
    except (KeyError, ValueError):
        return None
    return values if _digest(values) == complete.get("values_sha256") else None
