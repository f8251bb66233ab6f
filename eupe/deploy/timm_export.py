"""Export a student as a timm / Hugging Face Hub model folder (backbone only, no adapter heads).

The folder holds ``model.safetensors`` (timm's own key names) and ``config.json`` as timm writes
it (``timm.models._hub.save_config_for_hf``), so

    timm.create_model("local-dir:EXPORT", pretrained=True)
    transformers.AutoModel.from_pretrained("EXPORT")          # Transformers' TimmWrapper

load it with no other argument, and ``timm.data.resolve_model_data_config`` + ``create_transform``
give the preprocessing the student was trained with. The config's ``model_args`` carry the
pooling that makes timm's pooled output (``model(x)``) the summary the student was distilled to
produce (:data:`POOLING`), and its ``pretrained_cfg`` carries this export's own identity (tag,
licence, description), not the tag and licence of the weights timm's architecture defaults to.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from eupe.fileio import write_text_atomic
from eupe.models.checkpoint import EXPORT_FILENAME, read_student_metadata, save_student
from eupe.models.features import Encoder
from eupe.models.spec import EncoderSpec
from eupe.models.students import student_spec

SAFETENSORS_FILENAME = EXPORT_FILENAME
CONFIG_FILENAME = "config.json"

# The timm pooling whose pre-logits output equals each summary a student can be distilled to:
# "cls" is the CLS token after the final norm (timm: global_pool="token"); "avg_pool_norm" is the
# average of the stride-32 map through the head's LayerNorm (timm ConvNeXt: global_pool="avg").
POOLING: dict[str, dict[str, Any]] = {"cls": {"global_pool": "token"}, "avg_pool_norm": {"global_pool": "avg"}}

# The preprocessing of the project's own evaluation (eupe.views.spec.ViewSpec.full + eupe.views.renderer.render):
# the whole image resized to R x R, antialiased bilinear, no crop; then the model's mean/std.
PREPROCESSING = {"crop_pct": 1.0, "crop_mode": "squash", "interpolation": "bilinear"}

# pretrained_cfg keys that describe another release (paper, origin, notes): never copied
_RELEASE_KEYS = ("tag", "license", "description", "origin_url", "paper_name", "paper_ids", "notes", "hf_hub_id")


class UnsupportedStudentError(ValueError):
    """A student whose summary no timm pooling reproduces (the export would load with the wrong features)."""


def pooling_args(spec: EncoderSpec) -> dict[str, Any]:
    """timm ``model_args`` whose pooled output is ``spec``'s summary (UnsupportedStudentError otherwise)."""
    if spec.summary not in POOLING:
        raise UnsupportedStudentError(
            f"student {spec.name!r} ({spec.timm_name}) is distilled to a {spec.summary!r} summary, which no timm "
            f"pooling reproduces; timm/Hub folders can be written for summaries {', '.join(sorted(POOLING))} "
            f"(the ViT and ConvNeXt students)")
    return dict(POOLING[spec.summary])


def export_tag(name: str) -> str:
    """A timm pretrained tag (lower-case letters, digits, ``_``) from a run or export name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "eupe"


def hub_config(backbone: nn.Module, spec: EncoderSpec, resolution: int, identity: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` of ``backbone`` as timm's ``save_config_for_hf`` writes it, with the summary's
    pooling, the training preprocessing at ``resolution`` and ``identity`` (tag, license, description)."""
    from timm.models._hub import save_config_for_hf  # timm's own config.json writer (save_for_hf uses it)

    data = {"input_size": (3, resolution, resolution), "mean": tuple(spec.mean), "std": tuple(spec.std),
            **PREPROCESSING}
    pooling = pooling_args(spec)
    with tempfile.TemporaryDirectory(prefix="eupe-config-") as scratch:  # timm writes a path; we edit it first
        save_config_for_hf(backbone, str(Path(scratch) / CONFIG_FILENAME), model_args=pooling, data_config=data)
        config = json.loads((Path(scratch) / CONFIG_FILENAME).read_text())
    # num_classes stays top-level only: Transformers' TimmWrapper passes num_classes=0 itself and
    # fails on a second one in model_args; timm takes it from the top level.
    config["model_args"].pop("num_classes", None)
    cfg = {k: v for k, v in config["pretrained_cfg"].items() if k not in _RELEASE_KEYS}
    config["pretrained_cfg"] = {**cfg, **{k: v for k, v in identity.items() if v is not None}}
    return config


def export_folder(encoder: Encoder, out_dir: str | Path, resolution: int, identity: dict[str, Any],
                  test_scale: bool = False, info: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir``; returns the weights' path.

    The weights file is the self-describing student file (timm key names plus eupe metadata)."""
    out_dir = Path(out_dir)
    config = hub_config(encoder.backbone, encoder.spec, resolution, identity)
    path = save_student(encoder, out_dir / SAFETENSORS_FILENAME, test_scale=test_scale, info=info)
    write_text_atomic(out_dir / CONFIG_FILENAME, json.dumps(config, indent=2) + "\n")
    return path


def export_safetensors(encoder: Encoder, out_dir: str | Path, test_scale: bool = False,
                       info: dict[str, Any] | None = None) -> Path:
    """Only ``<out_dir>/model.safetensors`` (no config): the file :func:`load_timm` reads."""
    return save_student(encoder, Path(out_dir) / SAFETENSORS_FILENAME, test_scale=test_scale, info=info)


def timm_name_of(path: str | Path) -> str:
    """The timm architecture name recorded in an exported file."""
    return read_student_metadata(path)["timm_name"]


def load_timm(path: str | Path) -> nn.Module:
    """The timm model of an exported weights file or folder, built by timm's own loader (eval mode):
    a folder with ``config.json`` through ``local-dir:``, a bare file by its recorded kwargs."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / CONFIG_FILENAME).is_file() and (path.is_dir() or path.name == SAFETENSORS_FILENAME):
        return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    meta = read_student_metadata(path)
    return timm.create_model(meta["timm_name"], pretrained=True,
                             pretrained_cfg_overlay={"file": str(path)}, **meta["timm_kwargs"]).eval()


def run_timm(path: str | Path, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(summary, patch) of the export loaded by timm: summary = timm's pooled output ``model(x)`` with
    ``x`` normalized by the config's mean/std; patch tokens behind the student's feature contract."""
    path = Path(path)
    weights = path / SAFETENSORS_FILENAME if path.is_dir() else path
    model = load_timm(path)
    spec = student_spec(read_student_metadata(weights)["student"])
    cfg = model.pretrained_cfg
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        pooled = model((pixels - mean) / std)  # [B, D]: timm's own pooling + head (none: num_classes=0)
        patch = Encoder(spec, model, fingerprint="").eval()(pixels)["patch"]  # [B, h, w, D]
    return pooled.numpy(), patch.numpy()

