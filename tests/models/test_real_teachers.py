"""The real offline teachers with their real weights, and the proxy checkpoint format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.models.build import random_backbone
from eupe.models.proxy import PROXY_ARCH, PROXY_FILENAME, ProxyConfig, count_parameters, save_proxy
from eupe.models.teachers import create_teacher, teacher_weights_path
from eupe.models.weights import MissingWeightsError, file_sha256


def _pixels(path, side: int) -> torch.Tensor:
    image = Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)[None]  # [1, 3, H, W]


def _top1(teacher, photos) -> list[int]:
    with torch.no_grad():
        return [int(teacher.backbone(_normalized(teacher, p.path)).argmax(1)) for p in photos]


def _normalized(teacher, path) -> torch.Tensor:
    return (_pixels(path, teacher.spec.resolution) - teacher.mean) / teacher.std


def test_effnet_lite0_real_weights_classify_labelled_photos(labelled_photos):
    teacher = create_teacher("effnet_lite0")
    predictions = _top1(teacher, labelled_photos)
    labels = [p.label for p in labelled_photos]
    correct = sum(p == y for p, y in zip(predictions, labels))
    assert predictions[0] == labels[0] == 243  # a bull mastiff
    assert correct >= 16, f"{correct}/20 correct"  # measured 17/20 with 224-px bilinear resize
    assert teacher.fingerprint == file_sha256(teacher_weights_path("effnet_lite0"))
    assert teacher.fingerprint.startswith("57934424")  # the hash in the file's own name


def test_effnet_random_weights_do_not_classify(labelled_photos):
    teacher = create_teacher("effnet_lite0", test_scale=True)
    predictions = _top1(teacher, labelled_photos)
    assert sum(p == ph.label for p, ph in zip(predictions, labelled_photos)) <= 2


def test_effnet_features_follow_the_contract(labelled_photos):
    teacher = create_teacher("effnet_lite0")
    pixels = _pixels(labelled_photos[0].path, 224)
    with torch.no_grad():
        out = teacher(pixels)
        pooled = teacher.backbone.forward_head(teacher.backbone.forward_features((pixels - teacher.mean) / teacher.std), pre_logits=True)
    assert out["patch"].shape == (1, 7, 7, 1280)
    torch.testing.assert_close(out["summary"], pooled)  # mean of the map == timm's global pool


def test_default_proxy_is_about_1_9b_parameters():
    assert 1.8e9 < count_parameters(ProxyConfig()) < 2.0e9


def test_proxy_checkpoint_round_trip(tmp_path):
    config = ProxyConfig(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, patch_size=16, resolution=128)
    backbone, _ = random_backbone(PROXY_ARCH, config.timm_kwargs(), seed=3)
    save_proxy(backbone, config, tmp_path / PROXY_FILENAME)
    assert teacher_weights_path("proxy") is None and teacher_weights_path("proxy", tmp_path / "run") is None
    (tmp_path / "run").mkdir()
    with pytest.raises(MissingWeightsError, match=f"run has no {PROXY_FILENAME}; pass a Stage-1 run directory"):
        create_teacher("proxy", weights=tmp_path / "run")
    assert teacher_weights_path("proxy", tmp_path / "run") is None
    assert teacher_weights_path("proxy", tmp_path) == tmp_path / PROXY_FILENAME
    teacher = create_teacher("proxy", weights=tmp_path)  # a run directory works, as does the file
    assert teacher.spec.resolution == 128 and teacher.spec.patch_dim == 64
    assert teacher.fingerprint == file_sha256(tmp_path / PROXY_FILENAME)
    pixels = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = backbone.forward_features(pixels.sub(teacher.mean).div(teacher.std))
        out = teacher(pixels)
    torch.testing.assert_close(out["summary"], expected[:, 0])
    torch.testing.assert_close(out["patch"].flatten(1, 2), expected[:, 5:])


def test_proxy_refuses_a_file_that_is_not_a_proxy(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a proxy checkpoint"):
        create_teacher("proxy", weights=tmp_path / "other.safetensors")


def test_student_file_round_trip_and_timm_loads_it_by_name(tmp_path):
    import timm

    from eupe.models.checkpoint import load_student, read_student_metadata, save_student
    from eupe.models.students import create_student

    torch.manual_seed(0)
    student = create_student("vit_t", test_scale=True)
    path = save_student(student, tmp_path / "student.safetensors", test_scale=True, info={"stage": 2})
    assert read_student_metadata(path)["info"] == {"stage": 2}
    loaded = load_student(tmp_path)  # a run directory works too
    pixels = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels)["patch"], student(pixels)["patch"], rtol=0, atol=0)
        by_name = timm.create_model("vit_tiny_patch16_dinov3_qkvb", pretrained=True, num_classes=0,
                                    pretrained_cfg_overlay={"file": str(path)}, embed_dim=64, depth=2, num_heads=2)
        x = (pixels - student.mean) / student.std
        torch.testing.assert_close(by_name.forward_features(x), student.backbone.forward_features(x))
