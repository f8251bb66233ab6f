"""Where an exported student comes from: a trained student file, or released EUPE weights.

Both give the same thing to the exporters: an eval-mode ``Encoder`` plus the facts the model
card records (registry name, timm name and kwargs, the training ``info``, the weights' hash).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eupe.models.checkpoint import load_student, read_student_metadata, resolve_student_file
from eupe.models.features import Encoder
from eupe.models.students import create_student, student_spec


@dataclass
class StudentSource:
    """An encoder to export and what is known about it."""

    encoder: Encoder
    origin: str  # the file or run directory it was read from
    timm_kwargs: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # the trainer's record (stage, teachers, config, metrics)

    @property
    def test_scale(self) -> bool:
        """Whether the kwargs are the spec's tiny test-scale ones."""
        spec = self.encoder.spec
        return bool(spec.test_kwargs) and all(self.timm_kwargs.get(k) == v for k, v in spec.test_kwargs.items())

    def describe(self) -> dict[str, Any]:
        """The student part of a model card."""
        spec = self.encoder.spec
        return {"name": spec.name, "timm_name": spec.timm_name, "timm_kwargs": self.timm_kwargs,
                "description": spec.description, "origin": self.origin,
                "weights_sha256": self.encoder.fingerprint, "test_scale": self.test_scale,
                "summary_dim": self.encoder.dim, "patch_size": spec.patch_size,
                "native_resolution": spec.resolution, "input": "RGB in [0, 1]; normalization is inside the model",
                "mean": list(spec.mean), "std": list(spec.std), "summary": spec.summary,
                "prefix_tokens": spec.prefix_tokens}


def from_checkpoint(path: str | Path) -> StudentSource:
    """A student trained by ``eupe-train`` (run directory or ``student.safetensors``)."""
    path = resolve_student_file(path)
    meta = read_student_metadata(path)
    return StudentSource(load_student(path), str(path), meta["timm_kwargs"], meta["info"])


def from_released(name: str, weights: str | Path) -> StudentSource:
    """A registered student with released EUPE weights (a local timm-format file, or "eupe")."""
    spec = student_spec(name)
    encoder = create_student(name, weights=weights)
    kwargs = {"num_classes": 0, **spec.timm_kwargs}
    return StudentSource(encoder, str(weights), kwargs, {"source": "released EUPE weights", "weights": str(weights)})
