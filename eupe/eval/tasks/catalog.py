"""Which evaluation tasks exist, without loading them: the task modules' names, and loading them on demand.

``TASK_MODULES`` is torch-free, so ``eupe-eval --help`` lists a subcommand per task module (named like
its task) at once; :func:`load_tasks` imports every task module, each of which registers its task in
:data:`eupe.eval.tasks.base.TASKS` on import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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
