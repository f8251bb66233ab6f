"""Zero-shot classification: CLIP-space image summaries against a PE-Core text classifier.

The text side follows open_clip's ``build_zero_shot_classifier`` (and PE's clip_benchmark): per
class, every prompt template is encoded, each embedding L2-normalized, averaged and L2-normalized
again; the classifier ``W`` is ``[D, C]`` and logits are ``normalize(image) @ W``. The text tower
is open_clip's own definition (``open_clip.model._build_text_tower``) for a PE-Core config
(default ``PE-Core-bigG-14-448``: context 72, width 1280, 24 layers, 1280-d output = ``pecore_g``'s
summary), or a JSON file of the same schema. Real weights come from a local file the user supplies
(an open_clip checkpoint, ``text.*`` keys; nothing is downloaded). The classifier is cached as
``.npz`` under ``cache_dir`` keyed by sha256 of (tower fingerprint, class names, templates).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TEXT_MODEL = "PE-Core-bigG-14-448"
TEMPLATE_SETS = ("openai", "simple")
# Prompt names for Fashion-MNIST's classes (eupe.eval.datasets.FASHION_MNIST_CLASSES order)
FASHION_MNIST_PROMPT_NAMES = ("t-shirt or top", "trouser", "pullover", "dress", "coat",
                              "sandal", "shirt", "sneaker", "bag", "ankle boot")
NO_TEXT_WEIGHTS = ("no text tower weights: pass --text-weights FILE (an open_clip PE-Core checkpoint, e.g. "
                   "open_clip_model.safetensors of timm/PE-Core-bigG-14-448, from a local copy)")


class TextTowerError(ValueError):
    """The text tower cannot be built or loaded (unknown config, bad weights file)."""


@dataclass
class TextTower:
    """An open_clip text transformer with its tokenizer; ``fingerprint`` identifies its weights."""

    model: nn.Module  # tokens [N, ctx] -> text embeddings [N, D]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    fingerprint: str
    config: str  # the open_clip config name or JSON file it was built from

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if isinstance(self.model.text_projection, torch.Tensor) \
            else int(self.model.text_projection.out_features)


def templates(which: str) -> list[Callable[[str], str]]:
    """open_clip's prompt templates: ``openai`` (80 ImageNet templates) or ``simple`` (7)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    sets = {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}
    if which not in sets:
        raise TextTowerError(f"templates must be one of {', '.join(TEMPLATE_SETS)}, got {which!r}")
    return list(sets[which])


def _model_config(config: str) -> dict:
    import open_clip

    if config.endswith(".json"):
        if not Path(config).is_file():
            raise TextTowerError(f"text tower config {config} not found")
        return json.loads(Path(config).read_text())
    cfg = open_clip.get_model_config(config)
    if cfg is None:
        raise TextTowerError(f"unknown open_clip config {config!r}: use a PE-Core name "
                             f"(e.g. {DEFAULT_TEXT_MODEL}) or a JSON file of the same schema")
    return cfg


def _tokenizer(config: str, text_cfg: dict) -> Callable[[Sequence[str]], torch.Tensor]:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    if config.endswith(".json"):
        return SimpleTokenizer(context_length=text_cfg.get("context_length", 77))
    return open_clip.get_tokenizer(config)


