"""Export a student as a plain timm ``model.safetensors`` (backbone only, no adapter heads).

The file is the same self-describing student file the trainer writes (timm key names plus
safetensors metadata), under the name timm users expect, so

    timm.create_model(<timm name>, pretrained=True, pretrained_cfg_overlay=dict(file=".../model.safetensors"))

loads it (test-scale students also need their tiny kwargs, recorded in the metadata).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from eupe.models.checkpoint import read_student_metadata, save_student
from eupe.models.features import Encoder
from eupe.models.students import student_spec

SAFETENSORS_FILENAME = "model.safetensors"


def export_safetensors(encoder: Encoder, out_dir: str | Path, test_scale: bool = False,
                       info: dict[str, Any] | None = None) -> Path:
    """Write ``<out_dir>/model.safetensors`` and return its path.

    ``encoder.spec.timm_name`` (also in the file's metadata, see :func:`timm_name_of`) loads it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_student(encoder, out_dir / SAFETENSORS_FILENAME, test_scale=test_scale, info=info)


def timm_name_of(path: str | Path) -> str:
    """The timm architecture name recorded in an exported file."""
    return read_student_metadata(path)["timm_name"]


def load_timm(path: str | Path) -> nn.Module:
    """The timm model of an exported file, built by timm's own pretrained loader (eval mode)."""
    meta = read_student_metadata(path)
    return timm.create_model(meta["timm_name"], pretrained=True,
                             pretrained_cfg_overlay={"file": str(path)}, **meta["timm_kwargs"]).eval()


def run_timm(path: str | Path, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The (summary, patch) arrays of the file loaded by timm, behind the student's feature contract."""
    meta = read_student_metadata(path)
    encoder = Encoder(student_spec(meta["student"]), load_timm(path), fingerprint="")
    with torch.no_grad():
        out = encoder.eval()(pixels)
    return out["summary"].numpy(), out["patch"].numpy()
