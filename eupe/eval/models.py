"""Load any model to evaluate: a registered teacher or student by name, or a trained student file.

``load_model("effnet_lite0")`` builds a teacher with its installed weights;
``load_model("vit_s", weights="vit_small.eupe.safetensors")`` loads released EUPE (or other
timm-keyed) weights into a registered student; ``load_model("runs/stage2")`` or
``load_model("runs/stage2/student.safetensors")`` rebuilds a student trained by ``eupe-train``.
Every model comes back in eval mode with frozen parameters.
"""

from __future__ import annotations

from pathlib import Path

from eupe.models.checkpoint import STUDENT_FILENAME, load_student
from eupe.models.features import Encoder
from eupe.models.students import create_student, list_students
from eupe.models.teachers import create_teacher, list_teachers
from eupe.models.weights import MissingWeightsError
from eupe.registry import UnknownNameError


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".safetensors") or "/" in spec or Path(spec).exists()


def _student(name: str, weights: str | None, test_scale: bool) -> Encoder:
    if weights is None and not test_scale:
        raise MissingWeightsError(
            f"student {name!r} needs weights to be evaluated: pass --weights FILE (released EUPE "
            f"safetensors or a trained {STUDENT_FILENAME}) or --weights eupe (local Hugging Face cache)"
        )
    return create_student(name, weights=weights, test_scale=test_scale)


def _build(spec: str, weights: str | None, test_scale: bool) -> Encoder:
    if spec in list_teachers():
        return create_teacher(spec, weights=weights, test_scale=test_scale)
    if spec in list_students():
        return _student(spec, weights, test_scale)
    if _looks_like_path(spec):
        if weights is not None:
            raise ValueError(f"--weights is only for registered names; {spec} already is a weights file")
        return load_student(spec)  # FileNotFoundError names what is missing
    raise UnknownNameError(
        f"unknown model {spec!r}: not a path, a teacher ({', '.join(list_teachers())}) "
        f"or a student ({', '.join(list_students())})"
    )


def load_model(spec: str, weights: str | None = None, test_scale: bool = False) -> Encoder:
    """An ``Encoder`` in eval mode with frozen parameters, from a name or a student file/run dir.

    ``spec``: a registered teacher or student name, a ``student.safetensors`` file, or a training
    run directory holding one. ``weights`` goes to ``create_teacher``/``create_student`` (a
    student name needs it unless ``test_scale``). ``test_scale``: tiny random-init variants (tests).
    """
    model = _build(spec, weights, test_scale)
    model.requires_grad_(False)
    return model.eval()


def split_model_arg(arg: str) -> tuple[str, str | None]:
    """``NAME=WEIGHTS`` -> (NAME, WEIGHTS) for a registered name; anything else -> (arg, None)."""
    name, sep, weights = arg.partition("=")
    if sep and name in set(list_teachers()) | set(list_students()):
        return name, weights
    return arg, None
