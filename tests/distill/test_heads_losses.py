"""Adapter heads, DistillModel and the distillation losses (CPU, test-scale student)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eupe.distill.heads import AdapterHead, DistillModel
from eupe.distill.losses import cosine_loss, distill_loss, match_grids
from eupe.models.students import create_student

TEACHERS = {"dino": 48, "siglip": 80}


@pytest.fixture
def model() -> DistillModel:
    torch.manual_seed(0)
    return DistillModel(create_student("vit_t", test_scale=True), TEACHERS, hidden=32)


def feats(summary: torch.Tensor, patch: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"summary": summary, "patch": patch}


def random_feats(batch: int, h: int, w: int, dim: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    return feats(torch.randn(batch, dim, dtype=dtype), torch.randn(batch, h, w, dim, dtype=dtype))


# --- AdapterHead -------------------------------------------------------------------------

def test_adapter_head_structure_and_shape():
    head = AdapterHead(16, 24, 8)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.GELU, nn.Linear]
    assert head[0].bias is None and head[3].bias is None
    assert (head[0].in_features, head[0].out_features) == (16, 24)
    assert head[1].normalized_shape == (24,)
    assert (head[3].in_features, head[3].out_features) == (24, 8)
    x = torch.randn(2, 3, 5, 16)
    out = head(x)
    assert out.shape == (2, 3, 5, 8)
    # acts per token: the same as flattening the grid
    torch.testing.assert_close(out.reshape(-1, 8), head(x.reshape(-1, 16)))


def test_adapter_head_computes_the_composition():
    torch.manual_seed(1)
    head = AdapterHead(4, 6, 3)
    x = torch.randn(5, 4)
    hidden = F.layer_norm(x @ head[0].weight.T, (6,), head[1].weight, head[1].bias)
    expected = F.gelu(hidden) @ head[3].weight.T
    torch.testing.assert_close(head(x), expected)


# --- DistillModel ------------------------------------------------------------------------

def test_distill_model_outputs_per_teacher(model):
    pixels = torch.rand(2, 3, 32, 48)
    out = model(pixels)
    assert list(out) == ["dino", "siglip"] == model.teachers
    raw = model.student_features(pixels)
    assert raw["summary"].shape == (2, 64) and raw["patch"].shape == (2, 2, 3, 64)
    for name, dim in TEACHERS.items():
        assert out[name]["summary"].shape == (2, dim)
        assert out[name]["patch"].shape == (2, 2, 3, dim)  # the student's grid
        torch.testing.assert_close(out[name]["summary"], model.heads[name]["summary"](raw["summary"]))
        torch.testing.assert_close(out[name]["patch"], model.heads[name]["patch"](raw["patch"]))
    # the heads are separate modules with their own weights
    assert model.heads["dino"]["summary"] is not model.heads["dino"]["patch"]


def test_distill_model_backward_reaches_every_parameter(model):
    pixels = torch.rand(2, 3, 32, 32)
    targets = {name: random_feats(2, 3, 3, dim) for name, dim in TEACHERS.items()}
    distill_loss(model(pixels), targets)["total"].backward()
    named = dict(model.named_parameters())
    assert any(n.startswith("student.") for n in named) and any(n.startswith("heads.") for n in named)
    no_grad = [n for n, p in named.items() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []


def test_distill_model_rejects_bad_teachers():
    student = create_student("vit_t", test_scale=True)
    with pytest.raises(ValueError):
        DistillModel(student, {}, hidden=8)
    with pytest.raises(ValueError, match="'a.b'"):
        DistillModel(student, {"a.b": 8}, hidden=8)


# --- match_grids -------------------------------------------------------------------------

def bicubic(patch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    chw = patch.permute(0, 3, 1, 2)
    return F.interpolate(chw, size=size, mode="bicubic", align_corners=False).permute(0, 2, 3, 1)


@pytest.mark.parametrize("small_first", [True, False])
def test_match_grids_upsamples_the_smaller_side(small_first):
    torch.manual_seed(2)
    small, large = torch.randn(2, 2, 3, 5), torch.randn(2, 4, 6, 5)
    a, b = (small, large) if small_first else (large, small)
    out_a, out_b = match_grids(a, b)
    assert out_a.shape == out_b.shape == (2, 4, 6, 5)
    up, kept = (out_a, out_b) if small_first else (out_b, out_a)
    assert kept is large
    torch.testing.assert_close(up, bicubic(small, (4, 6)))


def test_match_grids_known_values():
    # a 1x2 grid [0, 1] -> 1x4, Keys kernel (A = -0.75), border clamping, half-pixel centres:
    # out[0] samples x = -0.25 -> only the weight of source 1 (distance 1.25) hits a 1: -0.10546875;
    # out[1] samples x = 0.25 -> weights at distances 0.75 and 1.75: 0.26171875 - 0.03515625
    patch = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1)
    up, _ = match_grids(patch, torch.zeros(1, 1, 4, 1))
    torch.testing.assert_close(up.flatten(), torch.tensor([-0.10546875, 0.2265625, 0.7734375, 1.10546875]))
    # a constant grid stays constant when upsampled
    up, _ = match_grids(torch.full((1, 1, 1, 3), 2.5), torch.zeros(1, 3, 3, 3))
    torch.testing.assert_close(up, torch.full((1, 3, 3, 3), 2.5))


def test_match_grids_identity_and_non_nested_grids():
    a, b = torch.randn(1, 3, 3, 2), torch.randn(1, 3, 3, 2)
    out_a, out_b = match_grids(a, b)
    assert out_a is a and out_b is b
    # neither grid contains the other: both go up to (max h, max w), nothing is downsampled
    tall, wide = torch.randn(1, 4, 2, 2), torch.randn(1, 2, 4, 2)
    out_t, out_w = match_grids(tall, wide)
    torch.testing.assert_close(out_t, bicubic(tall, (4, 4)))
    torch.testing.assert_close(out_w, bicubic(wide, (4, 4)))
    with pytest.raises(ValueError):
        match_grids(torch.randn(2, 4), torch.randn(2, 4))


# --- cosine_loss -------------------------------------------------------------------------

def test_cosine_loss_reference_values():
    torch.manual_seed(3)
    x = torch.randn(4, 3, 3, 8)
    assert cosine_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_loss(x, -x).item() == pytest.approx(2.0, abs=1e-6)
    e = torch.eye(4)
    assert cosine_loss(e[:2], e[2:]).item() == pytest.approx(1.0, abs=1e-6)
    # mean over vectors: one identical pair (0) and one opposite pair (2) -> 1
    assert cosine_loss(e[:2], torch.stack([e[0], -e[1]])).item() == pytest.approx(1.0, abs=1e-6)
    y = torch.randn(4, 3, 3, 8)
    scales = torch.rand(4, 3, 3, 1) * 10 + 0.1
    assert cosine_loss(x * scales, y * 7.0).item() == pytest.approx(cosine_loss(x, y).item(), abs=1e-5)


# --- distill_loss ------------------------------------------------------------------------

def smooth_l1(diff: torch.Tensor) -> torch.Tensor:
    a = diff.abs()
    return torch.where(a < 1, 0.5 * a**2, a - 0.5).mean()


def test_distill_loss_matches_hand_computation():
    # student: 1x1 grid, teacher: 2x2 grid -> the student's single token is replicated 4x
    pred = {"t": feats(torch.tensor([[1.0, 0.0]]), torch.tensor([[[[3.0, 4.0]]]]))}
    target_patch = torch.tensor([[[[3.0, 4.0], [4.0, -3.0]], [[0.0, 2.0], [6.0, 8.0]]]])
    target = {"t": feats(torch.tensor([[1.0, 1.0]]), target_patch)}
    out = distill_loss(pred, target)

    summary_cos = 1 - 1 / math.sqrt(2)
    # cos of (3, 4) with each target token: 1, 0, 0.8, 1 -> mean (1 - cos) = (0 + 1 + 0.2 + 0) / 4
    patch_cos = 1.2 / 4
    # diffs (0, 0), (-1, 7), (3, 2), (-3, -4) -> smooth L1 0, 0, 0.5, 6.5, 2.5, 1.5, 2.5, 3.5
    patch_l1 = (0 + 0 + 0.5 + 6.5 + 2.5 + 1.5 + 2.5 + 3.5) / 8
    diff = pred["t"]["patch"].expand(1, 2, 2, 2) - target_patch
    assert smooth_l1(diff).item() == pytest.approx(patch_l1)

    assert set(out) == {"t/summary_cos_loss", "t/patch_cos_loss", "t/patch_smooth_l1", "t/loss", "total"}
    assert out["t/summary_cos_loss"].item() == pytest.approx(summary_cos, abs=1e-6)
    assert out["t/patch_cos_loss"].item() == pytest.approx(patch_cos, abs=1e-6)
    assert out["t/patch_smooth_l1"].item() == pytest.approx(patch_l1, abs=1e-6)
    loss = summary_cos + 0.9 * patch_cos + 0.1 * patch_l1
    assert out["t/loss"].item() == pytest.approx(loss, abs=1e-6)
    assert out["total"].item() == pytest.approx(loss, abs=1e-6)


def test_distill_loss_random_matches_reference_and_total_is_sum():
    torch.manual_seed(4)
    pred = {"a": random_feats(2, 2, 2, 6), "b": random_feats(2, 2, 2, 10)}
    target = {"a": random_feats(2, 4, 4, 6), "b": random_feats(2, 2, 2, 10)}
    out = distill_loss(pred, target)
    for name in pred:
        p, t = match_grids(pred[name]["patch"], target[name]["patch"])
        expected = (
            (1 - F.cosine_similarity(pred[name]["summary"], target[name]["summary"], dim=-1)).mean()
            + 0.9 * (1 - F.cosine_similarity(p, t, dim=-1)).mean()
            + 0.1 * smooth_l1(p - t)
        )
        torch.testing.assert_close(out[f"{name}/loss"], expected)
    torch.testing.assert_close(out["total"], out["a/loss"] + out["b/loss"])


def test_patch_weight_scales_only_the_patch_term():
    torch.manual_seed(5)
    pred = {"a": random_feats(2, 2, 2, 6), "b": random_feats(2, 3, 3, 4)}
    target = {"a": random_feats(2, 3, 3, 6), "b": random_feats(2, 3, 3, 4)}
    base = distill_loss(pred, target)
    weighted = distill_loss(pred, target, patch_weights={"a": 0.25})
    for term in ("summary_cos_loss", "patch_cos_loss", "patch_smooth_l1"):
        torch.testing.assert_close(weighted[f"a/{term}"], base[f"a/{term}"])
    patch = 0.9 * base["a/patch_cos_loss"] + 0.1 * base["a/patch_smooth_l1"]
    torch.testing.assert_close(weighted["a/loss"], base["a/summary_cos_loss"] + 0.25 * patch)
    torch.testing.assert_close(weighted["b/loss"], base["b/loss"])  # default weight 1
    torch.testing.assert_close(weighted["total"], weighted["a/loss"] + weighted["b/loss"])
    zero = distill_loss(pred, target, patch_weights={"a": 0.0, "b": 0.0})
    torch.testing.assert_close(zero["total"], base["a/summary_cos_loss"] + base["b/summary_cos_loss"])


def test_distill_loss_rejects_mismatched_teachers():
    pred = {"a": random_feats(1, 2, 2, 4), "b": random_feats(1, 2, 2, 4)}
    target = {"a": random_feats(1, 2, 2, 4), "c": random_feats(1, 2, 2, 4)}
    with pytest.raises(ValueError, match=r"\['c'\].*\['b'\]"):
        distill_loss(pred, target)
    with pytest.raises(ValueError, match="unknown teachers"):
        distill_loss(pred, {"a": target["a"], "b": pred["b"]}, patch_weights={"z": 2.0})
    with pytest.raises(ValueError):
        distill_loss({}, {})


def test_bf16_inputs_give_float32_losses():
    torch.manual_seed(6)
    pred = {"a": random_feats(2, 2, 2, 8, torch.bfloat16)}
    target = {"a": random_feats(2, 4, 4, 8, torch.bfloat16)}
    out = distill_loss(pred, target)
    assert all(v.dtype == torch.float32 for v in out.values())
    as_float = {k: {n: v.float() for n, v in f.items()} for k, f in pred.items()}
    target_float = {k: {n: v.float() for n, v in f.items()} for k, f in target.items()}
    torch.testing.assert_close(out["total"], distill_loss(as_float, target_float)["total"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = distill_loss(as_float, target_float)
    assert all(v.dtype == torch.float32 for v in auto.values())
    torch.testing.assert_close(auto["total"], out["total"])


# --- training sanity ---------------------------------------------------------------------

def test_a_few_steps_reduce_the_loss(model):
    torch.manual_seed(7)
    pixels = torch.rand(4, 3, 32, 32)
    targets = {"dino": random_feats(4, 4, 4, 48), "siglip": random_feats(4, 2, 2, 80)}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(12):
        total = distill_loss(model(pixels), targets)["total"]
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert losses[-1] < 0.9 * losses[0]
