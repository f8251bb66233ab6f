"""Offline dense fixtures built from real pixels that ship here (eval-protocols.md §3, §5).

* Fashion-MNIST **mosaics** (segmentation): real garment pixels and labels from the Debian package,
  placed on a black canvas in a made-up 3x3 layout. Label 0 = background, 1..10 = garment class.
* Middlebury 2014 **Motorcycle** (depth, stereo correspondence): scikit-image's rectified pair with
  ground-truth disparity; metric depth from the calibration in its docstring, Z = f B / (d + doffs).
  The right view's depth is the left depth forward-warped with a z-buffer.
* **Warped photos** (keypoint correspondence): real photos bundled in installed packages, each paired
  with a known random affine warp of itself; keypoints are random source points and their images.

Layouts and warps are synthetic: these fixtures rank models, they do not estimate paper numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from eupe.eval.datasets import MissingDatasetError, fashion_mnist

MOSAIC_FIXTURE = "offline: Fashion-MNIST mosaics (real garments, synthetic 3x3 layout)"
DEPTH_FIXTURE = "offline: Middlebury 2014 Motorcycle (scikit-image), train left crops / test right view"
STEREO_FIXTURE = "offline: Middlebury 2014 Motorcycle stereo pair (scikit-image), ground-truth disparity"
WARP_FIXTURE = "offline: bundled photos under known random affine warps"

# Calibration of the quarter-resolution Motorcycle pair (skimage.data.stereo_motorcycle docstring).
FOCAL_PX = 994.978
BASELINE_M = 0.193001
DOFFS_PX = 31.086


# -- segmentation: Fashion-MNIST mosaics ----------------------------------------------------------

@dataclass(frozen=True)
class MosaicConfig:
    canvas: int = 224
    grid: int = 3
    empty: float = 0.2  # probability that a cell stays empty
    min_scale: float = 0.6  # garment side as a fraction of the cell side
    max_scale: float = 1.0
    threshold: int = 25  # garment pixels brighter than this get the garment's label


def _place(canvas: torch.Tensor, labels: torch.Tensor, garment: torch.Tensor, cls: int, top: int, left: int,
           side: int, threshold: int) -> None:
    grey = F.interpolate(garment[None, None].float(), size=(side, side), mode="bilinear",
                         align_corners=False, antialias=True)[0, 0]  # [side, side] in 0..255
    canvas[top:top + side, left:left + side] = grey / 255.0
    labels[top:top + side, left:left + side] = torch.where(grey > threshold, cls + 1, 0)


def fashion_mosaics(split: str, count: int, seed: int, config: MosaicConfig = MosaicConfig()
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` mosaics from the Fashion-MNIST ``split``: images float [N, 3, S, S] in [0, 1] and
    labels long [N, S, S] (0 background, 1..10 garments)."""
    rng = np.random.default_rng(seed)
    cells = count * config.grid ** 2
    garments, classes = fashion_mnist(split, limit=cells, seed=seed)  # uint8 [M, 3, 28, 28]
    order = rng.permutation(len(classes))
    cell = config.canvas // config.grid
    images = torch.zeros(count, config.canvas, config.canvas)
    labels = torch.zeros(count, config.canvas, config.canvas, dtype=torch.long)
    used = 0
    for n in range(count):
        for row in range(config.grid):
            for col in range(config.grid):
                if rng.random() < config.empty:
                    continue
                side = int(cell * rng.uniform(config.min_scale, config.max_scale))
                top = row * cell + int(rng.integers(0, cell - side + 1))
                left = col * cell + int(rng.integers(0, cell - side + 1))
                k = order[used % len(order)]
                used += 1
                _place(images[n], labels[n], garments[k, 0], int(classes[k]), top, left, side, config.threshold)
    return images[:, None].expand(-1, 3, -1, -1).contiguous(), labels


# -- Middlebury Motorcycle: depth and stereo --------------------------------------------------------

@dataclass(frozen=True)
class Stereo:
    left: torch.Tensor  # float [3, H, W] in [0, 1]
    right: torch.Tensor
    disparity: torch.Tensor  # float [H, W] left-view disparity in px, NaN where unknown
    depth_left: torch.Tensor  # metres, NaN where unknown
    depth_right: torch.Tensor  # left depth forward-warped to the right view, NaN where unknown


