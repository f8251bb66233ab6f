"""Dense metrics, sliding window and keypoint matching against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from eupe.eval.dense.heads import bins_to_depth, depth_bins
from eupe.eval.dense.inference import match_keypoints, slide_inference, window_starts
from eupe.eval.dense.metrics import (NYU_EIGEN_CROP, confusion, depth_errors, eigen_mask, iou_per_class,
                                     mean_depth_errors, mean_iou, pck, sig_loss)


def test_miou_drops_the_ignore_label_and_absent_classes():
    gt = torch.tensor([[0, 0, 1], [1, 255, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 0]])  # the ignored pixel's prediction does not count
    conf = confusion(pred, gt, num_classes=4)
    assert conf.sum() == 5
    iou = iou_per_class(conf)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert math.isnan(iou[3])  # class 3 is in neither map: left out of the mean
    assert mean_iou(conf) == pytest.approx(1 / 3)
    assert mean_iou(conf, slice(1, None)) == pytest.approx(1 / 3)  # (2/3 + 0) / 2


def test_confusion_accumulates_and_rejects_out_of_range_labels():
    a = confusion(torch.tensor([0, 1]), torch.tensor([0, 1]), 2)
    b = confusion(torch.tensor([1, 1]), torch.tensor([0, 1]), 2)
    assert mean_iou(a + b) == pytest.approx((1 / 2 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="ignore label"):
        confusion(torch.tensor([0]), torch.tensor([7]), 2)


def test_rmse_counts_only_valid_pixels_inside_the_eigen_crop():
    gt = torch.full((480, 640), 2.0)
    pred = torch.full((480, 640), 9.0)  # wrong everywhere outside the crop
    top, bottom, left, right = NYU_EIGEN_CROP
    pred[top:bottom, left:right] = 2.0
    pred[100:102, 100:105] = 3.0  # 10 pixels off by 1 m inside the crop
    gt[200, 200] = 0.0  # invalid ground truth: ignored whatever the prediction
    mask = eigen_mask(480, 640)
    assert int(mask.sum()) == 426 * 560
    errors = depth_errors(pred, gt, mask=mask)
    assert errors["rmse"] == pytest.approx(math.sqrt(10 / (426 * 560 - 1)))
    assert errors["delta1"] == pytest.approx(1 - 10 / (426 * 560 - 1))
    assert depth_errors(pred, gt)["rmse"] > 3  # without the crop the border counts


def test_rmse_is_per_image_then_averaged_and_prediction_clamped():
    gt = torch.full((4, 4), 1.0)
    first = depth_errors(torch.full((4, 4), 2.0), gt)  # rmse 1
    second = depth_errors(torch.full((4, 4), 50.0), gt, max_depth=10.0)  # clamped to 10: rmse 9
    assert (first["rmse"], second["rmse"]) == pytest.approx((1.0, 9.0))
    assert mean_depth_errors([first, second])["rmse"] == pytest.approx(5.0)  # not sqrt((1 + 81) / 2)
    assert first["abs_rel"] == pytest.approx(1.0)


def test_sig_loss_is_scale_invariant_in_its_variance_term():
    gt = torch.rand(2, 8, 8) * 4 + 5
    valid = torch.ones_like(gt, dtype=torch.bool)
    g = torch.log(2 * gt + 1e-3) - torch.log(gt + 1e-3)  # ~log 2 everywhere
    loss = sig_loss(2 * gt, gt, valid)
    assert float(loss) == pytest.approx(math.sqrt(float(g.var()) + 0.15 * float(g.mean()) ** 2))
    assert float(loss) == pytest.approx(math.sqrt(0.15) * math.log(2), rel=1e-3)
    assert float(sig_loss(2 * gt, gt, valid, warm_up=True)) == pytest.approx(math.sqrt(0.15) * float(g.mean()))
    assert float(sig_loss(gt, gt, valid)) == pytest.approx(0.0, abs=1e-6)


def test_pck_threshold_is_inclusive_and_scaled():
    gt = torch.zeros(3, 2)
    pred = torch.tensor([[0.5, 0.0], [0.0, 1.0], [1.2, 0.9]])  # errors 0.5, 1.0, 1.5
    assert pck(pred, gt, scale=10.0, alpha=0.1) == pytest.approx(2 / 3)
    assert pck(pred, gt, scale=torch.tensor([10.0, 5.0, 20.0]), alpha=0.1) == pytest.approx(2 / 3)  # 1.0 > 0.5 fails
    assert pck(pred, gt, scale=20.0, alpha=0.1) == pytest.approx(1.0)


def test_bins_to_depth_follows_the_linear_normalization():
    bins = depth_bins(4, 1.0, 4.0)
    logits = torch.tensor([-5.0, 0.0, 0.9, -1.0]).view(1, 4, 1, 1)  # weights 0.1, 0.1, 1.0, 0.1
    assert float(bins_to_depth(logits, bins)) == pytest.approx((0.1 * 1 + 0.1 * 2 + 1.0 * 3 + 0.1 * 4) / 1.3)


def test_window_starts_match_the_ade20k_slide():
    assert window_starts(512, 512, 341) == [0]
    assert window_starts(683, 512, 341) == [0, 171]
    assert window_starts(5, 4, 2) == [0, 1]


def test_slide_inference_averages_overlapping_windows():
    image = torch.arange(35.0).view(1, 5, 7).expand(3, -1, -1)
    calls = []

    def logits_fn(window):
        calls.append(tuple(window.shape))
        return torch.cat([window[:, :1], torch.full_like(window[:, :1], float(len(calls)))], dim=1)

    out = slide_inference(image, crop=4, stride=2, logits_fn=logits_fn)
    assert calls == [(1, 3, 4, 4)] * 6  # rows [0, 1] x cols [0, 2, 3]
    assert torch.allclose(out[0], image[0])  # every window agrees on the pixel: the average is exact
    # window ids: 1 (0,0) 2 (0,2) 3 (0,3) 4 (1,0) 5 (1,2) 6 (1,3); pixel (0, 0) only in window 1,
    # pixel (2, 3) in all six, pixel (4, 6) only in window 6
    assert out[1, 0, 0] == 1 and out[1, 2, 3] == pytest.approx(3.5) and out[1, 4, 6] == 6


def _one_hot_features(h: int, w: int) -> torch.Tensor:
    return torch.eye(h * w).view(h * w, h, w)  # patch k carries e_k: [D = h*w, h, w]


def test_matching_takes_the_argmax_patch_centre():
    feats = _one_hot_features(4, 4)
    src_xy = torch.tensor([[4.0, 4.0], [20.0, 12.0], [28.0, 28.0]])  # patch centres of a 32x32 image
    same = match_keypoints(feats, feats, src_xy, (32, 32), (32, 32))
    assert torch.allclose(same, src_xy)
    bigger = match_keypoints(feats, feats, src_xy, (32, 32), (64, 64))  # same patches, larger target
    assert torch.allclose(bigger, 2 * src_xy)
    shifted = match_keypoints(feats, feats.roll(1, dims=2), src_xy[:2], (32, 32), (32, 32))
    assert torch.allclose(shifted, src_xy[:2] + torch.tensor([8.0, 0.0]))  # one patch to the right
