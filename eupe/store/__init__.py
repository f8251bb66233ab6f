"""The feature store: one package, one way in. Applications import from here, not from its modules."""

from eupe.store.stats import RunningMoments, compute_stats, load_stats, save_stats
from eupe.store.store import FAILED, OK, PENDING, FeatureStore, StoreMismatchError, StoreParams
from eupe.store.teacher_group import TeacherGroup

__all__ = [
    "FAILED", "OK", "PENDING", "FeatureStore", "RunningMoments", "StoreMismatchError", "StoreParams",
    "TeacherGroup", "compute_stats", "load_stats", "save_stats",
]
