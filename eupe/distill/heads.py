"""Adapter heads that map a student's features into each teacher's feature space.

EUPE distils several teachers into one student at once. The student keeps a single
backbone; for every teacher it gets two small adapter MLPs, one for the summary token and
one for the patch tokens, that project the student's width ``D`` to the teacher's ``Dt``.
The losses (``eupe.distill.losses``) compare these projections with the teacher targets.
After distillation the heads are thrown away and only ``DistillModel.student`` is kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from eupe.models.features import Encoder, Features

TOKEN_KINDS = ("summary", "patch")


class AdapterHead(nn.Sequential):
    """The EUPE adapter: Linear(in, hidden) -> LayerNorm -> GELU -> Linear(hidden, out), no biases.

    Acts on the last dimension, so it takes ``[B, D]`` summaries and ``[B, h, w, D]`` grids alike.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden, bias=False),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, out_dim, bias=False),
        )


TeacherDims = int | tuple[int, int]  # one width, or (summary width, patch width)


def _kind_dims(dim: TeacherDims) -> dict[str, int]:
    """{"summary": Ds, "patch": D}: PE-core's summary (its projected embedding) is narrower than its patches."""
    summary, patch = (dim, dim) if isinstance(dim, int) else dim
    return {"summary": int(summary), "patch": int(patch)}


def _check_teacher_dims(teacher_dims: Mapping[str, TeacherDims]) -> None:
    if not teacher_dims:
        raise ValueError("DistillModel needs at least one teacher")
    for name, dim in teacher_dims.items():
        if not name or "." in name:
            raise ValueError(f"teacher name {name!r} must be non-empty and contain no '.'")
        if min(_kind_dims(dim).values()) <= 0:
            raise ValueError(f"teacher {name!r}: dimension must be positive, got {dim}")


class DistillModel(nn.Module):
    """A student plus, per teacher, one head for the summary token and one for patch tokens."""

    def __init__(self, student: Encoder, teacher_dims: Mapping[str, TeacherDims], hidden: int) -> None:
        super().__init__()
        _check_teacher_dims(teacher_dims)
        self.student = student
        self.heads = nn.ModuleDict({
            name: nn.ModuleDict({kind: AdapterHead(student.dim, hidden, width)
                                 for kind, width in _kind_dims(dim).items()})
            for name, dim in teacher_dims.items()
        })

    @property
    def teachers(self) -> list[str]:
        """Teacher names, in the order the heads were built."""
        return list(self.heads.keys())

    def student_features(self, pixels: torch.Tensor) -> Features:
        """Raw student output, no heads: {"summary": [B, D], "patch": [B, h, w, D]}."""
        return self.student(pixels)

    def forward(self, pixels: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """pixels [B, 3, H, W] in [0, 1] -> teacher -> {"summary": [B, Dt], "patch": [B, h, w, Dt]}.

        The patch grid is the student's (h, w); ``match_grids`` reconciles it with the teacher's.
        """
        feats = self.student_features(pixels)
        return {
            name: {kind: heads[kind](feats[kind]) for kind in TOKEN_KINDS}
            for name, heads in self.heads.items()
        }


HEADS_FILENAME = "heads.pt"  # adapter heads' state dict in a run directory
