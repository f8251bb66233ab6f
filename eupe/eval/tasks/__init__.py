"""Evaluation tasks behind one seam (:mod:`eupe.eval.tasks.base`); ``load_tasks()`` registers them all.

``TASK_MODULES`` is importable without torch (``eupe-eval --help`` lists a subcommand per module,
named like its task); the registry and the task classes load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eupe.eval.tasks.base import EvalTask

# One module per task, each registering itself on import (the task's name is the module's name);
# the suite's columns follow this order.
TASK_MODULES: tuple[str, ...] = ("knn", "zeroshot", "seg", "depth", "corr", "agreement", "pca")


def load_tasks() -> list[str]:
    """Import every task module (each registers its task) and return the registered names."""
    from eupe.eval.tasks.base import TASKS

    for module in TASK_MODULES:
        importlib.import_module(f"eupe.eval.tasks.{module}")
    return TASKS.names()


def get_task(name: str) -> EvalTask:
    """The registered task ``name`` (``UnknownNameError`` lists the valid ones)."""
    from eupe.eval.tasks.base import TASKS

    load_tasks()
    return TASKS.get(name)


def __getattr__(name: str) -> Any:
    if name in ("TASKS", "EvalTask"):
        from eupe.eval.tasks import base

        return getattr(base, name)
    raise AttributeError(name)
