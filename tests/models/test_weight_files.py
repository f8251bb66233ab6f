"""Weight files that must be refused with a clear message: crafted student metadata, pickles."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from eupe.models.checkpoint import ARCH_KWARGS, load_student, read_student_metadata, save_student
from eupe.models.proxy import ProxyConfig, load_proxy, save_proxy
from eupe.models.students import create_student
from eupe.models.teachers import create_teacher
from eupe.models.weights import WeightsFileError


class Opaque:
    """A pickled Python object: what weights_only=True refuses."""


@pytest.fixture(scope="module")
def student_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    return save_student(create_student("vit_t", test_scale=True), path, test_scale=True)


def _rewrite(source, target, **changes) -> str:
    """A copy of a student file with some metadata entries replaced (what an attacker could craft)."""
    with safe_open(str(source), framework="pt") as handle:
        meta = {**handle.metadata(), **changes}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(target), metadata=meta)
    return str(target)


def test_saved_student_metadata_uses_only_architecture_keywords(student_file):
    kwargs = read_student_metadata(student_file)["timm_kwargs"]
    assert set(kwargs) <= ARCH_KWARGS and kwargs["embed_dim"] == 64 and kwargs["num_classes"] == 0


def test_a_student_file_naming_checkpoint_path_is_refused(student_file, tmp_path):
    secret = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(secret))
    kwargs = {**read_student_metadata(student_file)["timm_kwargs"], "checkpoint_path": str(secret)}
    crafted = _rewrite(student_file, tmp_path / "crafted.safetensors", timm_kwargs=json.dumps(kwargs))
    with pytest.raises(WeightsFileError, match=r"refusing timm_kwargs \['checkpoint_path'\]"):
        load_student(crafted)
    with pytest.raises(WeightsFileError, match="checkpoint_path"):
        read_student_metadata(crafted)


def test_a_student_file_naming_another_architecture_or_odd_values_is_refused(student_file, tmp_path):
    other = _rewrite(student_file, tmp_path / "a.safetensors", timm_name="resnet50")
    with pytest.raises(WeightsFileError, match="'resnet50', but student 'vit_t' is 'vit_tiny_patch16_dinov3_qkvb'"):
        load_student(other)
    kwargs = {**read_student_metadata(student_file)["timm_kwargs"], "img_size": {"file": "/etc/passwd"}}
    odd = _rewrite(student_file, tmp_path / "b.safetensors", timm_kwargs=json.dumps(kwargs))
    with pytest.raises(WeightsFileError, match="img_size"):
        load_student(odd)
    broken = _rewrite(student_file, tmp_path / "c.safetensors", timm_kwargs="{not json")
    with pytest.raises(WeightsFileError, match="malformed student metadata"):
        load_student(broken)


def test_a_pickled_checkpoint_is_not_a_plain_tensor_checkpoint(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(2), "args": Opaque()}, path)  # a pickled object
    for make in (lambda: create_teacher("effnet_lite0", weights=path),  # eupe's own torch.load
                 lambda: create_student("vit_t", weights=path, test_scale=True)):  # through timm's loader
        with pytest.raises(WeightsFileError) as err:
            make()
        assert "is not a plain tensor checkpoint" in str(err.value)
        assert "weights_only=False" not in str(err.value).replace("weights_only=True", "")


def test_a_proxy_file_with_a_bad_config_is_refused(tmp_path):
    from eupe.models.build import random_backbone
    from eupe.models.proxy import PROXY_ARCH

    config = ProxyConfig.test_scale()
    path = save_proxy(random_backbone(PROXY_ARCH, config.timm_kwargs())[0], config, tmp_path / "proxy.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(path), metadata={"format": "eupe-proxy-v1", "config": json.dumps({"checkpoint_path": "x"})})
    with pytest.raises(WeightsFileError, match="malformed proxy config"):
        load_proxy(path)
