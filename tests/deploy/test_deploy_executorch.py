"""ExecuTorch export through XNNPACK, run by the real ExecuTorch runtime: fp32 parity and int8 cosine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deploy_helpers import tiny_student

from eupe.deploy.executorch_export import export_pte, run_pte
from eupe.deploy.parity import FP32, INT8, check_pixels, eager_outputs, parity
from eupe.deploy.traceable import deployable

FP32_TOLERANCE = FP32.bound


def pte_parity(student, path, pixels):
    return parity(student, lambda x: run_pte(path, x), pixels)


def test_deployable_copy_has_the_same_outputs_and_leaves_the_encoder_alone(tiny_vit):
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    wrapped = deployable(tiny_vit)
    assert tiny_vit.backbone.blocks[0].attn.q_bias is not None  # the original is untouched
    assert wrapped.encoder.backbone.blocks[0].attn.q_bias is None
    with torch.no_grad():
        summary, patch = wrapped(pixels)
        out = tiny_vit(pixels)
    torch.testing.assert_close(summary, out["summary"], rtol=0, atol=1e-5)
    torch.testing.assert_close(patch, out["patch"], rtol=0, atol=1e-5)


def test_fp32_vit_pte_matches_eager(tiny_vit, vit_pte):
    pixels = check_pixels(64)
    summary, patch = run_pte(vit_pte, pixels)
    ref_summary, ref_patch = eager_outputs(tiny_vit, pixels)
    assert summary.shape == ref_summary.shape == (3, 64) and patch.shape == ref_patch.shape == (3, 4, 4, 64)
    result = pte_parity(tiny_vit, vit_pte, pixels)
    assert result["summary_max_abs_diff"] <= FP32_TOLERANCE and result["patch_max_abs_diff"] <= FP32_TOLERANCE
    assert result["patch_cosine_min"] > 0.99999 and FP32.passes(result)
    np.testing.assert_allclose(patch, ref_patch, atol=FP32_TOLERANCE, rtol=0)


def test_fp32_convnext_pte_matches_eager(tmp_path):
    student = tiny_student("convnext_t")
    path = export_pte(student, 64, tmp_path / "convnext.pte")
    result = pte_parity(student, path, check_pixels(64))
    assert result["summary_max_abs_diff"] <= FP32_TOLERANCE and result["patch_max_abs_diff"] <= FP32_TOLERANCE
    assert result["summary_cosine_min"] > 0.99999 and result["patch_cosine_min"] > 0.99999


def test_unknown_quantization_and_bad_resolution_are_refused(tiny_vit, tmp_path):
    with pytest.raises(ValueError, match="quantize"):
        export_pte(tiny_vit, 64, tmp_path / "x.pte", quantize="int4")
    with pytest.raises(ValueError, match="patch size"):
        export_pte(tiny_vit, 70, tmp_path / "x.pte")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_t", "convnext_t"])
def test_int8_pte_keeps_cosine_above_099(tmp_path, name):
    student = tiny_student(name)
    with torch.no_grad():  # residual branches at full strength, as after training (init layer scale is ~1e-5)
        for key, param in student.backbone.named_parameters():
            if key.endswith(("gamma", "gamma_1", "gamma_2")):
                param.fill_(1.0)
    path = export_pte(student, 64, tmp_path / f"{name}_int8.pte", quantize="int8")
    result = pte_parity(student, path, check_pixels(64))
    assert result["summary_cosine_mean"] >= 0.99 and result["patch_cosine_mean"] >= 0.99
    assert result["patch_cosine_min"] >= 0.98 and INT8.passes(result)
    assert result["patch_max_abs_diff"] > 1e-4  # it really is quantized
