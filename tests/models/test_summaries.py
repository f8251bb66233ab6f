"""What each summary and patch token *is*: compared with the models' own reference outputs.

PE-core's summary is its text-aligned image embedding (timm's full model: attention pool, then
the CLIP projection); SigLIP2's is its MAP-head output, which is already its embedding; EUPE's
ConvNeXt normalizes the pooled token and every patch token with one final LayerNorm
(dinov3/models/convnext.py ``forward_features_list``), which timm loads as ``head.norm``.
"""

from __future__ import annotations

import re

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from eupe.models.students import create_student
from eupe.models.teachers import create_teacher, teacher_spec


def _pixels(side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _full_timm_model(encoder) -> torch.nn.Module:
    """The same timm class and tiny shape with the pretrained cfg's head (nothing dropped),
    holding the encoder's weights: strict loading fails if the encoder lost the projection."""
    spec = encoder.spec
    full = timm.create_model(spec.timm_name, pretrained=False, **{**spec.timm_kwargs, **spec.test_kwargs})
    full.load_state_dict(encoder.backbone.state_dict(), strict=True)
    return full.eval()


def test_pecore_summary_is_the_projected_text_aligned_embedding():
    teacher = create_teacher("pecore_g", test_scale=True)
    full = _full_timm_model(teacher)
    assert timm.models.get_pretrained_cfg(teacher.spec.timm_name).num_classes == 1280  # CLIP projection
    assert teacher.spec.summary_dim == teacher.summary_dim == 1280 and teacher.spec.patch_dim == 1536
    pixels = _pixels(56)
    with torch.no_grad():
        out = teacher(pixels)
        expected = full((pixels - 0.5) / 0.5)  # timm's image embedding of the whole model
        pooled = full.forward_head(full.forward_features((pixels - 0.5) / 0.5), pre_logits=True)
    assert out["summary"].shape == (2, 1280) and out["patch"].shape == (2, 4, 4, 64)
    torch.testing.assert_close(out["summary"], expected)
    assert pooled.shape[-1] == 64  # the pre-projection pool is a different vector


def test_siglip2_summary_is_the_map_head_output_which_is_its_embedding():
    teacher = create_teacher("siglip2_g", test_scale=True)
    assert timm.models.get_pretrained_cfg(teacher.spec.timm_name).num_classes == 0  # no projection exists
    full = _full_timm_model(teacher)
    assert isinstance(full.head, torch.nn.Identity) and full.attn_pool is not None
    pixels = _pixels(64)
    with torch.no_grad():
        out = teacher(pixels)
        expected = full((pixels - 0.5) / 0.5)
    torch.testing.assert_close(out["summary"], expected)
    spec = teacher_spec("siglip2_g")
    assert teacher.summary_dim == teacher.dim and spec.summary_dim == spec.patch_dim == 1536


def _to_dinov3_names(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt keys -> the DINOv3/EUPE checkpoint's keys (the inverse of timm's filter)."""
    out = {}
    for key, value in timm_state.items():
        key = key.replace("head.norm.", "norm.").replace("stem.", "downsample_layers.0.")
        key = re.sub(r"stages\.([0-9]+)\.downsample\.([0-9]+)", r"downsample_layers.\1.\2", key)
        key = re.sub(r"stages\.([0-9]+)\.blocks\.([0-9]+)", r"stages.\1.\2", key)
        out[key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")] = value
    return out


def test_convnext_tokens_match_the_dinov3_forward_of_a_released_format_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = create_student("convnext_t", test_scale=True)
    state = _to_dinov3_names(source.backbone.state_dict())
    width = state["norm.weight"].shape[0]
    state["norm.weight"] = torch.rand(width) + 0.5  # a trained norm, not the identity init
    state["norm.bias"] = torch.randn(width)
    state["projectors.0.weight"] = torch.randn(4, width)  # EUPE's extra keys are discarded by timm
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    student = create_student("convnext_t", weights=path, test_scale=True)
    pixels = _pixels(96)
    with torch.no_grad():
        out = student(pixels)
        x = student.backbone.forward_features((pixels - student.mean) / student.std)  # last stage [B, C, h, w]
    tokens = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
    # dinov3 ConvNeXt.forward_features_list: norm(cat([mean pool, patch tokens]))
    normed = F.layer_norm(torch.cat([x.mean((-2, -1))[:, None], tokens], 1), (width,),
                          state["norm.weight"], state["norm.bias"], 1e-6)
    torch.testing.assert_close(out["summary"], normed[:, 0])
    torch.testing.assert_close(out["patch"].flatten(1, 2), normed[:, 1:])
    assert not torch.allclose(out["patch"].flatten(1, 2), tokens, atol=1e-2)  # the norm matters


@pytest.mark.parametrize("name", ["convnext_t", "convnext_s", "convnext_b"])
def test_every_convnext_student_normalizes_its_patch_tokens(name):
    student = create_student(name, test_scale=True)
    with torch.no_grad():
        out = student(_pixels(64))
    per_token = out["patch"].flatten(1, 2)  # [B, h*w, C]; with the init norm (w=1, b=0): mean 0, var 1
    torch.testing.assert_close(per_token.mean(-1), torch.zeros(per_token.shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_token.var(-1, unbiased=False), torch.ones(per_token.shape[:2]), atol=1e-3, rtol=0)
