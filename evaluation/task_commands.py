"""``eupe-eval suite`` and the generated single-task commands (one per registered task module).

No torch at import: the group lists ``eupe.eval.tasks.catalog.TASK_MODULES`` by name and builds a task's
command (generic options; task settings through ``--set KEY=VALUE``) only when it is invoked.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import click

_INVOCATION: list[str] = []


def set_invocation(argv: Sequence[str]) -> None:
    """Remember the command line (for ``evaluations.jsonl``)."""
    _INVOCATION[:] = list(argv)


def invocation() -> str:
    """``eupe-eval ...`` as the user typed it, with absolute paths made portable."""
    from eupe.eval.report import scrub

    return " ".join(["eupe-eval", *scrub(list(_INVOCATION))])


def _task_modules() -> tuple[str, ...]:
    from eupe.eval.tasks.catalog import TASK_MODULES

    return TASK_MODULES


class TaskGroup(click.Group):
    """A group whose extra commands are the registered tasks (loaded only when one is invoked)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_task_modules()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or name not in _task_modules():
            return command
        return task_command(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = super().get_command(ctx, name)
            rows.append((name, command.get_short_help_str(60) if command else f"Run the {name} task alone "
                         f"(settings: --set KEY=VALUE)."))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


# -- shared options -----------------------------------------------------------------------------

def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_settings(values: Sequence[str], default_task: str | None = None) -> dict[str, dict]:
    """``TASK.KEY=VALUE`` (or ``KEY=VALUE`` for ``default_task``) -> ``{task: {key: value}}``."""
    out: dict[str, dict] = {}
    for item in values:
        key, sep, value = item.partition("=")
        task, dot, field = key.partition(".")
        if not sep or (not dot and default_task is None):
            raise click.BadParameter(f"{item!r}: expected TASK.KEY=VALUE", param_hint="--set")
        task, field = (task, field) if dot else (default_task, key)
        parsed = _parse_value(value)
        out.setdefault(task, {})[field] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def _progress(what: str, done: int, total: int, _last: dict = {}) -> None:  # noqa: B006 - per-process state
    """Print ``what: done/total`` at most every 25% (and at the end) to stderr."""
    step = max(1, total // 4)
    if done == total or done - _last.get(what, -step) >= step:
        _last[what] = done
        click.echo(f"  {what}: {done}/{total}", err=True)


def _context(data: str, quick: bool, seed: int, device: str | None, batch_size: int, cache_dir: str | None,
             options: dict, out_dir: Path | None):
    import torch

    from eupe.eval.tasks.base import EvalContext

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return EvalContext(data=data, quick=quick, seed=seed, device=dev, batch_size=batch_size,
                       cache_dir=Path(cache_dir) if cache_dir else None, progress=_progress, options=options,
                       out_dir=out_dir)


def _with_text(options: dict, text_weights: str | None, text_model: str | None) -> dict:
    if text_weights is not None:
        if text_weights != "random" and not Path(text_weights).is_file():
            raise FileNotFoundError(f"--text-weights {text_weights}: file not found")
        options.setdefault("zeroshot", {})["text_weights"] = text_weights
    if text_model is not None:
        options.setdefault("zeroshot", {})["text_model"] = text_model
    return options


def _common(fn):
    options = [
        click.option("--model", "models", multiple=True, required=True, metavar="MODEL",
                     help="Registered name, NAME=WEIGHTS, NAME=random (random-init student), a student "
                          "file, a training run directory or an export folder (repeatable)."),
        click.option("--data", "data", multiple=True, metavar="offline|ROOT|TASK=ROOT",
                     help="offline (default: each task's offline fixture), a dataset root for every task, "
                          "or TASK=ROOT for one task (repeatable)."),
        click.option("--quick", is_flag=True, help="The smaller offline version (CI, the demo)."),
        click.option("--set", "settings", multiple=True, metavar="TASK.KEY=VALUE",
                     help="A task setting, e.g. knn.transform=full or knn.ks=[10,20] (repeatable)."),
        click.option("--text-weights", default=None, type=click.Path(dir_okay=False),
                     help="Local open_clip PE-Core checkpoint for zero-shot's text tower (no download)."),
        click.option("--text-model", default=None, help="open_clip config of the text tower (default PE-Core-bigG-14-448)."),
        click.option("--seed", default=0, show_default=True, help="Seed of data subsets and probes."),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Images per forward."),
        click.option("--device", default=None, help="torch device (default: cuda when available, else cpu)."),
        click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                     help="Cache of reusable work, e.g. text classifiers (default: OUT/cache, none without --out)."),
        click.option("--test-scale", is_flag=True, hidden=True, help="Tiny random-init models (tests)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _machine() -> dict:
    import platform

    import torch

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _record_runs(result, command: str) -> list[Path]:
    from eupe.eval.report import append_evaluations

    written = []
    for model in result.models:
        figures = [f for f in result.figures if f.model == model["name"]]
        run_dir = model.get("run_dir")
        if run_dir is not None and figures:
            written.append(append_evaluations(run_dir, figures, command))
    return written


def execute(models, data, quick, settings, text_weights, text_model, seed, batch_size, device, cache_dir,
            test_scale, out: str | None, tasks: Sequence[str] | None, default_task: str | None = None):
    """Run ``tasks`` (None: all) over ``models``; returns the SuiteResult."""
    from eupe.eval.suite import parse_data, run_suite
    from eupe.eval.tasks.catalog import get_task, load_tasks

    names = list(tasks or load_tasks())
    options = _with_text(parse_settings(settings, default_task), text_weights, text_model)
    out_dir = Path(out) if out else None
    cache = cache_dir or (str(out_dir / "cache") if out_dir else None)
    ctx = _context("offline", quick, seed, device, batch_size, cache, options, out_dir)
    for task in names:  # settings are checked before any model loads
        get_task(task).config(ctx)
    data_map = parse_data(data, load_tasks())
    result = run_suite(models, ctx, data_map, names, test_scale, say=lambda m: click.echo(m, err=True))
    for model, resolved in zip(result.models, result.run_dirs):
        model["run_dir"] = None if resolved is None else str(resolved)
    return result


@click.command("suite")
@_common
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for results.{json,csv,md}.")
@click.option("--task", "tasks", multiple=True, metavar="TASK", help="Only these tasks (repeatable; default: all).")
def suite_command(models, data, quick, settings, text_weights, text_model, seed, batch_size, device, cache_dir,
                  test_scale, out, tasks) -> int:
    """Every registered task over every model: DIR/results.json, results.csv and results.md.

    Rows are models, columns are tasks (each titled with the data behind it: offline fixtures say
    "offline: ..."), then the paper's published rows (EUPE-ViT-B and peers) on the full datasets.
    A cell that cannot be computed here is n/a with its reason, never a made-up number. Run
    directories get their figures appended to RUN/evaluations.jsonl.
    """
    from eupe.eval.report import write_results

    start = time.perf_counter()
    result = execute(models, data, quick, settings, text_weights, text_model, seed, batch_size, device, cache_dir,
                     test_scale, out, tasks)
    seconds = round(time.perf_counter() - start, 2)
    header = f"`{invocation()}`: {'quick ' if quick else ''}offline fixtures unless a dataset root is named; {seconds} s."
    files = write_results(out, result.figures, {"command": invocation(), "quick": quick, "data": list(data) or ["offline"],
                                                "models": result.models, "timings_s": result.timings, "cpu_s": result.cpu,
                                                "total_s": seconds, "machine": _machine(), "header": header})
    _record_runs(result, invocation())
    click.echo(files["md"].read_text())
    click.echo(f"wrote {', '.join(str(p) for p in files.values())} in {seconds:.1f} s")
    return 0


def task_command(name: str) -> click.Command:
    """The single-task command of registered task ``name`` (its figures printed, or as JSON)."""

    @click.command(name)
    @_common
    @click.option("--out", default=None, type=click.Path(file_okay=False),
                  help="Also write results.{json,csv,md} (and pictures) here.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON (every figure).")
    def command(models, data, quick, settings, text_weights, text_model, seed, batch_size, device, cache_dir,
                test_scale, out, as_json) -> int:
        from dataclasses import asdict

        from eupe.eval.report import write_results

        result = execute(models, data, quick, settings, text_weights, text_model, seed, batch_size, device,
                         cache_dir, test_scale, out, [name], default_task=name)
        _record_runs(result, invocation())
        if out:
            write_results(out, result.figures, {"command": invocation(), "models": result.models})
        if result.figures and all(f.value is None for f in result.figures):
            from eupe.eval.tasks.base import NotAvailableError

            raise NotAvailableError(f"{name}: {result.figures[0].reason or 'nothing could be computed'}")
        for fig in result.figures:
            click.echo(json.dumps(asdict(fig)) if as_json else
                       f"{fig.model}  {fig.task} {fig.metric}: {'n/a' if fig.value is None else fig.value}  [{fig.data}]"
                       + (f"  ({fig.reason})" if fig.reason else ""))
        return 0

    command.help = (f"Run the registered `{name}` task alone on each --model (settings: --set KEY=VALUE, "
                    f"see eupe/eval/tasks/{name}.py).")
    return command
