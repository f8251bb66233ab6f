"""Where an exported student comes from: a trained student file, or released EUPE weights.

Both give the same thing to the exporters: an eval-mode ``Encoder`` plus the facts the model
card records (registry name, timm name and kwargs, the training ``info``, the weights' hash, the
run directory whose ``losses.jsonl`` and ``evaluations.jsonl`` the card reads) and the identity
the export carries in its ``config.json`` (its own tag and licence, or the release's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eupe.models.checkpoint import STUDENT_FILENAME, load_student, read_student_metadata, resolve_student_file
from eupe.models.features import Encoder
from eupe.models.proxy import PROXY_FILENAME
from eupe.models.students import create_student, student_spec

RELEASE_LICENSE = "fair-noncommercial-research-license"  # timm's pretrained_cfg of the *.eupe_lvd1689m weights


class MissingStudentError(FileNotFoundError):
    """A run directory (or path) that holds no student weights to export."""


def shown_path(path: str | Path) -> str:
    """``path`` as the card may show it: relative to the working directory when under it, else its
    name alone (a card never embeds the absolute paths of the machine it was made on)."""
    text = str(path)
    if not os.path.isabs(text):
        return text
    try:
        return str(Path(text).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return Path(text).name


@dataclass
class StudentSource:
    """An encoder to export and what is known about it."""

    encoder: Encoder
    origin: str  # the file or run directory it was read from, as the user named it
    timm_kwargs: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # the trainer's record (stage, teachers, config, metrics)
    run_dir: Path | None = None  # the training run directory (None: released weights)
    release_tag: str | None = None  # released weights: their timm tag (eupe_lvd1689m)
    license: str | None = None  # the licence the user chose for the export (None: default_license)

    @property
    def test_scale(self) -> bool:
        """Whether the kwargs are the spec's tiny test-scale ones."""
        spec = self.encoder.spec
        return bool(spec.test_kwargs) and all(self.timm_kwargs.get(k) == v for k, v in spec.test_kwargs.items())

    @property
    def name(self) -> str:
        """The export's name: ``<student>-<run directory>`` (or the release's ``<timm name>.<tag>``)."""
        spec = self.encoder.spec
        if self.release_tag:
            return f"{spec.timm_name}.{self.release_tag}"
        run = self.run_dir.resolve().name if self.run_dir else Path(self.origin).stem
        return f"{spec.name}-{run}"

    def default_license(self) -> str:
        """Released weights keep their licence; a trained student gets ``other`` until its owner chooses one
        (its teachers' and data's terms decide what it may be)."""
        return RELEASE_LICENSE if self.release_tag else "other"

    def training_resolution(self) -> int:
        """The (first) input resolution the student was trained at, else its native one."""
        resolutions = (self.info.get("config") or {}).get("student_resolutions") or []
        return int(resolutions[0]) if resolutions else self.encoder.spec.resolution

    def identity(self) -> dict[str, Any]:
        """The ``pretrained_cfg`` identity fields of this export: tag, licence, description."""
        from eupe.deploy.timm_export import export_tag

        spec, stage = self.encoder.spec, self.info.get("stage")
        what = (f"released EUPE weights ({self.release_tag})" if self.release_tag else
                f"distilled with eupe (stage {stage}) from {', '.join(_teacher_names(self.info)) or 'its teachers'}")
        return {"tag": self.release_tag or export_tag(self.name), "license": self.license or self.default_license(),
                "description": f"{spec.name} student ({spec.timm_name}), {what}; weights sha256 "
                               f"{self.encoder.fingerprint[:16]}"}

    def describe(self) -> dict[str, Any]:
        """The student part of a model card."""
        spec = self.encoder.spec
        return {"name": spec.name, "timm_name": spec.timm_name, "timm_kwargs": self.timm_kwargs,
                "description": spec.description, "origin": shown_path(self.origin),
                "weights_sha256": self.encoder.fingerprint, "test_scale": self.test_scale,
                "summary_dim": self.encoder.dim, "patch_size": spec.patch_size,
                "native_resolution": spec.resolution, "training_resolution": self.training_resolution(),
                "mean": list(spec.mean), "std": list(spec.std), "summary": spec.summary,
                "prefix_tokens": spec.prefix_tokens}


def teacher_hub_ids(names: list[str]) -> list[str]:
    """The Hugging Face repos of the registered teachers among ``names`` (the card's ``base_model``)."""
    from eupe.models.teachers import list_teachers, teacher_spec

    known = set(list_teachers())
    return [repo for repo in (teacher_spec(n).weights.hf_repo for n in names if n in known) if repo]


def _teacher_names(info: dict[str, Any]) -> list[str]:
    teachers = info.get("teachers") or []
    return list(teachers) if isinstance(teachers, (dict, list)) else [str(teachers)]


def _student_file(path: str | Path) -> Path:
    """The student file of a path, or MissingStudentError saying what the run holds instead."""
    path = Path(path)
    if path.is_dir() and not (path / STUDENT_FILENAME).is_file():
        if (path / PROXY_FILENAME).is_file():
            raise MissingStudentError(
                f"{path} is a Stage-1 run: it holds the proxy teacher ({PROXY_FILENAME}), not a student; export the "
                f"{STUDENT_FILENAME} of a Stage-2 or Stage-3 run (eupe-train --stage 2)")
        if (path / "checkpoints").is_dir():
            raise MissingStudentError(
                f"{path} has no {STUDENT_FILENAME}: its training has not finished (only checkpoints/); re-run the "
                f"same eupe-train command to finish it, then export")
        raise MissingStudentError(f"{path} holds no student weights ({STUDENT_FILENAME}); pass an eupe-train run "
                                  f"directory of Stage 2 or 3, or its {STUDENT_FILENAME}")
    return resolve_student_file(path)


def from_checkpoint(path: str | Path) -> StudentSource:
    """A student trained by ``eupe-train`` (run directory or ``student.safetensors``)."""
    file = _student_file(path)
    meta = read_student_metadata(file)
    return StudentSource(load_student(file), str(path), meta["timm_kwargs"], meta["info"], run_dir=file.parent)


def from_released(name: str, weights: str | Path) -> StudentSource:
    """A registered student with released EUPE weights (a local timm-format file, or "eupe")."""
    spec = student_spec(name)
    encoder = create_student(name, weights=weights)
    kwargs = {"num_classes": 0, **spec.timm_kwargs}
    tag = spec.pretrained_id.partition(".")[2] or None
    return StudentSource(encoder, str(weights), kwargs,
                         {"source": "released EUPE weights", "weights": shown_path(weights)}, release_tag=tag)
