"""Student weight files: timm-loadable safetensors that also describe themselves.

A ``student.safetensors`` holds the backbone's state dict under timm's own key names (no
adapter heads), so ``timm.create_model(<timm name>, pretrained=True,
pretrained_cfg_overlay=dict(file=...))`` loads it. Its safetensors metadata records the
registry name, the timm name and the timm kwargs (tiny test-scale variants included), so
``load_student`` rebuilds the exact ``Encoder`` with nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from eupe.fileio import atomic_write
from eupe.models.build import random_backbone
from eupe.models.features import Encoder
from eupe.models.students import student_spec
from eupe.models.weights import WeightsFileError, file_sha256

STUDENT_FILENAME = "student.safetensors"
EXPORT_FILENAME = "model.safetensors"  # the same self-describing file in an eupe-export model folder
STUDENT_FORMAT = "eupe-student-v1"


def save_student(student: Encoder, path: str | Path, test_scale: bool = False, info: dict[str, Any] | None = None) -> Path:
    """Write the student's backbone (timm key names) with self-describing metadata."""
    path = Path(path)
    spec = student.spec
    kwargs = {"num_classes": 0, **spec.timm_kwargs, **(spec.test_kwargs if test_scale else {})}
    meta = {"format": STUDENT_FORMAT, "student": spec.name, "timm_name": spec.timm_name,
            "timm_kwargs": json.dumps(kwargs), "info": json.dumps(info or {})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in student.backbone.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


# The only timm.create_model keywords a student file may carry: architecture shape. Anything
# else (checkpoint_path, pretrained_cfg_overlay, features_only, ...) could make timm open other
# files or build something else, so a file naming it is refused.
ARCH_KWARGS = frozenset({
    "num_classes", "global_pool", "embed_dim", "depth", "num_heads", "mlp_ratio", "depths", "dims",
    "img_size", "patch_size", "num_reg_tokens", "dynamic_img_size",
})


def _check_kwargs(path: str | Path, kwargs: Any) -> dict[str, Any]:
    """The file's timm kwargs when they are all architecture keywords with plain values."""
    if not isinstance(kwargs, dict):
        raise WeightsFileError(f"{path}: timm_kwargs in its metadata is not a mapping")
    refused = sorted(set(kwargs) - ARCH_KWARGS)
    if refused:
        raise WeightsFileError(
            f"{path}: refusing timm_kwargs {refused} from the file's metadata; a student file may "
            f"only name architecture keywords ({', '.join(sorted(ARCH_KWARGS))})")
    plain = (int, float, str, bool)
    for key, value in kwargs.items():
        if not (isinstance(value, plain) or isinstance(value, list) and all(isinstance(v, plain) for v in value)):
            raise WeightsFileError(f"{path}: timm_kwargs {key}={value!r} is not a number, string or list of them")
    return kwargs


def read_student_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a student file (WeightsFileError when it is not one, or names a timm
    architecture other than its student's or a timm keyword outside ``ARCH_KWARGS``)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except SafetensorError as err:
        raise WeightsFileError(_damaged(path, err)) from None
    if meta.get("format") != STUDENT_FORMAT:
        raise WeightsFileError(f"{path} is not an eupe student file (metadata format {meta.get('format')!r})")
    try:
        kwargs, info, student = json.loads(meta["timm_kwargs"]), json.loads(meta["info"]), meta["student"]
    except (KeyError, json.JSONDecodeError) as err:
        raise WeightsFileError(f"{path}: malformed student metadata ({err})") from None
    spec = student_spec(student)  # UnknownNameError lists the valid students
    if meta.get("timm_name") != spec.timm_name:
        raise WeightsFileError(f"{path}: metadata names timm architecture {meta.get('timm_name')!r}, "
                               f"but student {spec.name!r} is {spec.timm_name!r}")
    return {**meta, "timm_kwargs": _check_kwargs(path, kwargs), "info": info}


def resolve_student_file(path: str | Path) -> Path:
    """A student file from a file path, a training run directory or an export folder."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in (STUDENT_FILENAME, EXPORT_FILENAME) if (path / name).is_file()]
        path = found[0] if found else path / STUDENT_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"student weights {path} not found; pass a run directory, its {STUDENT_FILENAME}, "
                                f"or an eupe-export folder (its {EXPORT_FILENAME})")
    return path


def load_student(path: str | Path) -> Encoder:
    """Rebuild the student ``Encoder`` recorded in a student file (eval mode)."""
    path = resolve_student_file(path)
    meta = read_student_metadata(path)
    spec = student_spec(meta["student"])
    backbone, _ = random_backbone(meta["timm_name"], meta["timm_kwargs"])
    try:
        tensors = load_file(str(path))
    except SafetensorError as err:
        raise WeightsFileError(_damaged(path, err)) from None
    _check_finite(path, tensors)
    backbone.load_state_dict(tensors, strict=True)
    return Encoder(spec, backbone, file_sha256(path)).eval()


def _damaged(path: Path, err: Exception) -> str:
    return (f"{path} is damaged (truncated or not a safetensors file: {err}); write it again: re-run the training "
            "command of its run directory (it resumes from the last checkpoint and writes the student at the end)")


def _check_finite(path: Path, tensors: dict) -> None:
    """Refuse weights holding NaN or infinite values (a diverged training), naming the tensors."""
    import torch

    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsFileError(f"{path}: {len(bad)} of {len(tensors)} weight tensors hold NaN or infinite values "
                               f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}): the training that wrote it "
                               "diverged; retrain it (from a checkpoint before the divergence) instead of using it")
