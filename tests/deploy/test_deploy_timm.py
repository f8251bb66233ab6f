"""timm safetensors export: the file loads by timm name (timm's own loader) and reproduces the student."""

from __future__ import annotations

import pytest
import timm
import torch
from deploy_helpers import TINY_KWARGS, tiny_student
from safetensors.torch import load_file

from eupe.deploy.timm_export import export_safetensors, load_timm, timm_name_of
from eupe.models.features import Encoder


@pytest.mark.parametrize("name", ["vit_t", "convnext_t"])
def test_safetensors_load_by_timm_name_gives_identical_outputs(tmp_path, name):
    student = tiny_student(name)
    path = export_safetensors(student, tmp_path, test_scale=True, info={"stage": 2})
    assert path == tmp_path / "model.safetensors" and timm_name_of(path) == student.spec.timm_name
    model = timm.create_model(student.spec.timm_name, pretrained=True, num_classes=0,
                              pretrained_cfg_overlay={"file": str(path)}, **TINY_KWARGS[name]).eval()
    assert set(load_file(str(path))) == set(model.state_dict())  # backbone only: nothing extra, nothing missing
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x = (pixels - student.mean) / student.std
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), student.backbone.forward_features(x))
        rebuilt = Encoder(student.spec, model, "timm").eval()
        assert torch.equal(rebuilt(pixels)["summary"], student(pixels)["summary"])
        assert torch.equal(rebuilt(pixels)["patch"], student(pixels)["patch"])


def test_load_timm_uses_the_recorded_kwargs(tmp_path, tiny_vit):
    path = export_safetensors(tiny_vit, tmp_path, test_scale=True)
    model = load_timm(path)
    assert model.embed_dim == 64 and len(model.blocks) == 2 and not model.training
