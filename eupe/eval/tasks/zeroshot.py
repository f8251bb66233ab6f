"""Zero-shot task: a model's CLIP-space summary against the PE-Core text classifier (``eupe.eval.zeroshot``).

The image side is ``EvalModel.clip_summary``: ``pecore_g``'s projected summary (a teacher), or a
student's / proxy's ``pecore_g`` head mapped back through the frozen statistics. Without one, or
without text weights (``text_weights``, ``--text-weights FILE``), the cell is not available and the
Figure says why. Offline: the Fashion-MNIST test split (500 images, 300 with ``--quick``) with
the class names as prompts; with a dataset root, its test split (ImageNet val: open_clip's names).
PE teachers see the whole image squashed (PE's ``resize_mode=squash``), students the EUPE crop.
Open question (eval-protocols §6): EUPE does not publish its zero-shot code; this follows RADIO.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from eupe.eval.datasets import MissingDatasetError
from eupe.eval.tasks.base import OFFLINE, EvalContext, EvalModel, EvalTask, Figure, register_task
from eupe.eval.tasks.common import features, labelled_split
from eupe.eval.zeroshot import DEFAULT_TEXT_MODEL, NO_TEXT_WEIGHTS

OFFLINE_LIMIT, QUICK_LIMIT = 500, 300
OFFLINE_RESOLUTION = 112


@dataclass
class ZeroShotConfig:
    text_weights: str | None = None  # local open_clip checkpoint of the text tower ("random": tests only)
    text_model: str = DEFAULT_TEXT_MODEL  # open_clip PE-Core config name, or a JSON file of that schema
    templates: str = "openai"  # "openai" (80) or "simple" (7)
    transform: str = "auto"  # "auto": squash for PE teachers, EUPE crop otherwise; or "eupe" / "full"
    resolution: int | None = None  # None: 112 px offline, the model's own on a dataset
    limit: int | None = None  # test images; None: 500 offline (300 --quick), all on a dataset


class ZeroShotTask(EvalTask):
    name = "zeroshot"
    column = "zero-shot top-1"
    headline = "top1"
    Config = ZeroShotConfig

    def run(self, model: EvalModel, ctx: EvalContext) -> list[Figure]:
        cfg = self.config(ctx)
        data = "offline: Fashion-MNIST test split" if ctx.data == OFFLINE else str(ctx.data)
        if model.clip_summary is None:
            return [self._missing(model, data, ctx, model.clip_reason or "the model has no CLIP-space summary")]
        if cfg.text_weights is None:
            return [self._missing(model, data, ctx, NO_TEXT_WEIGHTS)]
        return self._measure(model, ctx, cfg)

    def _missing(self, model: EvalModel, data: str, ctx: EvalContext, reason: str) -> Figure:
        return Figure(task=self.name, metric="top1", value=None, model=model.name, fingerprint=model.fingerprint,
                      data=data, offline=ctx.data == OFFLINE, settings=asdict(self.config(ctx)), reason=reason)

    def _measure(self, model: EvalModel, ctx: EvalContext, cfg: ZeroShotConfig) -> list[Figure]:
        from eupe.eval.knn import eval_resolution
        from eupe.eval.zeroshot import (load_text_tower, prompt_names, templates, text_classifier, topk_accuracy,
                                        zero_shot_logits)

        limit = cfg.limit or ((QUICK_LIMIT if ctx.quick else OFFLINE_LIMIT) if ctx.data == OFFLINE else None)
        try:
            _, test, data, offline = labelled_split(ctx, limit)
        except MissingDatasetError as err:  # offline fixture not installed: the cell says so
            return [self._missing(model, "offline: Fashion-MNIST", ctx, str(err))]
        tower = load_text_tower(cfg.text_weights, cfg.text_model, ctx.seed)
        ctx.report(f"{model.name} zeroshot text classifier", 0, len(test.classes))
        classifier, hit = text_classifier(tower, prompt_names(test.classes), templates(cfg.templates),
                                          ctx.cache_dir, ctx.device)
        transform = cfg.transform if cfg.transform != "auto" else (
            "full" if model.encoder.spec.summary == "attn_pool_proj" else "eupe")
        resolution = eval_resolution(model.encoder, cfg.resolution or (OFFLINE_RESOLUTION if ctx.data == OFFLINE else None))
        feats = features(model, test, ctx, "zeroshot", resolution, transform, model.clip_summary)
        logits = zero_shot_logits(feats, classifier)
        labels = torch.as_tensor(test.labels)
        if offline:
            data = f"offline: Fashion-MNIST test split ({len(test)} images)"
        random_tower = str(cfg.text_weights) == "random"
        data = data + (", random-init text tower (not a real score)" if random_tower else "")
        settings = {**asdict(cfg), "text_weights": _basename(cfg.text_weights), "transform": transform,
                    "resolution": resolution, "test_images": len(test), "classes": len(test.classes),
                    "text_fingerprint": tower.fingerprint, "classifier_cached": hit}
        return [Figure(task=self.name, metric=f"top{k}", value=round(100 * topk_accuracy(logits, labels, k), 2),
                       model=model.name, fingerprint=model.fingerprint, data=data, offline=offline, settings=settings)
                for k in (1, 5)]


def _basename(path: str | None) -> str | None:
    from pathlib import Path

    return None if path is None else Path(path).name


register_task(ZeroShotTask())
