"""Model registry: teachers, the proxy and students, all behind one feature contract.

Specs, names and weight locations import neither torch nor timm, so listing them is instant;
``Encoder``, ``Features``, ``run_teacher`` and everything that builds a model load torch/timm
on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from eupe.models.proxy import ProxyConfig, count_parameters, load_proxy, save_proxy
from eupe.models.spec import EncoderSpec
from eupe.models.students import create_student, list_students, student_spec
from eupe.models.teachers import create_teacher, list_teachers, teacher_spec, teacher_weights_path
from eupe.models.weights import MissingWeightsError, WeightsFileError
from eupe.registry import UnknownNameError

_HEAVY = {"Encoder": "eupe.models.features", "Features": "eupe.models.features",
          "run_teacher": "eupe.models.features", "teacher_batch": "eupe.models.features"}

__all__ = [
    "Encoder", "EncoderSpec", "Features", "MissingWeightsError", "ProxyConfig", "UnknownNameError",
    "WeightsFileError", "count_parameters", "create_student", "create_teacher", "list_students",
    "list_teachers", "load_proxy", "run_teacher", "save_proxy", "student_spec", "teacher_batch", "teacher_spec",
    "teacher_weights_path",
]


def __getattr__(name: str) -> Any:
    """Load torch-backed names (``Encoder``, ``Features``, ``run_teacher``) on first use."""
    if name in _HEAVY:
        return getattr(importlib.import_module(_HEAVY[name]), name)
    raise AttributeError(f"module 'eupe.models' has no attribute {name!r}")
