"""Registry of students: the released EUPE architectures, by the names timm gives them.

Using timm's names keeps a student's state dict interchangeable with the released
``*.eupe_lvd1689m`` weights: pass such a file as ``weights`` to fine-tune from it, or
``weights="eupe"`` to take it from the local Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from eupe.models.spec import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec
from eupe.models.weights import WeightsSource, file_sha256, require
from eupe.registry import Registry

if TYPE_CHECKING:
    from eupe.models.build import Built
    from eupe.models.features import Encoder

STUDENTS: Registry[EncoderSpec] = Registry("student")

RELEASED = "eupe"  # weights="eupe": the released EUPE weights from the local HF cache


def _build_student(spec: EncoderSpec, weights: str | Path | None, test_scale: bool) -> Built:
    """Random init (seeded by the caller's RNG) unless a weights file or "eupe" is given."""
    from eupe.models.build import Built, random_backbone, timm_backbone_from_file

    kwargs = {"num_classes": 0, **spec.timm_kwargs, **(spec.test_kwargs if test_scale else {})}
    if weights is None:
        return Built(*random_backbone(spec.timm_name, kwargs, seed=None), spec)
    path = require(spec.weights, None if weights == RELEASED else weights, spec.name)
    return Built(timm_backbone_from_file(spec.pretrained_id, path, kwargs), file_sha256(path), spec)


def _vit(name: str, timm_name: str, dim: int) -> None:
    STUDENTS.register(name, EncoderSpec(
        name=name, timm_name=timm_name, resolution=256, patch_size=16,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, summary="cls", prefix_tokens="CLS + 4 registers",
        summary_dim=dim, patch_dim=dim,
        weights=WeightsSource(hf_repo=f"timm/{timm_name}.eupe_lvd1689m"),
        description=f"EUPE ViT student ({timm_name}, RoPE, 4 registers)",
        timm_kwargs={"global_pool": "token"}, test_kwargs={"embed_dim": 64, "depth": 2, "num_heads": 2},
        builder=_build_student,
    ))


def _convnext(name: str, timm_name: str, dim: int) -> None:
    STUDENTS.register(name, EncoderSpec(
        name=name, timm_name=timm_name, resolution=256, patch_size=32,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, summary="avg_pool_norm", prefix_tokens="none (CNN)",
        summary_dim=dim, patch_dim=dim,
        weights=WeightsSource(hf_repo=f"timm/{timm_name}.eupe_lvd1689m"),
        description=f"EUPE ConvNeXt student ({timm_name}); summary = global average pool of the stride-32 map, "
                    "then the final LayerNorm, which DINOv3's ConvNeXt also applies to every patch token",
        test_kwargs={"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)},
        builder=_build_student,
    ))


_vit("vit_t", "vit_tiny_patch16_dinov3_qkvb", 192)
_vit("vit_s", "vit_small_patch16_dinov3_qkvb", 384)
_vit("vit_b", "vit_base_patch16_dinov3_qkvb", 768)
_convnext("convnext_t", "convnext_tiny", 768)
_convnext("convnext_s", "convnext_small", 768)
_convnext("convnext_b", "convnext_base", 1024)


def list_students() -> list[str]:
    """Names of all registered students."""
    return STUDENTS.names()


def student_spec(name: str) -> EncoderSpec:
    """The spec of a registered student (UnknownNameError lists the valid names)."""
    return STUDENTS.get(name)


def create_student(name: str, weights: str | Path | None = None, test_scale: bool = False) -> Encoder:
    """A student ``Encoder`` (train mode is the caller's choice; returned in eval mode)."""
    from eupe.models.build import build_encoder

    return build_encoder(student_spec(name), weights, test_scale)
