"""Evaluation tasks behind one seam (:mod:`eupe.eval.tasks.base`); ``load_tasks()`` registers them all."""

from __future__ import annotations

import importlib

from eupe.eval.tasks.base import TASKS, EvalTask

# One module per task, each registering itself on import.
TASK_MODULES: tuple[str, ...] = ("seg", "depth", "corr")


def load_tasks() -> list[str]:
    """Import every task module (each registers its task) and return the registered names."""
    for module in TASK_MODULES:
        importlib.import_module(f"eupe.eval.tasks.{module}")
    return TASKS.names()


def get_task(name: str) -> EvalTask:
    """The registered task ``name`` (``UnknownNameError`` lists the valid ones)."""
    load_tasks()
    return TASKS.get(name)
