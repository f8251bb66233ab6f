"""The proxy teacher: a large ViT trained in Stage 1, used as the only teacher in Stages 2-3.

EUPE does not publish the proxy's exact shape, so it is a config. The default follows the
DINOv3 ViT-H+ family (timm ``Eva`` with RoPE, SwiGLU MLP, layer scale, 4 registers) widened to
1536 with depth 36, about 1.9B parameters. A proxy checkpoint is one safetensors file whose
metadata carries the architecture config, so ``eupe-cache extract --teacher proxy --weights
FILE_OR_RUN_DIR`` can rebuild it without any other file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from safetensors import safe_open

from eupe.fileio import atomic_write
from eupe.models.weights import WeightsFileError

if TYPE_CHECKING:
    from torch import nn

PROXY_FILENAME = "proxy.safetensors"
PROXY_FORMAT = "eupe-proxy-v1"
PROXY_ARCH = "vit_huge_plus_patch16_dinov3"  # timm family the proxy is built from
PROXY_SOURCE = f"a Stage-1 run directory or its {PROXY_FILENAME}"


@dataclass
class ProxyConfig:
    """Shape of the proxy ViT (defaults: width 1536, ~1.9B parameters, 4 registers)."""

    embed_dim: int = 1536  # paper: the 1.9B "ViT-G" proxy is 1536 wide (docs/design.md, "The EUPE recipe")
    depth: int = 36  # ours: the paper does not publish it; chosen so the total is ~1.9B
    num_heads: int = 24  # ours: 64-wide heads, as DINOv3's ViTs
    mlp_ratio: float = 6.0  # ours: chosen with depth to reach ~1.9B
    patch_size: int = 16  # ours: the paper does not say; 16 like DINOv3 and the students
    num_reg_tokens: int = 4  # paper: 4 register tokens
    resolution: int = 256  # ours: the Stage-1 input side is not published; the Stage-2 resolution

    def timm_kwargs(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "patch_size": self.patch_size,
            "num_reg_tokens": self.num_reg_tokens,
            "img_size": self.resolution,
            "global_pool": "token",
            "num_classes": 0,
        }

    @classmethod
    def test_scale(cls) -> "ProxyConfig":
        return cls(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)


def build_proxy_backbone(config: ProxyConfig) -> "nn.Module":
    """Random-init proxy backbone (timm Eva, DINOv3 family)."""
    import timm

    return timm.create_model(PROXY_ARCH, pretrained=False, **config.timm_kwargs())


def count_parameters(config: ProxyConfig) -> int:
    """Parameter count of a proxy shape, without allocating its weights."""
    import torch

    with torch.device("meta"):
        model = build_proxy_backbone(config)
    return sum(p.numel() for p in model.parameters())


def resolve_checkpoint(path: str | Path) -> Path:
    """A proxy checkpoint file from a file path or a Stage-1 run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / PROXY_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"proxy checkpoint {path} not found; pass {PROXY_SOURCE}"
        )
    return path


def save_proxy(backbone: "nn.Module", config: ProxyConfig, path: str | Path) -> Path:
    """Write a self-describing proxy checkpoint (weights + architecture in the metadata)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    meta = {"format": PROXY_FORMAT, "config": json.dumps(dataclasses.asdict(config))}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_proxy_config(path: str | Path) -> ProxyConfig:
    """The architecture stored in a proxy checkpoint's metadata."""
    path = resolve_checkpoint(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("format") != PROXY_FORMAT:
        raise WeightsFileError(f"{path} is not a proxy checkpoint (metadata format {meta.get('format')!r}, expected {PROXY_FORMAT!r})")
    try:
        return ProxyConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise WeightsFileError(f"{path}: malformed proxy config in its metadata ({err})") from None


def load_proxy(path: str | Path) -> tuple["nn.Module", ProxyConfig]:
    """Rebuild a proxy backbone from its checkpoint."""
    from safetensors.torch import load_file

    path = resolve_checkpoint(path)
    config = read_proxy_config(path)
    backbone = build_proxy_backbone(config)
    backbone.load_state_dict(load_file(str(path)), strict=True)
    return backbone, config
