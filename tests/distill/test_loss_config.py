"""LossConfig builds DistillLoss: defaults give the paper's loss exactly; every weight does what it says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eupe import config as config_io
from eupe.distill.config import TrainConfig
from eupe.distill.losses import LossConfig
from eupe.distill.losses import DistillLoss, distill_loss, match_grids


def _feats(b: int, h: int, d: int) -> dict[str, torch.Tensor]:
    return {"summary": torch.randn(b, d), "patch": torch.randn(b, h, h, d)}


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    pred = {"a": _feats(2, 2, 6), "b": _feats(2, 3, 4)}
    target = {"a": _feats(2, 4, 6), "b": _feats(2, 3, 4)}
    return pred, target


def test_default_loss_object_reproduces_the_paper_loss_bit_for_bit():
    pred, target = _pair(1)
    module = LossConfig().build({"a": 0.5})
    assert isinstance(module, DistillLoss) and isinstance(module, torch.nn.Module)
    out = module(pred, target)
    for name, weight in (("a", 0.5), ("b", 1.0)):
        p, t = match_grids(pred[name]["patch"], target[name]["patch"])
        summary = (1 - F.cosine_similarity(pred[name]["summary"], target[name]["summary"], dim=-1)).mean()
        patch = 0.9 * (1 - F.cosine_similarity(p, t, dim=-1)).mean() + 0.1 * F.smooth_l1_loss(p, t)
        assert torch.equal(out[f"{name}/loss"], summary + weight * patch)
    reference = distill_loss(pred, target, {"a": 0.5})
    assert set(out) == set(reference) and all(torch.equal(out[k], reference[k]) for k in out)


def test_each_weight_and_beta_changes_the_loss_as_configured():
    pred, target = _pair(2)
    cfg = LossConfig(summary_weight=2.0, patch_weight=3.0, patch_cos_weight=0.25, patch_smooth_l1_weight=0.75,
                     smooth_l1_beta=0.5)
    out = cfg.build()(pred, target)
    base = distill_loss(pred, target)
    for name in pred:
        assert torch.equal(out[f"{name}/summary_cos_loss"], base[f"{name}/summary_cos_loss"])
        p, t = match_grids(pred[name]["patch"], target[name]["patch"])
        diff = (p - t).abs()
        beta_half = torch.where(diff < 0.5, 0.5 * diff**2 / 0.5, diff - 0.25).mean()  # smooth-L1, beta 0.5
        torch.testing.assert_close(out[f"{name}/patch_smooth_l1"], beta_half)
        assert not torch.allclose(out[f"{name}/patch_smooth_l1"], base[f"{name}/patch_smooth_l1"])
        expected = 2.0 * base[f"{name}/summary_cos_loss"] + 3.0 * (0.25 * base[f"{name}/patch_cos_loss"] + 0.75 * beta_half)
        torch.testing.assert_close(out[f"{name}/loss"], expected)
    torch.testing.assert_close(out["total"], out["a/loss"] + out["b/loss"])


def test_train_config_carries_the_loss_and_overrides_reach_it():
    cfg = config_io.build(TrainConfig, {"loss": {"patch_cos_weight": 0.5}}, ["loss.smooth_l1_beta=0.2"])
    assert cfg.loss == LossConfig(patch_cos_weight=0.5, smooth_l1_beta=0.2)
    assert cfg.loss.build(cfg.patch_weights()).cfg is cfg.loss
    assert TrainConfig().loss == LossConfig(1.0, 1.0, 0.9, 0.1, 1.0)


def test_bench_uses_the_configured_loss_object():
    bench = (__import__("pathlib").Path(__file__).parents[2] / "bench" / "train.py").read_text()
    assert "cfg.loss.build(" in bench and "distill_loss" not in bench


@pytest.mark.parametrize("key,value", [("summary_weight", -1.0), ("smooth_l1_beta", 0.0),
                                       ("patch_cos_weight", float("nan"))])
def test_bad_loss_values_are_config_errors(key, value):
    from eupe.config import ConfigError
    from eupe.distill.config import validate

    cfg = TrainConfig()
    setattr(cfg.loss, key, value)
    with pytest.raises(ConfigError, match=f"loss.{key}"):
        validate(cfg)