def _forward_warp(depth: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """Right-view depth: each left pixel (y, x) lands at (y, round(x - d)); nearest surface wins."""
    height, width = depth.shape
    ys, xs = np.nonzero(np.isfinite(disparity))
    xr = np.rint(xs - disparity[ys, xs]).astype(np.int64)
    keep = (xr >= 0) & (xr < width)
    ys, xr, z = ys[keep], xr[keep], depth[ys[keep], xs[keep]]
    order = np.argsort(-z)  # far first: nearer points overwrite them
    out = np.full_like(depth, np.nan)
    out[ys[order], xr[order]] = z[order]
    return out


def middlebury() -> Stereo:
    """scikit-image's Motorcycle pair with metric depth for both views."""
    try:
        from skimage import data
    except ImportError as err:
        raise MissingDatasetError("the Middlebury fixture needs scikit-image: pip install scikit-image") from err
    left, right, disp = data.stereo_motorcycle()
    disp = np.where(np.isfinite(disp), disp, np.nan).astype(np.float32)
    depth = (FOCAL_PX * BASELINE_M / (disp + DOFFS_PX)).astype(np.float32)
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0  # noqa: E731
    return Stereo(to_tensor(left), to_tensor(right), torch.from_numpy(disp), torch.from_numpy(depth),
                  torch.from_numpy(_forward_warp(depth, disp)))


def random_crops(image: torch.Tensor, depth: torch.Tensor, count: int, size: int, seed: int,
                 min_frac: float = 0.45) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random square crops (side U(min_frac, 1) of the height, hflip p 0.5) of an image
    [3, H, W] and its depth [H, W], resized to ``size``: images [N, 3, s, s], depth [N, s, s] (nearest)."""
    rng = np.random.default_rng(seed)
    _, height, width = image.shape
    images, depths = [], []
    for _ in range(count):
        side = int(height * rng.uniform(min_frac, 1.0))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        img = image[:, top:top + side, left:left + side]
        dep = depth[top:top + side, left:left + side]
        if rng.random() < 0.5:
            img, dep = img.flip(-1), dep.flip(-1)
        images.append(F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True,
                                    align_corners=False)[0].clamp(0, 1))
        depths.append(F.interpolate(dep[None, None], size=(size, size), mode="nearest")[0, 0])
    return torch.stack(images), torch.stack(depths)


def stereo_matches(stereo: Stereo, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random left pixels with known disparity whose match lies in the right view:
    (left xy, right xy) [N, 2] in continuous pixel coordinates (pixel centres)."""
    rng = np.random.default_rng(seed)
    disp = stereo.disparity.numpy()
    ys, xs = np.nonzero(np.isfinite(disp))
    keep = xs - disp[ys, xs] >= 0
    ys, xs = ys[keep], xs[keep]
    pick = rng.choice(len(ys), size=min(count, len(ys)), replace=False)
    ys, xs = ys[pick], xs[pick]
    src = np.stack([xs + 0.5, ys + 0.5], axis=1)
    tgt = np.stack([xs + 0.5 - disp[ys, xs], ys + 0.5], axis=1)
    return torch.from_numpy(src).float(), torch.from_numpy(tgt).float()


# -- warped photos ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WarpConfig:
    rotation: float = 25.0  # degrees, uniform in +-rotation
    min_scale: float = 0.7
    max_scale: float = 1.3
    shift: float = 0.15  # fraction of the side, uniform in +-shift
    keypoints: int = 50


def load_photo(path, size: int) -> torch.Tensor:
    """A photo centre-cropped to a square and resized to ``size``: float [3, size, size] in [0, 1]."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0


def random_affine(rng: np.random.Generator, config: WarpConfig) -> np.ndarray:
    """A 2x3 map of normalized coordinates, target = M[:, :2] @ source + M[:, 2]."""
    angle = math.radians(rng.uniform(-config.rotation, config.rotation))
    scale = rng.uniform(config.min_scale, config.max_scale)
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    shift = rng.uniform(-2 * config.shift, 2 * config.shift, size=2)  # the side spans 2 in [-1, 1]
    return np.concatenate([rot, shift[:, None]], axis=1)


def warp_image(image: torch.Tensor, forward: np.ndarray) -> torch.Tensor:
    """``image`` [3, S, S] warped by the source -> target map ``forward`` (black outside)."""
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]  # target -> source, as affine_grid wants
    theta = torch.from_numpy(inverse).float()[None]
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    return F.grid_sample(image[None], grid, mode="bilinear", align_corners=False)[0]


def warp_keypoints(size: int, forward: np.ndarray, count: int, rng: np.random.Generator,
                   margin: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random source points whose image under ``forward`` stays inside the target:
    (source xy, target xy) [N, 2] in continuous pixel coordinates of a ``size`` square."""
    chosen: list[np.ndarray] = []
    while sum(len(c) for c in chosen) < count:
        src = rng.uniform(-margin, margin, size=(4 * count, 2))
        tgt = src @ forward[:, :2].T + forward[:, 2]
        chosen.append(src[np.all(np.abs(tgt) < margin, axis=1)])
    src = np.concatenate(chosen)[:count]
    tgt = src @ forward[:, :2].T + forward[:, 2]
    to_px = lambda a: torch.from_numpy((a + 1) / 2 * size).float()  # noqa: E731
    return to_px(src), to_px(tgt)


@dataclass(frozen=True)
class WarpPair:
    key: str
    source: torch.Tensor  # [3, S, S]
    target: torch.Tensor  # [3, S, S]
    source_xy: torch.Tensor  # [N, 2] pixels
    target_xy: torch.Tensor  # [N, 2] pixels


def warped_pairs(photos, size: int, seed: int, config: WarpConfig = WarpConfig()) -> list[WarpPair]:
    """One warped pair per photo (``eupe.assets.Photo`` s), all at ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    pairs = []
    for photo in photos:
        image = load_photo(photo.path, size)
        forward = random_affine(rng, config)
        src_xy, tgt_xy = warp_keypoints(size, forward, config.keypoints, rng)
        pairs.append(WarpPair(photo.key, image, warp_image(image, forward), src_xy, tgt_xy))
    return pairs
