"""The feature store: one package, one way in. Applications import from here, not from its modules.

Names are imported lazily (PEP 562), so ``import eupe.store`` and the light ``eupe.store.layout``
cost nothing until a store is actually opened (the CLIs answer ``--help`` without torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FAILED": "layout", "OK": "layout", "PENDING": "layout", "StoreError": "layout",
    "StoreIntegrityError": "layout", "StoreLookupError": "layout", "StoreMismatchError": "layout",
    "StoreWriteError": "layout", "Sample": "notebook",
    "FeatureStore": "store", "StoreParams": "store",
    "TeacherGroup": "teacher_group.group", "TeacherIdentity": "teacher_group.identity",
    "RunningMoments": "stats", "compute_stats": "stats", "load_stats": "stats", "save_stats": "stats",
    "describe_method": "stats", "sample_pairs": "stats", "stats_method": "stats",
    "Run": "plan", "Shape": "plan", "estimate": "plan", "measure_costs": "plan",
    "ExtractConfig": "extract", "extract_teacher": "extract", "load_teachers": "extract",
    "open_or_create_store": "extract",
    "teacher_check": "verify", "verify_images": "verify", "verify_teacher": "verify",
    "get_codec": "codecs", "Codec": "codecs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eupe.store' has no attribute {name!r}")
    return getattr(importlib.import_module(f"eupe.store.{_EXPORTS[name]}"), name)
