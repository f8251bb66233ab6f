"""Keypoint correspondence: Probe3D's SPair-71k protocol (PCK@0.1 of the target bounding box).

Dense last-layer features of both images (no training), L2-normalized; each source keypoint's
feature is sampled bilinearly, matched by argmax over the target patch grid (no upsampling), and
the predicted location is that patch's centre. Images are squared (SPair: padded bottom/right
with white) and resized to ``resolution`` (default 448; Probe3D uses 800, report both).

Offline (``ctx.data == "offline"``) two real-pixel fixtures: the Middlebury Motorcycle stereo pair
with ground-truth disparity (PCK@0.05 of the longer side; the identity baseline is printed) and
bundled photos under known random affine warps (PCK@0.1 of the side). A dataset root uses the
``SPair-71k`` layout (``PairAnnotation/test``, 200 pairs per class, seed 20, 18 classes averaged).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch

from eupe.eval.dense import fixtures
from eupe.eval.dense.features import extract, model_size
from eupe.eval.dense.inference import match_keypoints
from eupe.eval.dense.metrics import pck
from eupe.eval.dense.probe import figure
from eupe.eval.dense.samples import Pair
from eupe.eval.tasks.base import OFFLINE, EvalContext, EvalModel, Figure, PresetTask, register_task


@dataclass(frozen=True)
class CorrConfig:
    resolution: int = 448  # square side (warps, SPair) / short side (stereo)
    stereo_matches: int = 400
    stereo_alpha: float = 0.05
    warp_pairs: int | None = None  # None: every bundled photo
    warp_alpha: float = 0.1
    keypoints: int = 50
    pairs_per_class: int | None = 200  # SPair (Probe3D: 200, seed 20)
    spair_alpha: float = 0.1


QUICK = CorrConfig(warp_pairs=4)




def pair_predictions(model: EvalModel, pairs: Sequence[Pair], size: tuple[int, int] | None, ctx: EvalContext
                     ) -> tuple[list[torch.Tensor], list[Pair]]:
    """Predicted target keypoints [N, 2] for each pair (features of all images in batches), and the
    pairs without their pixels (``pairs`` may decode lazily: each chunk is decoded once).

    ``size``: the model input size for every image (None: fitted per pair to its own size)."""
    out, light = [], []
    step = max(1, ctx.batch_size // 2)
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        shape = size or model_size(model.encoder, *chunk[0].source.shape[-2:])
        feats = extract(model.encoder, [im for p in chunk for im in (p.source, p.target)], shape,
                        ctx.batch_size, ctx.device)  # [2n, D, h, w]
        for i, p in enumerate(chunk):
            out.append(match_keypoints(feats[2 * i], feats[2 * i + 1], p.source_xy,
                                       tuple(p.source.shape[-2:]), tuple(p.target.shape[-2:])))
            light.append(replace(p, source=None, target=None))
    return out, light


def score(pairs: list[Pair], preds: list[torch.Tensor], alpha: float) -> float:
    """PCK over all keypoints of all pairs, in %."""
    pred = torch.cat(preds)
    gt = torch.cat([p.target_xy for p in pairs])
    scale = torch.cat([torch.as_tensor(p.scale, dtype=torch.float64).expand(len(p.target_xy)) for p in pairs])
    return 100 * pck(pred, gt, scale, alpha)


def stereo_pair(config: CorrConfig, seed: int) -> tuple[Pair, tuple[int, int]]:
    scene = fixtures.middlebury()
    src, tgt = fixtures.stereo_matches(scene, config.stereo_matches, seed)
    height, width = scene.left.shape[-2:]
    return Pair(scene.left, scene.right, src, tgt, float(max(height, width))), (height, width)


def warp_pairs(config: CorrConfig, seed: int) -> list[Pair]:
    from eupe.assets import bundled_photos, imagenet_photos

    photos = (bundled_photos() + imagenet_photos())[: config.warp_pairs]
    warps = fixtures.warped_pairs(photos, config.resolution, seed, fixtures.WarpConfig(keypoints=config.keypoints))
    return [Pair(w.source, w.target, w.source_xy, w.target_xy, float(config.resolution)) for w in warps]


def identity_pck(pairs: list[Pair], alpha: float) -> float:
    return score(pairs, [p.source_xy for p in pairs], alpha)


class CorrTask(PresetTask):
    name = "corr"
    Config = CorrConfig
    QUICK, FULL = QUICK, CorrConfig()  # this module's presets: --quick, the paper protocol
    column = "Corr PCK"

    def quick_on_dataset(self) -> CorrConfig:
        return replace(self.FULL, pairs_per_class=10)

    def offline(self, model: EvalModel, config: CorrConfig, ctx: EvalContext) -> list[Figure]:
        stereo, (height, width) = stereo_pair(config, ctx.seed)
        short = config.resolution
        stereo_size = model_size(model.encoder, short, round(width * short / height))
        stereo_pck = score([stereo], pair_predictions(model, [stereo], stereo_size, ctx)[0], config.stereo_alpha)
        warps = warp_pairs(config, ctx.seed)
        side = model_size(model.encoder, config.resolution, config.resolution)
        warp_pck = score(warps, pair_predictions(model, warps, side, ctx)[0], config.warp_alpha)
        base = {**asdict(config), "seed": ctx.seed, "matching": "argmax over target patch grid (Probe3D)"}
        stereo_settings = {**base, "input_size": list(stereo_size), "matches": len(stereo.source_xy),
                           "threshold": f"{config.stereo_alpha} x longer image side",
                           "baseline_identity_pck": round(identity_pck([stereo], config.stereo_alpha), 2)}
        warp_settings = {**base, "input_size": list(side), "pairs": len(warps),
                         "threshold": f"{config.warp_alpha} x image side",
                         "baseline_identity_pck": round(identity_pck(warps, config.warp_alpha), 2)}
        return [figure(self.name, f"PCK@{config.stereo_alpha}", stereo_pck, model, fixtures.STEREO_FIXTURE, True,
                       stereo_settings),
                figure(self.name, f"PCK@{config.warp_alpha}", warp_pck, model, fixtures.WARP_FIXTURE, True,
                       warp_settings)]

    def spair(self, model: EvalModel, config: CorrConfig, ctx: EvalContext) -> list[Figure]:
        from eupe.eval.dense.layouts import spair_pairs

        pairs = spair_pairs(ctx.data, config, ctx.seed)
        side = model_size(model.encoder, config.resolution, config.resolution)
        preds, pairs = pair_predictions(model, pairs, side, ctx)
        groups = sorted({p.group for p in pairs})
        per_class = {g: score([p for p in pairs if p.group == g], [q for p, q in zip(pairs, preds) if p.group == g],
                              config.spair_alpha) for g in groups}
        settings = {**asdict(config), "seed": ctx.seed, "input_size": list(side), "pairs": len(pairs),
                    "per_class": {g: round(v, 2) for g, v in per_class.items()},
                    "threshold": f"{config.spair_alpha} x max side of the target bbox",
                    "matching": "argmax over target patch grid (Probe3D)"}
        value = sum(per_class.values()) / len(per_class)
        return [figure(self.name, f"PCK@{config.spair_alpha}", value, model, f"SPair-71k test ({config.resolution} px)",
                       False, settings)]

    def run(self, model: EvalModel, ctx: EvalContext) -> list[Figure]:
        config = self.config(ctx)
        return self.offline(model, config, ctx) if ctx.data == OFFLINE else self.spair(model, config, ctx)


register_task(CorrTask())
