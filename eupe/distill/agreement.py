"""Agreement between a distilled student and its teacher on held-out views.

The student's adapter-head outputs are compared with the teacher's outputs, normalized with the
same frozen statistics as the training targets: mean cosine of the summary token and mean
per-token cosine of the patch tokens (after the same bicubic grid matching as the loss).
Views come from a seed that training did not use, so they are held out even for training images.
"""

from __future__ import annotations

import json
from typing import Callable
from pathlib import Path

import torch

from eupe.distill.heads import HEADS_FILENAME, DistillModel
from eupe.distill.losses import match_grids
from eupe.distill.stats import Stats, nearest_stats, normalize
from eupe.models.features import Encoder
from eupe.models.checkpoint import load_student
from eupe.views.policy import ViewPolicy, sample_views
from eupe.views.renderer import render_views


def load_distill_model(run_dir: str | Path, encoder: Encoder | None = None) -> DistillModel:
    """A trained model with its adapter heads, from a run directory.

    ``encoder``: the backbone the heads sit on (default: the run's student; the proxy for a Stage-1 run).
    """
    run_dir = Path(run_dir)
    heads = torch.load(run_dir / HEADS_FILENAME, map_location="cpu", weights_only=True)
    dims = {key.split(".")[0]: (value.shape[0], heads[key.replace("summary.3", "patch.3")].shape[0])
            for key, value in heads.items() if key.endswith("summary.3.weight")}
    hidden = next(v.shape[0] for k, v in heads.items() if k.endswith("summary.0.weight"))
    model = DistillModel(encoder if encoder is not None else load_student(run_dir), dims, hidden)
    model.heads.load_state_dict(heads)
    return model.eval()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


@torch.no_grad()
def teacher_agreement(model: DistillModel, name: str, teacher: Encoder, stats: dict[int, Stats],
                      images: list[tuple[str, torch.Tensor]], views: int = 4, seed: int = 10_000,
                      student_resolution: int = 256, teacher_resolution: int | None = None,
                      policy: ViewPolicy | None = None,
                      progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """Mean summary and patch cosine over ``views`` fresh views of each (key, uint8 image);
    ``progress(1)`` after each image."""
    policy = policy or ViewPolicy()
    teacher_resolution = teacher_resolution or teacher.spec.resolution
    summary, patch = [], []
    for key, image in images:
        specs = sample_views(policy, seed, key, image.shape[1], image.shape[2], views)
        target = normalize(teacher(render_views(image, specs, teacher_resolution)),
                           nearest_stats(stats, teacher_resolution))
        pred = model(render_views(image, specs, student_resolution))[name]
        p, t = match_grids(pred["patch"], target["patch"])
        summary.append(_cosine(pred["summary"], target["summary"]))
        patch.append(_cosine(p, t).flatten())
        if progress is not None:
            progress(1)
    return {"summary_cos": torch.cat(summary).mean().item(), "patch_cos": torch.cat(patch).mean().item(),
            "views": views * len(images)}


def write_report(path: str | Path, report: dict) -> None:
    Path(path).write_text(json.dumps(report, indent=2))
