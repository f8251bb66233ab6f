"""``MODEL_CARD.md`` + ``model_card.json`` next to exported artifacts.

The card says what the student is (architecture, weights hash, input contract), how it was
trained (stage, teachers, stage configs and data, from the ``info`` the trainer stores in the
student file), its metrics if any, and for each artifact its parity with eager PyTorch and
its latency. Exporting again into the same directory updates the card: entries for the same
artifact file are replaced, others kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD_MD = "MODEL_CARD.md"
CARD_JSON = "model_card.json"
CARD_FORMAT = "eupe-model-card-v1"


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
    """``old`` entries whose (artifact, program) is not in ``new``, then ``new``."""
    def key(row: dict[str, Any]) -> tuple[Any, Any, Any]:
        return row.get("artifact"), row.get("program"), row.get("resolution")

    replaced = {key(row) for row in new}
    return [row for row in old if key(row) not in replaced] + list(new)


def build_card(student: dict[str, Any], info: dict[str, Any], artifacts: list[dict[str, Any]],
               parity: list[dict[str, Any]], latency: list[dict[str, Any]], machine: str = "") -> dict[str, Any]:
    """The card as a JSON-friendly dict."""
    return {"format": CARD_FORMAT, "student": student, "training": training_facts(info), "info": info,
            "artifacts": artifacts, "parity": parity, "latency": latency, "machine": machine}


def merge_cards(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``, keeping ``old``'s artifacts, parity and latency rows for other files."""
    if old.get("student", {}).get("weights_sha256") != new["student"].get("weights_sha256"):
        return new
    merged = dict(new)
    for section in ("artifacts", "parity", "latency"):
        merged[section] = _merge(old.get(section, []), new.get(section, []))
    merged["machine"] = new.get("machine") or old.get("machine", "")
    return merged


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """A GitHub table with the union of the rows' keys as columns ('none' when empty)."""
    if not rows:
        return ["none", ""]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines + [""]


def _json_block(value: Any) -> list[str]:
    return ["```json", json.dumps(value, indent=2, default=str), "```", ""]


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown."""
    s, t = card["student"], card["training"]
    lines = [f"# {s['name']} ({s['timm_name']})", "", s.get("description", ""), "",
             "## Student", "", *[f"- {k}: {_cell(v)}" for k, v in s.items() if k != "description"], "",
             "Input: float RGB `[B, 3, H, W]` in [0, 1]; outputs `summary [B, D]` and `patch [B, h, w, D]`.", "",
             "## Training", "", f"- stage: {t['stage']}", f"- teachers: {', '.join(map(str, t['teachers'])) or 'n/a'}", ""]
    lines += ["### Data", "", *_json_block(t["data"])] if t["data"] else []
    for stage in t["stages"]:
        lines += [f"### Stage {stage.get('stage')} config", "", *_json_block(stage.get("config", stage))]
    lines += ["### Metrics", "", *(_json_block(t["metrics"]) if t["metrics"] else ["none recorded", ""])]
    lines += ["## Artifacts", "", *markdown_table(card["artifacts"]),
              "## Parity with eager PyTorch", "", *markdown_table(card["parity"]),
              "## Latency (batch 1, median)", "", *markdown_table(card["latency"])]
    if card.get("machine"):
        lines += [f"Machine: {card['machine']}", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Write (or update) ``MODEL_CARD.md`` and ``model_card.json`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / CARD_JSON, out_dir / CARD_MD
    if json_path.is_file():
        card = merge_cards(json.loads(json_path.read_text()), card)
    json_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(card))
    return md_path, json_path
