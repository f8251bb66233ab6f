"""``eupe-eval suite``: every registered task over every model, one table.

Models (``resolve_model``): a registered teacher or student name (``NAME=WEIGHTS`` for a weights
file), ``NAME=random`` (a randomly initialised student of that architecture: the floor every table
should show), a ``student.safetensors`` file, a training run directory (its student; its
``pecore_g`` head gives zero-shot; its figures are appended to ``RUN/evaluations.jsonl``) or an
export folder holding ``student.safetensors``. Data (``parse_data``): ``offline`` (every task's
offline fixture), a root for every task, or ``TASK=ROOT`` for one task (the others stay offline).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from eupe.eval.tasks.base import OFFLINE, EvalContext, EvalModel, Figure

CLIP_TEACHER = "pecore_g"  # the teacher whose summary lives in PE-Core's CLIP space
RANDOM = "random"


class ModelSpecError(ValueError):
    """A ``--model`` value that names no model this suite can build."""


@dataclass
class SuiteResult:
    figures: list[Figure]
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> task -> wall seconds
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> task -> CPU seconds (all threads)
    models: list[dict] = field(default_factory=list)  # name, fingerprint, spec
    run_dirs: list[Path | None] = field(default_factory=list)  # per model: its training run directory


def row_label(spec: str) -> str:
    """The table's row name: the spec, with a path made relative to the working directory."""
    from eupe.eval.report import portable_path

    name, sep, rest = spec.partition("=")
    if sep and "/" in rest:  # NAME=WEIGHTS_PATH
        return f"{name}={portable_path(os.path.abspath(rest))}"
    return portable_path(os.path.abspath(spec)) if not sep and _is_path(spec) else spec


def _is_path(spec: str) -> bool:
    return spec.endswith(".safetensors") or "/" in spec or Path(spec).exists()


def _clip_from_heads(encoder, heads_dir: Path) -> tuple[Callable | None, str | None]:
    """The ``pecore_g`` head of a run, de-normalized to CLIP space (``head * std + mean``)."""
    from eupe.distill.agreement import load_distill_model
    from eupe.distill.stats import nearest_stats
    from eupe.eval.runs import head_stats
    from eupe.models.teachers import teacher_spec

    model = load_distill_model(heads_dir, encoder).requires_grad_(False)
    if CLIP_TEACHER not in model.teachers:
        return None, f"no {CLIP_TEACHER} adapter head in {heads_dir.name} (trained without the PE-core teacher)"
    stats = nearest_stats(head_stats(heads_dir, CLIP_TEACHER), teacher_spec(CLIP_TEACHER).resolution)
    mean, std = stats["summary_mean"], stats["summary_std"]

    def clip(pixels: torch.Tensor) -> torch.Tensor:
        out = model(pixels)[CLIP_TEACHER]["summary"]  # normalized targets [B, 1280]
        return out * std.to(out) + mean.to(out)

    return clip, None


def _teacher_clip(name: str, encoder) -> tuple[Callable | None, str | None]:
    from eupe.eval.knn import summary_of

    if name == CLIP_TEACHER:
        return summary_of(encoder), None
    return None, (f"{name} has no summary in PE-Core's CLIP space (zero-shot needs {CLIP_TEACHER}, "
                  f"or a student/proxy with a {CLIP_TEACHER} head)")


def _student_file_model(spec: str) -> tuple:
    from eupe.eval.runs import has_heads, is_run_dir
    from eupe.models.checkpoint import load_student

    path = Path(spec)
    encoder = load_student(path)  # a student file, a run directory or an export folder
    if is_run_dir(path) and has_heads(path):
        clip, reason = _clip_from_heads(encoder, path)
    else:
        clip, reason = None, "exported/bare student weights carry no adapter heads (no CLIP-space output)"
    return encoder, clip, reason, (path if is_run_dir(path) else None)


