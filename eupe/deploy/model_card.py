"""The export folder's model card: ``README.md`` (Hub YAML header + Markdown) and ``model_card.json``.

The card says what the student is (architecture, weights hash, how its features are read), how
to load it (timm and Transformers snippets a user can paste, executed by the tests), how it was
trained (stage, teachers, final losses per teacher from the run's ``losses.jsonl``, stage configs,
data), every evaluation recorded in the run's ``evaluations.jsonl`` with the command of each
figure, and for each artifact its parity with eager PyTorch and its latency. No absolute path of
this machine is written (:func:`relative_paths`). Exporting again into the same folder updates the
card: entries for the same artifact file are replaced, others kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eupe.fileio import write_text_atomic

CARD_MD = "README.md"
CARD_JSON = "model_card.json"
CARD_FORMAT = "eupe-model-card-v2"
LOSS_LOG = "losses.jsonl"  # written by the trainer (eupe.distill.loop.LOSS_LOG)
EVALUATIONS = "evaluations.jsonl"  # appended by eupe-eval for a run directory
EVALUATION_KEYS = ("task", "metric", "value", "data", "offline", "settings", "fingerprint", "command", "date", "reason")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; torn, invalid or non-object lines are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def final_losses(run_dir: str | Path | None) -> dict[str, Any]:
    """The last step of ``losses.jsonl``: ``{"step", "total", "teachers": {teacher: {term: value}}}``
    (empty when the run has no log)."""
    rows = [r for r in read_jsonl(Path(run_dir) / LOSS_LOG) if "step" in r] if run_dir else []
    if not rows:
        return {}
    last = max(rows, key=lambda r: r["step"])
    teachers: dict[str, dict[str, float]] = {}
    for key, value in last.items():
        teacher, sep, term = key.partition("/")
        if sep and isinstance(value, (int, float)):
            teachers.setdefault(teacher, {})[term] = value
    return {"step": last["step"], "total": last.get("total"), "teachers": teachers}


def evaluations(run_dir: str | Path | None, weights_sha256: str = "") -> list[dict[str, Any]]:
    """Every figure of the run's ``evaluations.jsonl`` (tolerant: lines without task and metric are
    skipped), each marked ``this_weights`` when its fingerprint is, or starts, the weights' hash."""
    rows = []
    for row in read_jsonl(Path(run_dir) / EVALUATIONS) if run_dir else []:
        if not isinstance(row.get("task"), str) or not isinstance(row.get("metric"), str):
            continue
        kept = {k: row.get(k) for k in EVALUATION_KEYS}
        fp = str(kept.get("fingerprint") or "")
        kept["this_weights"] = not fp or bool(weights_sha256) and (weights_sha256.startswith(fp) or fp.startswith(weights_sha256))
        rows.append(kept)
    return rows


def relative_paths(value: Any) -> Any:
    """``value`` with every absolute path string made relative to the working directory (or cut to
    its name when outside it), recursively through dicts and lists."""
    from eupe.deploy.source import shown_path

    if isinstance(value, dict):
        return {k: relative_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [relative_paths(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return shown_path(value)
    return value


def training_facts(info: dict[str, Any]) -> dict[str, Any]:
    """Stage, teachers, stage configs, data and metrics out of a student file's ``info``."""
    config = info.get("config") or {}
    teachers = info.get("teachers") or [t.get("name", t) if isinstance(t, dict) else t
                                        for t in config.get("teachers", [])]
    stages = info.get("stages") or ([{"stage": info.get("stage"), "config": config}] if config else [])
    return {"stage": info.get("stage", config.get("stage")), "teachers": teachers, "stages": stages,
            "data": info.get("data") or config.get("data") or {}, "metrics": info.get("metrics") or {},
            "other": {k: v for k, v in info.items()
                      if k not in ("config", "teachers", "stages", "stage", "data", "metrics")}}


def _merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` entries whose (artifact, program, resolution) is not in ``new``, then ``new``."""
    def key(row: dict[str, Any]) -> tuple[Any, Any, Any]:
        return row.get("artifact"), row.get("program"), row.get("resolution")

    replaced = {key(row) for row in new}
    return [row for row in old if key(row) not in replaced] + list(new)


def build_card(student: dict[str, Any], info: dict[str, Any], artifacts: list[dict[str, Any]],
               parity: list[dict[str, Any]], latency: list[dict[str, Any]], machine: str = "",
               hub: dict[str, Any] | None = None, run_dir: str | Path | None = None) -> dict[str, Any]:
    """The card as a JSON-friendly dict, with no absolute path in it.

    ``hub`` holds the YAML header's facts (name, license, teachers' Hub ids, datasets, the folder as
    the usage snippets name it); ``run_dir`` is where the losses and evaluations are read."""
    card = {"format": CARD_FORMAT, "student": student, "hub": hub or {}, "training": training_facts(info),
            "final_losses": final_losses(run_dir),
            "evaluations": evaluations(run_dir, student.get("weights_sha256", "")), "info": info,
            "artifacts": artifacts, "parity": parity, "latency": latency, "machine": machine}
    return relative_paths(card)


def merge_cards(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``, keeping ``old``'s artifacts, parity and latency rows for other files of the same weights."""
    if old.get("student", {}).get("weights_sha256") != new["student"].get("weights_sha256"):
        return new
    merged = dict(new)
    for section in ("artifacts", "parity", "latency"):
        merged[section] = _merge(old.get(section, []), new.get(section, []))
    merged["machine"] = new.get("machine") or old.get("machine", "")
    return merged


def write_model_card(out_dir: str | Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Write (or update) ``README.md`` and ``model_card.json`` in ``out_dir`` (atomically, umask mode)."""
    from eupe.deploy.card_text import render_markdown

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / CARD_JSON, out_dir / CARD_MD
    if json_path.is_file():
        try:
            card = merge_cards(json.loads(json_path.read_text()), card)
        except (json.JSONDecodeError, AttributeError, TypeError):
            pass  # an unreadable old card is replaced
    write_text_atomic(json_path, json.dumps(card, indent=2, default=str) + "\n")
    write_text_atomic(md_path, render_markdown(card))
    return md_path, json_path
