"""kNN task: the DINOv2/DINOv3/EUPE weighted kNN on L2-normalized summary tokens (``eupe.eval.knn``).

Summary token after the final norm, L2, T = 0.07, k in {10, 20, 100, 200}, resize 256 then
centre-crop 224 (``transform="eupe"``; ``"full"`` squashes the whole image). One Figure per k
(``top1@k`` in %); the table shows ``top1@20``. Offline: Fashion-MNIST (500 / 500 images, 300 /
300 with ``--quick``) at 112 px; with a dataset root, the folder / webdataset layouts of
``eupe.eval.datasets.load_split`` at the model's resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from eupe.eval.datasets import MissingDatasetError
from eupe.eval.protocol import DEFAULT_KS, DEFAULT_TRANSFORM, HEADLINE_K, TEMPERATURE
from eupe.eval.tasks.base import OFFLINE, EvalContext, EvalModel, EvalTask, Figure, register_task
from eupe.eval.tasks.common import features, labelled_split

OFFLINE_LIMIT, QUICK_LIMIT = 500, 300
OFFLINE_RESOLUTION = 112  # a multiple of 14 and 16: every model sees the same pixels


@dataclass
class KnnConfig:
    ks: tuple[int, ...] = DEFAULT_KS
    temperature: float = TEMPERATURE
    transform: str = DEFAULT_TRANSFORM  # "eupe" (resize 256 / crop 224) or "full" (squash)
    resolution: int | None = None  # None: 112 px offline, the model's own on a dataset
    limit: int | None = None  # images per split; None: 500 offline (300 --quick), all on a dataset


class KnnTask(EvalTask):
    name = "knn"
    column = "kNN top-1"
    headline = f"top1@{HEADLINE_K}"
    Config = KnnConfig

    def run(self, model: EvalModel, ctx: EvalContext) -> list[Figure]:
        from eupe.eval.knn import eval_resolution, knn_top1_for_ks

        cfg = self.config(ctx)
        limit = cfg.limit or ((QUICK_LIMIT if ctx.quick else OFFLINE_LIMIT) if ctx.data == OFFLINE else None)
        resolution = eval_resolution(model.encoder, cfg.resolution or (OFFLINE_RESOLUTION if ctx.data == OFFLINE else None))
        try:
            train, test, data, offline = labelled_split(ctx, limit)
        except MissingDatasetError as err:  # offline fixture not installed: the cell says so
            return [Figure(task=self.name, metric=self.headline, value=None, model=model.name,
                           fingerprint=model.fingerprint, data="offline: Fashion-MNIST", offline=True,
                           settings=asdict(cfg), reason=str(err))]
        train_feats = features(model, train, ctx, "knn train", resolution, cfg.transform)
        test_feats = features(model, test, ctx, "knn test", resolution, cfg.transform)
        top1 = knn_top1_for_ks(train_feats, torch.as_tensor(train.labels), test_feats, torch.as_tensor(test.labels),
                               cfg.ks, cfg.temperature)
        settings = {**asdict(cfg), "ks": list(cfg.ks), "resolution": resolution, "train_images": len(train),
                    "test_images": len(test), "classes": len(train.classes), "seed": ctx.seed,
                    "feature": "summary token after the final norm, L2-normalized"}
        return [Figure(task=self.name, metric=f"top1@{k}", value=round(100 * acc, 2), model=model.name,
                       fingerprint=model.fingerprint, data=data, offline=offline, settings=settings)
                for k, acc in top1.items()]


register_task(KnnTask())
