"""Renderer benchmark: CPU ms per sample to turn a JPEG into one training view, side by side.

Real photos (the bundled ones) re-encoded as quality-90 JPEGs with the longer side at each
``--sides`` value; for every photo ``--views`` views are drawn by the default ``ViewPolicy``.
Paths, each timed on the same (JPEG, view) samples in one process, one torch thread (as in a
DataLoader worker), passes interleaved, the median pass reported:

* ``pil``       PIL decode + resize of the view's crop box to the output size (uint8, the target's
                reference: the naive peer's whole image path)
* ``render``    ``render(open_image(jpeg), view, size)``: renderer 2 from the encoded bytes
                (reduced DCT decode when the crop allows), with the view's photometric ops
* ``render_geo`` the same with the photometric ops removed (crop, resize, flip only)
* ``decoded``   ``render(decode_image(jpeg), view, size)``: renderer 2 from a full decode (what a
                caller that decodes first gets)
* ``v1``        renderer 1 as it was (full decode, float32 torch resize, torchvision colour ops)

Run:  .venv/bin/python bench/render.py  [--sides 500,1000,0] [--resolutions 224,256] [--views 4] [--passes 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.assets import bundled_photos  # noqa: E402
from eupe.views import ViewPolicy, ViewSpec, decode_image, open_image, render, sample_views  # noqa: E402
from eupe.views.render import dct_scale  # noqa: E402

Sample = tuple[bytes, ViewSpec]


def jpegs(side: int) -> list[tuple[str, bytes]]:
    """Every bundled photo as RGB JPEG (quality 90) with its longer side resized to ``side`` (0: as is)."""
    out = []
    for photo in bundled_photos():
        with Image.open(photo.path) as img:
            img = img.convert("RGB")
            scale = side / max(img.size) if side else 1.0
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
        out.append((photo.key, buf.getvalue()))
    return out


def samples(side: int, resolution: int, k: int) -> list[Sample]:
    found = []
    for key, data in jpegs(side):
        w, h = Image.open(io.BytesIO(data)).size
        found += [(data, v) for v in sample_views(ViewPolicy(), 0, key, h, w, k, resolution=resolution)]
    return found


def pil_path(data: bytes, v: ViewSpec) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    box = (v.left, v.top, v.left + v.width, v.top + v.height)
    return np.asarray(img.resize((v.out_w, v.out_h), Image.Resampling.BILINEAR, box=box))


def geometric(v: ViewSpec) -> ViewSpec:
    return dataclasses.replace(v, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0,
                               grayscale=False, blur_sigma=0.0, solarize=False)


def render_v1(data: bytes, v: ViewSpec) -> torch.Tensor:
    """Renderer 1 (before this change), kept here for the side-by-side figure."""
    image = decode_image(data)
    box = image[:, v.top:v.top + v.height, v.left:v.left + v.width].to(torch.float32).div_(255.0)
    x = F.resize(box, [v.out_h, v.out_w], interpolation=InterpolationMode.BILINEAR, antialias=True)
    x = x.flip(-1) if v.flip else x
    ops = {0: (v.brightness, 1.0, F.adjust_brightness), 1: (v.contrast, 1.0, F.adjust_contrast),
           2: (v.saturation, 1.0, F.adjust_saturation), 3: (v.hue, 0.0, F.adjust_hue)}
    for op in v.jitter_order:
        factor, identity, fn = ops[op]
        x = fn(x, factor) if factor != identity else x
    x = F.rgb_to_grayscale(x, num_output_channels=3) if v.grayscale else x
    if v.blur_sigma > 0:
        sigma = v.blur_sigma * min(v.out_h, v.out_w)
        radius = min(math.ceil(3.0 * sigma), min(v.out_h, v.out_w) - 1)
        x = F.gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma]) if radius >= 1 else x
    x = F.solarize(x, 0.5) if v.solarize else x
    return x.clamp(0.0, 1.0).contiguous()


PATHS: dict[str, Callable[[bytes, ViewSpec], object]] = {
    "pil": pil_path,
    "render": lambda d, v: render(open_image(d), v),
    "render_geo": lambda d, v: render(open_image(d), geometric(v)),
    "decoded": lambda d, v: render(decode_image(d), v),
    "v1": render_v1,
}


def time_paths(found: list[Sample], passes: int) -> dict[str, float]:
    """Median over interleaved passes of the per-sample time (ms) of each path."""
    per_pass: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(passes):
        for name, fn in PATHS.items():
            start = time.perf_counter()
            for data, view in found:
                fn(data, view)
            per_pass[name].append(1e3 * (time.perf_counter() - start) / len(found))
    return {name: statistics.median(ms) for name, ms in per_pass.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", default="500,1000,0",
                        help="longer side of the source JPEGs (px; 0: the photos' own sizes, 300-1411 px)")
    parser.add_argument("--resolutions", default="224,256", help="view resolutions (px)")
    parser.add_argument("--views", type=int, default=4, help="views per photo")
    parser.add_argument("--passes", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {describe()}")
    print(f"{len(bundled_photos())} photos x {args.views} views, median of {args.passes} interleaved passes, "
          "ms per sample")
    names = list(PATHS)
    print("| source side | view | reduced decodes | " + " | ".join(f"{n} (ms)" for n in names)
          + " | render / pil | render_geo / pil | decoded / pil | v1 / render |")
    print("|---" * (3 + len(names) + 4) + "|")
    for side in (int(s) for s in args.sides.split(",")):
        for resolution in (int(s) for s in args.resolutions.split(",")):
            print(row(side, resolution, args.views, args.passes))


def row(side: int, resolution: int, views: int, passes: int) -> str:
    """One table row: times of every path and their ratios, for one source side and view resolution."""
    found = samples(side, resolution, views)
    reduced = sum(dct_scale(v, (resolution, resolution)) > 1 for _, v in found) / len(found)
    ms = time_paths(found, passes)
    cells = " | ".join(f"{ms[n]:.2f}" for n in PATHS)
    ratios = [ms["render"] / ms["pil"], ms["render_geo"] / ms["pil"], ms["decoded"] / ms["pil"]]
    label = f"{side} px" if side else "own size"
    return (f"| {label} | {resolution} px | {reduced:.0%} | {cells} | "
            + " | ".join(f"{r:.2f}x" for r in ratios) + f" | {ms['v1'] / ms['render']:.1f}x |")


if __name__ == "__main__":
    main()
