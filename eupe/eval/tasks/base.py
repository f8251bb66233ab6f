"""The seam every evaluation task plugs into: one module per task, with its own config and ``run``.

A task evaluates one model on one kind of data and returns :class:`Figure` s: one number each, with
everything that produced it (task, metric, dataset or offline fixture, protocol settings, the
model's fingerprint). ``eupe-eval suite`` runs every registered task over every model and writes the
table; single tasks stay available as subcommands. To add a task, write a module under
``eupe/eval/tasks/`` with an :class:`EvalTask` subclass (:class:`PresetTask` when it has quick and
full presets), call :func:`register_task` at its end, and add the module's name to
``TASK_MODULES`` in ``eupe/eval/tasks/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from eupe.models.features import Encoder
from eupe.registry import Registry

OFFLINE = "offline"


class TaskOptionError(ValueError):
    """A task setting that does not exist or does not fit (``--set TASK.KEY=VALUE``)."""


class NotAvailableError(ValueError):
    """A single task run where no figure could be computed (the reason says what is missing)."""


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One number of the results table and everything that produced it."""

    task: str  # registered task name ("knn", "seg", ...)
    metric: str  # "top1@20", "mIoU", "RMSE", "PCK@0.1", ...
    value: float | None  # None: not available here, ``reason`` says why (never a made-up number)
    model: str  # the row label
    fingerprint: str  # the model's weights fingerprint
    data: str  # dataset ("ADE20K val") or offline fixture ("offline: Fashion-MNIST mosaics")
    offline: bool  # True for offline fixtures: never printed under the paper's dataset names
    higher_is_better: bool = True
    settings: dict[str, Any] = field(default_factory=dict)  # protocol settings behind the value
    reason: str | None = None


@dataclass
class EvalModel:
    """A model under evaluation: its frozen encoder and, when it has one, a CLIP-space summary."""

    name: str  # the row label ("dinov2s_imgfocus", "runs/stage2", "vit_t=random")
    encoder: Encoder  # eval mode, frozen; pixels [B, 3, H, W] in [0, 1] -> {"summary", "patch"}
    # pixels [B, 3, H, W] in [0, 1] -> CLIP-space summary [B, Dc]; None when the model has none
    clip_summary: Callable[[torch.Tensor], torch.Tensor] | None = None
    clip_reason: str | None = None  # why clip_summary is None
    run_dir: Path | None = None  # the training run directory it came from (adapter heads, evaluations.jsonl)

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint


@dataclass
class EvalContext:
    """What every task gets besides the model: where the data is and how to run."""

    data: str = OFFLINE  # "offline" or a dataset root (a task says which layout it expects)
    quick: bool = False  # the small offline version (CI, demo)
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 32
    cache_dir: Path | None = None  # where tasks may cache reusable work (text classifiers...)
    progress: Callable[[str, int, int], None] | None = None  # (what, done, total)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # task name -> config overrides
    out_dir: Path | None = None  # where tasks may write pictures (pca); None: nothing written

    def report(self, what: str, done: int, total: int) -> None:
        """Progress of long work (no-op without a ``progress`` callback)."""
        if self.progress is not None:
            self.progress(what, done, total)


class EvalTask(ABC):
    """One evaluation task. ``name`` is its registry key and subcommand, ``column`` its table title.

    ``headline`` is the metric the table shows (None: the task's first figure); ``Config`` is the
    task's own settings dataclass (None: no settings), overridden per run by ``ctx.options[name]``.
    """

    name: ClassVar[str]
    column: ClassVar[str]
    headline: ClassVar[str | None] = None
    Config: ClassVar[type | None] = None
    in_table: ClassVar[bool] = True  # False: the task makes pictures, not table cells (pca)

    def defaults(self, ctx: EvalContext) -> Any:
        """The settings ``ctx`` asks for before any ``--set`` override (a task may differ with
        ``ctx.quick`` or the data): ``Config()`` unless the task says otherwise."""
        return self.Config()

    def config(self, ctx: EvalContext) -> Any:
        """This task's settings for ``ctx``: :meth:`defaults` with ``ctx.options[name]`` applied."""
        overrides = ctx.options.get(self.name, {})
        if self.Config is None:
            if overrides:
                raise TaskOptionError(f"task {self.name!r} has no settings (got {', '.join(overrides)})")
            return None
        known = {f.name for f in fields(self.Config)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TaskOptionError(f"task {self.name!r} has no setting {', '.join(unknown)} (settings: {', '.join(sorted(known))})")
        return replace(self.defaults(ctx), **overrides)

    @abstractmethod
    def run(self, model: EvalModel, ctx: EvalContext) -> list[Figure]:
        """Evaluate ``model``; a cell that cannot be computed is a Figure with value None and a reason."""


class PresetTask(EvalTask):
    """A task with preset settings: ``QUICK`` (``--quick``) or ``Config()`` on the offline fixtures;
    ``FULL`` (the paper protocol) or :meth:`quick_on_dataset` on a dataset root. ``fixed`` pins one
    settings object whatever the context asks (tests, benches); ``--set`` overrides apply on top."""

    QUICK: ClassVar[Any]
    FULL: ClassVar[Any]

    def __init__(self, fixed: Any = None) -> None:
        self.fixed = fixed

    def quick_on_dataset(self) -> Any:
        """``--quick`` on a dataset root: the paper protocol, smaller."""
        return self.QUICK

    def defaults(self, ctx: EvalContext) -> Any:
        if self.fixed is not None:
            return self.fixed
        if ctx.data == OFFLINE:
            return self.QUICK if ctx.quick else self.Config()
        return self.quick_on_dataset() if ctx.quick else self.FULL


TASKS: Registry[EvalTask] = Registry("evaluation task")


def register_task(task: EvalTask) -> EvalTask:
    """Add a task under ``task.name``."""
    return TASKS.register(task.name, task)