def state_fingerprint(module: nn.Module) -> str:
    """sha256 over parameter names, shapes and bytes (what the classifier depends on)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _read_text_state(path: Path) -> dict[str, torch.Tensor]:
    """The text tower's tensors of an open_clip checkpoint (``text.*`` keys, or bare tower keys)."""
    if not path.is_file():
        raise TextTowerError(f"--text-weights {path}: file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise TextTowerError(f"--text-weights {path}: not a readable safetensors/torch checkpoint ({err})") from None
    text = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    return text or state


def load_text_tower(weights: str | Path | None, config: str = DEFAULT_TEXT_MODEL, seed: int = 0) -> TextTower:
    """A PE-Core text tower from ``weights`` (a local checkpoint), or random-init when ``weights == "random"``.

    Random init (seeded) is for tests and smoke runs only: its scores are not meaningful.
    """
    from open_clip.model import _build_text_tower

    if weights is None:
        raise TextTowerError(NO_TEXT_WEIGHTS)
    cfg = _model_config(config)
    if not cfg.get("custom_text", False):
        raise TextTowerError(f"{config}: not a custom-text (PE-Core style) open_clip config")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_text_tower(cfg["embed_dim"], cfg["text_cfg"], quick_gelu=cfg.get("quick_gelu", False))
    if str(weights) != "random":
        missing, unexpected = model.load_state_dict(_read_text_state(Path(weights)), strict=False)
        if missing:
            raise TextTowerError(f"--text-weights {weights}: not a {config} text tower "
                                 f"({len(missing)} tensors missing, e.g. {missing[0]})")
    model.requires_grad_(False)
    return TextTower(model.eval(), _tokenizer(config, cfg["text_cfg"]), state_fingerprint(model), config)


def _cache_key(tower: TextTower, classnames: Sequence[str], template_fns: Sequence[Callable[[str], str]]) -> str:
    payload = {"tower": tower.fingerprint, "classes": list(classnames), "templates": [t("{}") for t in template_fns]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@torch.inference_mode()
def encode_classes(tower: TextTower, classnames: Sequence[str], template_fns: Sequence[Callable[[str], str]],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """The classifier ``[D, C]``: per class, mean of L2-normalized template embeddings, L2 again."""
    model = tower.model.to(device)
    columns = []
    for name in classnames:
        tokens = tower.tokenizer([t(name) for t in template_fns]).to(device)  # [T, ctx]
        emb = F.normalize(model(tokens).float(), dim=-1).mean(dim=0)  # [T, D] -> [D]
        columns.append(F.normalize(emb, dim=0))
    return torch.stack(columns, dim=1).cpu()  # [D, C]


def text_classifier(tower: TextTower, classnames: Sequence[str], template_fns: Sequence[Callable[[str], str]],
                    cache_dir: str | Path | None = None, device: torch.device | str = "cpu") -> tuple[torch.Tensor, bool]:
    """(classifier ``[D, C]``, cache hit). Cached in ``cache_dir/zeroshot/<sha256>.npz`` when given."""
    path = Path(cache_dir) / "zeroshot" / f"{_cache_key(tower, classnames, template_fns)}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return torch.from_numpy(data["classifier"]), True
    weights = encode_classes(tower, classnames, template_fns, device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as handle:
            np.savez(handle, classifier=weights.numpy(), classes=np.asarray(list(classnames)))
        os.replace(tmp, path)
    return weights, False


def zero_shot_logits(image_feats: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """``normalize(image_feats) [N, D] @ classifier [D, C]`` -> logits ``[N, C]`` (cosines)."""
    if image_feats.shape[1] != classifier.shape[0]:
        raise TextTowerError(f"image embeddings are {image_feats.shape[1]}-d, the text classifier "
                             f"{classifier.shape[0]}-d: the model's CLIP space does not match the text tower")
    return F.normalize(image_feats.float(), dim=-1) @ classifier.float()


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of rows whose label is among the ``k`` largest logits (0..1)."""
    k = min(k, logits.shape[1])
    return float((logits.topk(k, dim=1).indices == torch.as_tensor(labels)[:, None]).any(dim=1).float().mean())


def prompt_names(classes: Sequence[str]) -> list[str]:
    """Class names as prompts: Fashion-MNIST's cleaned names, ImageNet's open_clip names for 1000
    wnid folders, otherwise the folder names with ``_`` as spaces."""
    from eupe.eval.datasets import FASHION_MNIST_CLASSES

    if tuple(classes) == FASHION_MNIST_CLASSES:
        return list(FASHION_MNIST_PROMPT_NAMES)
    if len(classes) == 1000 and all(c.startswith("n") and c[1:].isdigit() for c in classes):
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES)  # index = sorted wnid, as the folder loader sorts them
    return [c.replace("_", " ") for c in classes]
