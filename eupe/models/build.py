"""Building encoders from specs: timm architectures, local weights, test-scale variants.

A spec's backbone comes from ``timm.create_model`` with the spec's kwargs. Real weights
are loaded from a local file through timm's own pretrained path (so checkpoint filters
apply exactly as for hub downloads), under the timm name tagged with the weights' pretrained
cfg (``spec.pretrained_id``); test-scale variants are the same timm classes with
tiny width/depth and a fixed-seed random init, so their fingerprint is reproducible.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import timm
import torch
from torch import nn

from eupe.models.features import Encoder
from eupe.models.spec import Built, EncoderSpec
from eupe.models.weights import NOT_PLAIN, WeightsFileError, file_sha256, require, state_dict_sha256

TEST_SEED = 0


def random_backbone(timm_name: str, kwargs: dict, seed: int | None = TEST_SEED) -> tuple[nn.Module, str]:
    """A randomly initialised timm model; seeded (reproducible fingerprint) unless seed is None."""
    if seed is None:
        model = timm.create_model(timm_name, pretrained=False, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(timm_name, pretrained=False, **kwargs)
    return model, "random:" + state_dict_sha256(model)


def timm_backbone_from_file(timm_name: str, path: Path, kwargs: dict) -> nn.Module:
    """A timm model with weights from a local file (safetensors or torch), via timm's loader."""
    try:
        return timm.create_model(
            timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
        )
    except (pickle.UnpicklingError, RuntimeError) as err:  # timm's torch.load runs with weights_only=True
        if isinstance(err, pickle.UnpicklingError) or isinstance(err.__cause__, pickle.UnpicklingError):
            raise WeightsFileError(f"{path} {NOT_PLAIN}") from None
        raise


def head_kwargs(spec: EncoderSpec) -> dict:
    """Drop timm's classifier, except where the summary is the model's projected embedding
    (then timm's pretrained cfg gives the projection, e.g. PE-core's 1536 -> 1280)."""
    return {} if spec.summary == "attn_pool_proj" else {"num_classes": 0}


def build_timm(spec: EncoderSpec, weights: str | Path | None, test_scale: bool) -> Built:
    """Default builder: timm architecture, weights from a local file or tiny random init."""
    kwargs = {**head_kwargs(spec), **spec.timm_kwargs}
    if test_scale:
        return Built(*random_backbone(spec.timm_name, {**kwargs, **spec.test_kwargs}), spec)
    path = require(spec.weights, weights, spec.name)
    return Built(timm_backbone_from_file(spec.pretrained_id, path, kwargs), file_sha256(path), spec)


def model_patch_size(backbone: nn.Module) -> int:
    """The built model's patch size (ViT) or the stride of its last feature map (CNN)."""
    embed = getattr(backbone, "patch_embed", None)
    if embed is not None:
        return int(embed.patch_size[0])
    return int(backbone.feature_info[-1]["reduction"])


def build_encoder(spec: EncoderSpec, weights: str | Path | None = None, test_scale: bool = False) -> Encoder:
    """An ``Encoder`` in eval mode for ``spec``; the built model's patch size must be the spec's."""
    builder = spec.builder or build_timm
    built = builder(spec, weights, test_scale)
    if model_patch_size(built.backbone) != built.spec.patch_size:
        raise RuntimeError(f"{spec.name}: timm built patch size {model_patch_size(built.backbone)}, "
                           f"the spec says {built.spec.patch_size}")
    return Encoder(built.spec, built.backbone, built.fingerprint).eval()
