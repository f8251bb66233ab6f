"""Loaders for the paper-scale dense datasets, in the layouts the reference evaluations read.

* ADE20K: ``ADEChallengeData2016/{images,annotations}/{training,validation}/*.{jpg,png}`` (found by
  glob; EUPE's ``ADE20K_object150_*.txt`` lists are not required), ``reduce_zero_label``.
* NYUv2: the BTS split used by DINOv3/EUPE: ``nyu_train.txt`` / ``nyu_test.txt`` next to the data,
  lines ``rgb_rel depth_rel focal``, depth PNG in millimetres.
* SPair-71k: ``SPair-71k/{JPEGImages/<class>/*.jpg, PairAnnotation/test/*.json}``.

``root`` may be the dataset folder itself or a folder holding it. A missing folder or file raises
``MissingDatasetError`` naming it and the layout expected. Images are decoded when used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from eupe.eval.datasets import MissingDatasetError
from eupe.eval.dense.samples import DepthData, Pair, SegData

ADE_DIR, NYU_SPLITS, SPAIR_DIR = "ADEChallengeData2016", ("nyu_train.txt", "nyu_test.txt"), "SPair-71k"
NYU_TRAIN_CROP = (43, 45, 608, 472)  # left, top, right, bottom (DINOv3 depth/transforms.py)
NYU_TRAIN_SIZE = (416, 544)


class Lazy(Sequence):
    """``load(item)`` for each item, decoded on access (slices give lists)."""

    def __init__(self, items: Sequence, load: Callable) -> None:
        self.items, self.load = list(items), load

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.load(item) for item in self.items[i]]
        return self.load(self.items[i])


def read_rgb(path: Path) -> torch.Tensor:
    """float [3, H, W] in [0, 1]."""
    from PIL import Image

    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).float() / 255.0


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img).copy()


def _find(root: str | Path, name: str, marker: str, expected: str) -> Path:
    """``root/name`` or ``root`` itself, whichever holds ``marker``."""
    root = Path(root)
    for candidate in (root / name, root):
        if (candidate / marker).exists():
            return candidate
    raise MissingDatasetError(f"{root}: no {name} dataset here ({root / name / marker} not found); expected {expected}")


def _need(path: Path, expected: str) -> Path:
    if not path.exists():
        raise MissingDatasetError(f"{path} not found; expected {expected}")
    return path


def _subset(items: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(items):
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]


def _short_side(x: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    """[C, H, W] resized so its shorter side is ``side``."""
    height, width = x.shape[-2:]
    scale = side / min(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    return F.interpolate(x[None].float(), size=size, mode=mode, **kwargs)[0]


def _centre(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


# -- ADE20K ---------------------------------------------------------------------------------------

ADE_LAYOUT = f"{ADE_DIR}/images/{{training,validation}}/*.jpg and {ADE_DIR}/annotations/{{training,validation}}/*.png"


def reduce_zero_label(label: np.ndarray) -> torch.Tensor:
    """ADE20K labels 0..150 -> 0 ignored (255), 1..150 -> 0..149."""
    out = label.astype(np.int64) - 1
    out[label == 0] = 255
    return torch.from_numpy(out)


def ade20k_files(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) pairs of ``split`` ("training" or "validation")."""
    base = _find(root, ADE_DIR, "images", ADE_LAYOUT)
    images = sorted(_need(base / "images" / split, ADE_LAYOUT).glob("*.jpg"))
    if not images:
        raise MissingDatasetError(f"{base / 'images' / split}: no .jpg images; expected {ADE_LAYOUT}")
    annotations = _need(base / "annotations" / split, ADE_LAYOUT)
    return [(image, _need(annotations / f"{image.stem}.png", ADE_LAYOUT)) for image in images]


def ade20k_data(root: str | Path, config, seed: int):
    """``SegData`` of ADE20K: one centre view per training image, validation at short side = resolution."""

    side = config.resolution
    train = _subset(ade20k_files(root, "training"), config.train, seed)
    val = _subset(ade20k_files(root, "validation"), config.val, seed)

    def train_image(pair):
        return _centre(_short_side(read_rgb(pair[0]), side, "bilinear").clamp(0, 1), side, side)

    def train_label(pair):
        label = reduce_zero_label(read_png(pair[1]))
        return _centre(_short_side(label[None], side, "nearest")[0], side, side).to(torch.uint8)

    labels = torch.stack([train_label(p) for p in train])  # uint8 [N, s, s]
    return SegData(train_images=Lazy(train, train_image), train_labels=labels,
                   val_images=Lazy(val, lambda p: _short_side(read_rgb(p[0]), side, "bilinear").clamp(0, 1)),
                   val_labels=Lazy(val, lambda p: reduce_zero_label(read_png(p[1]))), num_classes=150,
                   name="ADE20K val", offline=False)


# -- NYUv2 ----------------------------------------------------------------------------------------

