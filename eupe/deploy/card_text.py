"""The Markdown of the model card (``README.md``): Hub YAML header, usage snippets, tables.

The usage snippets are complete Python a user can paste (``tests/deploy/test_deploy_snippets.py``
runs every fenced ``python`` block of a written card, with a ``photo.jpg`` beside it).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

PIPELINE_TAG = "image-feature-extraction"
TAGS = ["timm", "image-feature-extraction", "vision-encoder", "distillation", "eupe"]

# How a user reads the distilled features from a timm model, per summary kind: pooled summary and
# patch tokens [1, h*w, D] exactly as the student was trained to produce them.
_FEATURES = {
    "cls": '''    tokens = model.forward_features(pixels)  # [1, prefix + h*w, D]: CLS, registers, patch tokens
    summary = model.forward_head(tokens, pre_logits=True)  # [1, D]: the distilled summary, = model(pixels)
    patch = tokens[:, model.num_prefix_tokens:]  # [1, h*w, D]: the distilled patch tokens''',
    "avg_pool_norm": '''    fmap = model.forward_features(pixels)  # [1, D, h, w]: the stride-32 map
    summary = model.forward_head(fmap, pre_logits=True)  # [1, D]: the distilled summary, = model(pixels)
    patch = model.head.norm(fmap).flatten(2).transpose(1, 2)  # [1, h*w, D]: through the final LayerNorm, as distilled''',
}


def yaml_header(card: dict[str, Any]) -> str:
    """The Hub metadata block (``---`` YAML ``---``)."""
    hub, s = card.get("hub", {}), card["student"]
    meta: dict[str, Any] = {"library_name": "timm", "license": hub.get("license", "other")}
    if meta["license"] == "other":
        meta["license_name"] = hub.get("license_name", "unspecified")
    meta["tags"] = TAGS + [f"student:{s['name']}"]
    meta["pipeline_tag"] = PIPELINE_TAG
    if hub.get("base_model"):
        meta["base_model"] = list(hub["base_model"])
    if hub.get("datasets"):
        meta["datasets"] = list(hub["datasets"])
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def timm_snippet(folder: str, summary: str) -> str:
    """Load with timm, preprocess as in training, read the summary and patch tokens."""
    return f'''import timm
import torch
from PIL import Image

model = timm.create_model("local-dir:{folder}", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))  # resize + mean/std of training
pixels = transform(Image.open("photo.jpg").convert("RGB")).unsqueeze(0)  # [1, 3, H, W], normalized
with torch.no_grad():
{_FEATURES[summary]}
'''


def transformers_snippet(folder: str) -> str:
    """Load with Transformers' timm wrapper (a vision tower for Transformers pipelines)."""
    return f'''import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

model = AutoModel.from_pretrained("{folder}").eval()  # TimmWrapperModel around the same timm model
processor = AutoImageProcessor.from_pretrained("{folder}")  # the same preprocessing as timm's transform
inputs = processor(Image.open("photo.jpg").convert("RGB"), return_tensors="pt")
with torch.no_grad():
    summary = model(**inputs).pooler_output  # [1, D]: the distilled summary
'''


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> list[str]:
    """A GitHub table with ``columns`` (default: the union of the rows' keys) ('none' when empty)."""
    if not rows:
        return ["none", ""]
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines + [""]


def _json_block(value: Any) -> list[str]:
    return ["```json", json.dumps(value, indent=2, default=str), "```", ""]


def _usage(card: dict[str, Any]) -> list[str]:
    s, folder = card["student"], card.get("hub", {}).get("folder", ".")
    if s.get("summary") not in _FEATURES:
        return []
    return ["## Usage", "",
            f"With timm (`{folder}` is this folder; after uploading it to the Hub use `hf-hub:<user>/<name>`):", "",
            "```python", timm_snippet(folder, s["summary"]).rstrip("\n"), "```", "",
            "With Transformers (`pip install transformers`), e.g. as the vision tower of a LLaVA-style model:", "",
            "```python", transformers_snippet(folder).rstrip("\n"), "```", "",
            "`model.safetensors` holds plain timm weights: inputs must be normalized with the config's mean/std, "
            "which `create_transform` and the image processor do. The `.pte` and `.onnx` programs, if any, take RGB "
            "in [0, 1] `[B, 3, R, R]` and normalize inside; they return `(summary [B, D], patch [B, h, w, D])`.", ""]


def _training(card: dict[str, Any]) -> list[str]:
    t, losses = card["training"], card.get("final_losses") or {}
    teachers = t["teachers"]
    names = list(teachers) if isinstance(teachers, (dict, list)) else [str(teachers)]
    lines = ["## Training", "", f"- stage: {t['stage']}", f"- teachers: {', '.join(map(str, names)) or 'n/a'}"]
    if isinstance(teachers, dict):
        lines += [f"  - {name}: weights sha256 {_cell(sha)}" for name, sha in teachers.items()]
    lines.append("")
    if losses:
        rows = [{"teacher": name, **terms} for name, terms in losses["teachers"].items()]
        lines += [f"### Final losses (step {losses['step']}, total {_cell(losses.get('total'))})", "",
                  *markdown_table(rows)]
    lines += ["### Data", "", *_json_block(t["data"])] if t["data"] else []
    for stage in t["stages"]:
        lines += [f"### Stage {stage.get('stage')} config", "", *_json_block(stage.get("config", stage))]
    if t["metrics"]:
        lines += ["### Metrics recorded by the trainer", "", *_json_block(t["metrics"])]
    return lines


def _evaluations(card: dict[str, Any]) -> list[str]:
    rows = card.get("evaluations") or []
    lines = ["## Evaluations", ""]
    if not rows:
        return lines + ["none recorded (`eupe-eval ... --model <run directory>` records each figure in the run's "
                        "`evaluations.jsonl`)", ""]
    shown = [{**r, "value": "n/a" if r.get("value") is None else r["value"],
              "note": (r.get("reason") or "") + ("" if r.get("this_weights", True) else
                                                  f" measured on other weights ({str(r.get('fingerprint'))[:12]})")}
             for r in rows]
    return lines + markdown_table(shown, ["task", "metric", "value", "data", "command", "date", "note"])


def render_markdown(card: dict[str, Any]) -> str:
    """The card as the folder's ``README.md``."""
    s, hub = card["student"], card.get("hub", {})
    title = hub.get("name") or s["name"]
    lines = [yaml_header(card).rstrip("\n"), "", f"# {title}", "",
             f"`{s['name']}` student (`{s['timm_name']}`) trained with eupe. {s.get('description', '')}", "",
             f"Summary (`model(x)`, timm's pooled output): {s.get('summary')}; prefix tokens: {s.get('prefix_tokens')}; "
             f"trained at {s.get('training_resolution')} px (any multiple of {s.get('patch_size')} works).", "",
             *_usage(card), "## Student", "",
             *[f"- {k}: {_cell(v)}" for k, v in s.items() if k != "description"], "",
             *_training(card), *_evaluations(card),
             "## Artifacts", "", *markdown_table(card["artifacts"]),
             "## Parity with eager PyTorch", "", *markdown_table(card["parity"]),
             "## Latency (batch 1, median)", "", *markdown_table(card["latency"])]
    if card.get("machine"):
        lines += [f"Machine: {card['machine']}", ""]
    return "\n".join(lines)