def _named_model(name: str, weights: str | None, test_scale: bool) -> tuple:
    from eupe.eval.models import load_model
    from eupe.eval.runs import has_heads
    from eupe.models.students import create_student, list_students
    from eupe.models.teachers import list_teachers

    if weights == RANDOM:
        if name not in list_students():
            raise ModelSpecError(f"{name}={RANDOM}: random init is for student architectures "
                                 f"({', '.join(list_students())})")
        encoder = create_student(name, test_scale=test_scale).eval().requires_grad_(False)
        return encoder, None, "random-init student: no CLIP-space head", None
    encoder = load_model(name, weights, test_scale)
    if name in list_teachers() and weights and has_heads(weights):  # the proxy from its Stage-1 run
        return (encoder, *_clip_from_heads(encoder, Path(weights)), None)
    if name in list_teachers():
        return (encoder, *_teacher_clip(name, encoder), None)
    return encoder, None, "student weights carry no adapter heads (no CLIP-space output)", None


def resolve_model(spec: str, test_scale: bool = False, device: torch.device | str = "cpu") -> EvalModel:
    """An ``EvalModel`` for a ``--model`` value (see the module docstring)."""
    from eupe.models.students import list_students
    from eupe.models.teachers import list_teachers

    name, sep, weights = spec.partition("=")
    registered = set(list_teachers()) | set(list_students())
    if sep and name in registered:
        parts = _named_model(name, weights, test_scale)
    elif spec in registered:
        parts = _named_model(spec, None, test_scale)
    elif _is_path(spec):
        if not Path(spec).exists():
            raise FileNotFoundError(f"--model {spec}: no such file or directory")
        parts = _student_file_model(spec)
    else:
        raise ModelSpecError(f"unknown model {spec!r}: not a path, a teacher ({', '.join(list_teachers())}) "
                             f"or a student ({', '.join(list_students())}); NAME=random for a random-init student")
    encoder, clip, reason, run_dir = parts
    return EvalModel(row_label(spec), encoder.to(device), clip, reason, run_dir)


def parse_data(values: Sequence[str], tasks: Sequence[str]) -> dict[str, str]:
    """``{task: data}`` from ``--data`` values: ``offline``, ``ROOT`` (all tasks) or ``TASK=ROOT``."""
    data = {task: OFFLINE for task in tasks}
    for value in values or (OFFLINE,):
        task, sep, root = value.partition("=")
        if sep and task not in tasks:
            raise ModelSpecError(f"--data {value}: no task {task!r} (tasks: {', '.join(tasks)})")
        root = root if sep else value
        if root != OFFLINE and not Path(root).exists():
            raise FileNotFoundError(f"--data {value}: {root} does not exist")
        for name in ([task] if sep else tasks):
            data[name] = root
    return data


def run_suite(specs: Sequence[str], ctx: EvalContext, data: dict[str, str], tasks: Sequence[str] | None = None,
              test_scale: bool = False, say: Callable[[str], None] = print) -> SuiteResult:
    """Every task over every model; models are built first so a bad ``--model`` fails before any work."""
    from eupe.eval.tasks.catalog import load_tasks
    from eupe.eval.tasks.base import TASKS

    names = list(tasks or load_tasks())
    models = [resolve_model(spec, test_scale, ctx.device) for spec in specs]
    result = SuiteResult([], models=[{"name": m.name, "fingerprint": m.fingerprint, "spec": s}
                                     for m, s in zip(models, specs)], run_dirs=[m.run_dir for m in models])
    for i, model in enumerate(models, 1):
        for task_name in names:
            start, cpu = time.perf_counter(), time.process_time()
            say(f"[{i}/{len(models)}] {model.name}: {task_name} ...")
            figures = TASKS.get(task_name).run(model, replace(ctx, data=data.get(task_name, OFFLINE)))
            seconds = time.perf_counter() - start
            result.timings.setdefault(model.name, {})[task_name] = round(seconds, 2)
            result.cpu.setdefault(model.name, {})[task_name] = round(time.process_time() - cpu, 2)
            result.figures += figures
            say(f"[{i}/{len(models)}] {model.name}: {task_name} {seconds:.1f} s: " + _brief(figures))
    return result


def _brief(figures: Sequence[Figure]) -> str:
    shown = [f"{f.metric}={'n/a' if f.value is None else f'{f.value:g}'}" for f in figures[:4]]
    return ", ".join(shown) + (" ..." if len(figures) > 4 else "") if shown else "(no figures)"
