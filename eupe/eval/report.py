"""Writing evaluation results: the suite's ``results.{json,csv,md}`` and a run's ``evaluations.jsonl``.

``evaluations.jsonl`` (the contract with the export's model card): one JSON line per Figure,
appended to ``RUN/evaluations.jsonl`` when the evaluated model is a training run directory:
``{"task", "metric", "value", "data", "offline", "settings", "fingerprint", "command", "date",
"reason"}``. No absolute path of this machine goes in (paths become relative to the working
directory, or their base name). Each line is written with one ``write`` call so a reader only
ever sees whole lines or one torn last line.

The table: rows are models, columns are tasks (each column's headline metric, titled with the
data that produced it: an offline fixture is ``offline: ...``), then the paper's rows under the
paper's own dataset columns. A cell that could not be computed reads ``n/a`` with its reason below.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from eupe.eval.paper import PAPER_COLUMNS, PAPER_ROWS, PAPER_SOURCE
from eupe.eval.tasks.base import Figure

EVALUATIONS_FILE = "evaluations.jsonl"


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def portable_path(value: str) -> str:
    """An absolute path as seen from the working directory (relative), else its base name."""
    if not os.path.isabs(value):
        return value
    try:
        rel = os.path.relpath(value)
    except ValueError:
        return os.path.basename(value)
    return rel if not rel.startswith("..") else os.path.basename(value.rstrip("/")) or value


def scrub(value: Any) -> Any:
    """``value`` with every absolute path string made portable (recursively through dicts/lists)."""
    if isinstance(value, str):
        return " ".join(portable_path(part) for part in value.split(" ")) if "/" in value else value
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def evaluation_record(figure: Figure, command: str, date: str | None = None) -> dict:
    """One ``evaluations.jsonl`` line for ``figure``."""
    return scrub({"task": figure.task, "metric": figure.metric, "value": figure.value, "data": figure.data,
                  "offline": figure.offline, "settings": figure.settings, "fingerprint": figure.fingerprint,
                  "command": command, "date": date or now_utc(), "reason": figure.reason})


def append_evaluations(run_dir: str | Path, figures: Iterable[Figure], command: str) -> Path:
    """Append one line per Figure to ``run_dir/evaluations.jsonl``; returns the file."""
    path = Path(run_dir) / EVALUATIONS_FILE
    date = now_utc()
    with open(path, "a", encoding="utf-8") as handle:
        for figure in figures:
            handle.write(json.dumps(evaluation_record(figure, command, date), sort_keys=True) + "\n")
            handle.flush()
    return path


# -- the table ----------------------------------------------------------------------------------

def _task_info() -> dict[str, Any]:
    from eupe.eval.tasks.catalog import load_tasks
    from eupe.eval.tasks.base import TASKS

    return {name: TASKS.get(name) for name in load_tasks()}


def headline_figures(figures: Sequence[Figure]) -> list[Figure]:
    """Per (model, task): the figure of the task's headline metric (else the task's first)."""
    tasks = _task_info()
    chosen: dict[tuple[str, str], Figure] = {}
    for fig in figures:
        task = tasks.get(fig.task)
        if task is not None and not task.in_table:
            continue
        key = (fig.model, fig.task)
        headline = getattr(task, "headline", None)
        if key not in chosen or (headline is not None and fig.metric == headline and chosen[key].metric != headline):
            chosen[key] = fig
    return list(chosen.values())


def column_title(fig: Figure) -> str:
    """``kNN top-1 top1@20 [offline: Fashion-MNIST ...]``: the task, the metric and the data."""
    task = _task_info().get(fig.task)
    name = task.column if task is not None else fig.task
    arrow = "" if fig.higher_is_better else ", lower is better"
    return f"{name} ({fig.metric}{arrow}) [{fig.data}]"


def _cell(fig: Figure | None) -> str:
    """A table cell: 4 significant digits (results.json keeps the full value)."""
    if fig is None:
        return ""
    return "n/a" if fig.value is None else f"{fig.value:.4g}"


def measured_table(figures: Sequence[Figure]) -> tuple[list[str], list[str], dict[tuple[str, str], Figure]]:
    """(models in order, column titles in order, {(model, column): Figure}).

    Measured figures make the columns; an n/a figure joins the first column of its task
    (whatever data or metric the measured ones name), or gets its own when no model has a value there.
    """
    chosen = headline_figures(figures)
    models = list(dict.fromkeys(f.model for f in chosen))
    task_of: dict[str, str] = {}  # column title -> task
    by_task: dict[str, str] = {}
    cells = {}
    for fig in sorted(chosen, key=lambda f: f.value is None):  # stable: measured ones first
        title = (by_task.get(fig.task) if fig.value is None else None) or column_title(fig)
        by_task.setdefault(fig.task, title)
        task_of.setdefault(title, fig.task)
        cells[(fig.model, title)] = fig
    order = list(dict.fromkeys(f.task for f in chosen))
    columns = sorted(task_of, key=lambda title: order.index(task_of[title]))  # task order, stable within a task
    return models, columns, cells


def paper_titles() -> dict[str, str]:
    return {task: f"{title} [paper, full dataset]" for task, title in PAPER_COLUMNS.items()}


def results_csv(figures: Sequence[Figure]) -> str:
    """Rows: measured models, then the paper's rows; columns: measured tasks, then the paper's."""
    models, columns, cells = measured_table(figures)
    papers = paper_titles()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "source", *columns, *papers.values()])
    for model in models:
        writer.writerow([model, "measured", *(_cell(cells.get((model, c))) for c in columns), *[""] * len(papers)])
    for row in PAPER_ROWS:
        values = ["" if row[t] is None else f"{row[t]:g}" for t in papers]
        writer.writerow([row["model"], "paper", *[""] * len(columns), *values])
    return out.getvalue()


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def results_markdown(figures: Sequence[Figure], header: str = "") -> str:
    """The measured table, its n/a reasons, then the paper's table."""
    models, columns, cells = measured_table(figures)
    lines = ["# Evaluation results", ""] + ([header, ""] if header else [])
    lines += ["Measured here (offline fixtures rank models; they do not estimate the paper's numbers):", "",
              _md_row(["model", *columns]), _md_row(["---"] * (len(columns) + 1))]
    lines += [_md_row([m, *(_cell(cells.get((m, c))) for c in columns)]) for m in models]
    reasons = sorted({f"{f.model} / {f.task}: {f.reason}" for f in cells.values() if f.value is None and f.reason})
    if reasons:
        lines += ["", "Not available:", *[f"- {r}" for r in reasons]]
    papers = paper_titles()
    lines += ["", f"Paper ({PAPER_SOURCE}):", "", _md_row(["model", *papers.values(), "note"]),
              _md_row(["---"] * (len(papers) + 2))]
    lines += [_md_row([r["model"], *("—" if r[t] is None else f"{r[t]:g}" for t in papers), r["note"]])
              for r in PAPER_ROWS]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_results(out_dir: str | Path, figures: Sequence[Figure], meta: dict) -> dict[str, Path]:
    """``results.json`` (every Figure + ``meta`` + the paper rows), ``results.csv``, ``results.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = scrub({**meta, "figures": [asdict(f) for f in figures], "paper": {"source": PAPER_SOURCE,
                     "columns": PAPER_COLUMNS, "rows": PAPER_ROWS}})
    files = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md"}
    _write_atomic(files["json"], json.dumps(payload, indent=2) + "\n")
    _write_atomic(files["csv"], results_csv(figures))
    _write_atomic(files["md"], results_markdown(figures, meta.get("header", "")))
    return files
