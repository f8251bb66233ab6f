"""Per-teacher normalization statistics over a feature store (DESIGN §2, §3.3).

Streaming float64 per-coordinate mean and standard deviation of the summary and patch tokens,
merged chunk by chunk with Chan's parallel update (numerically stable, constant memory).
The result is stored in the teacher's resolution group as plain arrays:
``r<res>/stats/{summary,patch}_{mean,std}`` [D] float64 with ``count`` in the attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from eupe.store.store import OK, compressors
from eupe.store.teacher_group import TeacherGroup, res_group_name


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations of vectors, updated in float64."""

    dim: int
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


def compute_stats(group: TeacherGroup, res: int, progress: Callable[[int], None] | None = None) -> dict[str, RunningMoments]:
    """Moments of the decoded summary and patch tokens over every completed chunk."""
    moments = {"summary": RunningMoments(group.dim), "patch": RunningMoments(group.dim)}
    done = group.done_flags()
    status = group.status()
    for chunk in np.flatnonzero(done):
        rows = group.store.chunk_rows(int(chunk))
        ok = status[rows.start:rows.stop] == OK
        if ok.any():
            targets = group.decode(group.read_parts(slice(rows.start, rows.stop), res), res)
            moments["summary"].update(targets["summary"][ok])
            moments["patch"].update(targets["patch"][ok])
        if progress:
            progress(len(rows))
    return moments


def save_stats(group: TeacherGroup, res: int, moments: dict[str, RunningMoments]) -> None:
    """Write the statistics next to the targets they describe."""
    stats = group.group[res_group_name(res)].require_group("stats")
    for kind, m in moments.items():
        for name, values in (("mean", m.mean), ("std", m.std)):
            stats.create_array(f"{kind}_{name}", data=np.asarray(values, np.float64),
                               compressors=compressors(), overwrite=True)
    stats.attrs.update({kind: {"count": m.count} for kind, m in moments.items()})


def load_stats(group: TeacherGroup, res: int) -> dict[str, np.ndarray] | None:
    """{"summary_mean", "summary_std", "patch_mean", "patch_std"} or None when not computed."""
    res_group = group.group[res_group_name(res)]
    if "stats" not in res_group:
        return None
    stats = res_group["stats"]
    return {name: np.asarray(arr[:]) for name, arr in stats.arrays()}
