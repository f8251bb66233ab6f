"""Agreement task: cosine between a distilled student's adapter heads and its teachers (``eupe.distill.agreement``).

Only a training run directory has heads; for any other model the cell is not available. Each
teacher the run trained against runs online on fresh views (seed 10 000, unused in training) of
held-out images, normalized with the frozen statistics of the run (its store or ``stats/``).
Offline: the last 6 bundled ImageNet photos (the demo's held-out set), 4 views each (2 with
``--quick``); with a dataset root, its first 16 images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from eupe.eval.tasks.base import OFFLINE, EvalContext, EvalModel, EvalTask, Figure, register_task


@dataclass
class AgreementConfig:
    views: int = 4
    seed: int = 10_000
    limit: int = 16  # images of a dataset root
    resolution: int | None = None  # student resolution (default: its own)


class AgreementTask(EvalTask):
    name = "agreement"
    column = "head/teacher summary cosine"
    Config = AgreementConfig

    def run(self, model: EvalModel, ctx: EvalContext) -> list[Figure]:
        from eupe.eval.runs import has_heads

        cfg = self.config(ctx)
        if model.run_dir is None or not has_heads(model.run_dir):
            return [Figure(task=self.name, metric="summary_cos", value=None, model=model.name,
                           fingerprint=model.fingerprint, data=self._data(ctx), offline=ctx.data == OFFLINE,
                           settings=asdict(cfg), reason="not a distilled run directory: no adapter heads to compare")]
        return self._measure(model, ctx, cfg)

    @staticmethod
    def _data(ctx: EvalContext) -> str:
        return "offline: 6 bundled ImageNet photos, fresh views" if ctx.data == OFFLINE else str(ctx.data)

    def _measure(self, model: EvalModel, ctx: EvalContext, cfg: AgreementConfig) -> list[Figure]:
        from eupe.distill.agreement import load_distill_model, teacher_agreement
        from eupe.eval.runs import head_stats, run_teachers
        from eupe.models.teachers import create_teacher

        distill = load_distill_model(model.run_dir)
        images = _images(ctx, cfg.limit)
        views = max(1, cfg.views // 2) if ctx.quick else cfg.views
        resolution = cfg.resolution or distill.student.spec.resolution
        out = []
        for i, (teacher, weights) in enumerate(run_teachers(model.run_dir).items()):
            ctx.report(f"{model.name} agreement", i, len(distill.teachers))
            encoder = create_teacher(teacher, weights)
            result = teacher_agreement(distill, teacher, encoder, head_stats(model.run_dir, teacher), images,
                                       views, cfg.seed, resolution)
            settings = {**asdict(cfg), "views": result["views"], "teacher": teacher, "resolution": resolution}
            out += [Figure(task=self.name, metric=f"{kind}_cos[{teacher}]", value=round(result[f"{kind}_cos"], 4),
                           model=model.name, fingerprint=model.fingerprint, data=self._data(ctx),
                           offline=ctx.data == OFFLINE, settings=settings)
                    for kind in ("summary", "patch")]
        return out


def _images(ctx: EvalContext, limit: int) -> list:
    from pathlib import Path

    from eupe.assets import imagenet_photos
    from eupe.views.source import decode_image

    if ctx.data == OFFLINE:
        return [(p.key, decode_image(p.read_bytes())) for p in imagenet_photos()[-6:]]
    files = sorted(p for p in Path(ctx.data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    return [(str(f.relative_to(ctx.data)), decode_image(f.read_bytes())) for f in files[:limit]]


register_task(AgreementTask())
