"""What a registered encoder is, readable without importing torch or timm.

An ``EncoderSpec`` names the timm architecture and states what the user needs to see before
anything is built: native resolution, patch size, input mean/std, how the summary token is
formed, which prefix tokens are dropped, token widths, and where the weights live. timm is the
source of truth for these values: they are restated here only so that listing teachers (and
every ``--help``) stays instant, and ``tests/test_registry_timm.py`` asserts that every
registered spec equals timm's pretrained cfg and the built model, so drift fails CI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple, Optional

from eupe.models.weights import WeightsSource


# cls: first token; attn_pool: the model's attention-pooling head, for models whose pool output
# is their embedding (no projection after it: SigLIP2's MAP head); attn_pool_proj: attention pool
# then the model's projection (timm's full head: PE-core's text-aligned CLIP embedding);
# avg_pool_norm: DINOv3/EUPE ConvNeXt: one final LayerNorm (timm's head.norm) over the global
# average pool *and* every patch token; mean: mean of the patch tokens.
Summary = Literal["cls", "attn_pool", "attn_pool_proj", "avg_pool_norm", "mean"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

class Built(NamedTuple):
    """What a spec's builder returns: the backbone (a torch ``nn.Module``), its weights fingerprint,
    and the spec (a builder may refine it, e.g. the proxy's shape comes from its checkpoint)."""

    backbone: Any
    fingerprint: str
    spec: "EncoderSpec"


# A custom builder: (spec, weights path or None, test_scale) -> Built(backbone, fingerprint, spec).
Builder = Callable[["EncoderSpec", Optional["str | Path"], bool], Built]


@dataclass(frozen=True)
class EncoderSpec:
    """Everything a user needs to know about a registered encoder, and how to build it."""

    name: str
    timm_name: str
    resolution: int  # native input resolution: the side, in pixels, of a square input
    patch_size: int  # ViT patch size, or total stride of a CNN's feature map
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    summary: Summary
    prefix_tokens: str  # which prefix tokens exist and are dropped from the patch grid
    summary_dim: int
    patch_dim: int
    weights: WeightsSource
    description: str = ""
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    test_kwargs: dict[str, Any] = field(default_factory=dict)  # tiny width/depth for tests
    builder: Builder | None = None  # None: built by timm from timm_name (the default builder)

    @property
    def pretrained_id(self) -> str:
        """timm's name with the pretrained tag of the weights (``convnext_tiny.eupe_lvd1689m``),
        whose pretrained cfg holds the input size and mean/std of those weights."""
        repo = self.weights.hf_repo or ""
        return repo.removeprefix("timm/") if repo.startswith(f"timm/{self.timm_name}.") else self.timm_name

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch-grid size for an input of ``height`` x ``width`` pixels."""
        return height // self.patch_size, width // self.patch_size

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (what the store records as preprocessing)."""
        return {
            "name": self.name,
            "architecture": self.timm_name,
            "resolution": self.resolution,
            "patch_size": self.patch_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "summary": self.summary,
            "prefix_tokens": self.prefix_tokens,
            "summary_dim": self.summary_dim,
            "patch_dim": self.patch_dim,
            "weights_source": self.weights.describe(),
        }