NYU_LAYOUT = "nyu_train.txt / nyu_test.txt (BTS split: 'rgb_rel depth_rel focal' per line) beside the scene folders"


def nyu_files(root: str | Path, split_file: str) -> tuple[Path, list[tuple[Path, Path]]]:
    base = _find(root, "nyu", split_file, NYU_LAYOUT)
    rows = []
    for line in (base / split_file).read_text().splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[1] == "None":
            continue
        rows.append((base / parts[0].lstrip("/"), base / parts[1].lstrip("/")))
    if not rows:
        raise MissingDatasetError(f"{base / split_file}: no samples; expected {NYU_LAYOUT}")
    for rgb, depth in rows[:3]:  # a wrong root shows at once
        _need(rgb, NYU_LAYOUT), _need(depth, NYU_LAYOUT)
    return base, rows


def read_depth_mm(path: Path) -> torch.Tensor:
    """Depth PNG in millimetres -> float metres [H, W] (0 stays 0: invalid)."""
    return torch.from_numpy(read_png(path).astype(np.float32) / 1000.0)


def nyu_data(root: str | Path, config, seed: int):
    """``DepthData`` of NYUv2: NYU crop + centre 416x544 view per training image, full 480x640 test."""

    _, train = nyu_files(root, NYU_SPLITS[0])
    _, test = nyu_files(root, NYU_SPLITS[1])
    train, test = _subset(train, config.train, seed), _subset(test, config.test, seed)
    left, top, right, bottom = NYU_TRAIN_CROP

    def view(x: torch.Tensor) -> torch.Tensor:
        return _centre(x[..., top:bottom, left:right], *NYU_TRAIN_SIZE)

    depth = torch.stack([view(read_depth_mm(d)) for _, d in train])  # [N, 416, 544]
    return DepthData(Lazy(train, lambda p: view(read_rgb(p[0]))), depth,
                     Lazy(test, lambda p: read_rgb(p[0])), Lazy(test, lambda p: read_depth_mm(p[1])),
                     "NYUv2 test (BTS split)", False)


# -- SPair-71k --------------------------------------------------------------------------------------

SPAIR_LAYOUT = f"{SPAIR_DIR}/JPEGImages/<class>/*.jpg and {SPAIR_DIR}/PairAnnotation/test/*.json"


def spair_annotations(root: str | Path, per_class: int | None, seed: int = 20) -> tuple[Path, list[dict]]:
    """Test pair annotations, ``per_class`` random pairs of each category (Probe3D: 200, seed 20)."""
    base = _find(root, SPAIR_DIR, "PairAnnotation", SPAIR_LAYOUT)
    files = sorted(_need(base / "PairAnnotation" / "test", SPAIR_LAYOUT).glob("*.json"))
    if not files:
        raise MissingDatasetError(f"{base / 'PairAnnotation' / 'test'}: no .json pairs; expected {SPAIR_LAYOUT}")
    by_class: dict[str, list[dict]] = {}
    for path in files:
        ann = json.loads(path.read_text())
        by_class.setdefault(ann["category"], []).append(ann)
    chosen = [a for cls in sorted(by_class) for a in _subset(by_class[cls], per_class, seed)]
    return base, chosen


def pad_square(image: torch.Tensor, side: int) -> tuple[torch.Tensor, float]:
    """Pad bottom/right with white to a square, resize to ``side`` (bicubic); returns (image, scale)."""
    _, height, width = image.shape
    big = max(height, width)
    padded = torch.ones(3, big, big)
    padded[:, :height, :width] = image
    out = F.interpolate(padded[None], size=(side, side), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    return out, side / big


def spair_pair(base: Path, ann: dict, side: int):
    """One SPair test pair as a ``corr.Pair`` at ``side`` x ``side`` (threshold scale: max bbox side)."""

    folder = base / "JPEGImages" / ann["category"]
    src, s_scale = pad_square(read_rgb(_need(folder / ann["src_imname"], SPAIR_LAYOUT)), side)
    tgt, t_scale = pad_square(read_rgb(_need(folder / ann["trg_imname"], SPAIR_LAYOUT)), side)
    x1, y1, x2, y2 = ann["trg_bndbox"]
    src_xy = torch.tensor(ann["src_kps"], dtype=torch.float32).view(-1, 2) * s_scale
    tgt_xy = torch.tensor(ann["trg_kps"], dtype=torch.float32).view(-1, 2) * t_scale
    return Pair(src, tgt, src_xy, tgt_xy, max(x2 - x1, y2 - y1) * t_scale, ann["category"])


def spair_pairs(root: str | Path, config, seed: int) -> Lazy:
    """Lazily decoded SPair test pairs (Probe3D's subset: ``config.pairs_per_class`` per class, seed 20)."""
    base, annotations = spair_annotations(root, config.pairs_per_class)
    return Lazy(annotations, lambda ann: spair_pair(base, ann, config.resolution))
