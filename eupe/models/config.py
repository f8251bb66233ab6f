"""Config dataclasses for choosing a teacher or a student (YAML values live in configs/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from eupe.models.students import create_student, student_spec
from eupe.models.teachers import create_teacher, teacher_spec

if TYPE_CHECKING:
    from eupe.models.features import Encoder


@dataclass
class TeacherConfig:
    """A teacher as used by extraction and training."""

    name: str = "dinov2s_imgfocus"
    weights: Optional[str] = None  # local weights file (default: package file or HF cache)
    resolutions: list[int] = field(default_factory=list)  # empty: the teacher's native resolution
    patch_weight: float = 1.0  # per-teacher weight of the patch loss
    test_scale: bool = False  # tiny random-init variant of the same architecture

    def __post_init__(self) -> None:
        teacher_spec(self.name)  # an unknown name fails when the config is built (UnknownNameError)

    def create(self) -> Encoder:
        return create_teacher(self.name, self.weights, self.test_scale)


@dataclass
class StudentConfig:
    """A student architecture and its initialisation."""

    name: str = "vit_t"
    weights: Optional[str] = None  # None: random init; a file; or "eupe" for the released weights in the HF cache
    resolution: int = 256
    test_scale: bool = False

    def __post_init__(self) -> None:
        student_spec(self.name)  # an unknown name fails when the config is built (UnknownNameError)

    def create(self) -> Encoder:
        return create_student(self.name, self.weights, self.test_scale)
