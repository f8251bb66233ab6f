"""Renderer benchmark: CPU ms per sample to turn a JPEG into one training view, side by side.

Real photos (the bundled ones) re-encoded as quality-90 JPEGs with the longer side at each
``--sides`` value; for every photo ``--views`` views are drawn by the default ``ViewPolicy``.
Two view sets per source size: ``policy`` (the default ``ViewPolicy``: jitter 0.8, grayscale 0.2,
blur 0.5, solarize 0.2) and ``every op`` (jitter, blur and solarize on every view; grayscale off,
as it would replace the jittered colours and leave one plane to blur).

Paths, each timed on the same (JPEG, view) samples in one process, one torch thread (as in a
DataLoader worker).  Every path runs on every sample in turn (interleaved per sample), the
process CPU time of each call is taken, and the figure is the mean over samples of each
sample's fastest of ``--passes`` calls (robust to the other processes on a shared machine):

* ``pil``       PIL decode + resize of the view's crop box to the output size (uint8, the target's
                reference: the naive peer's whole image path)
* ``render``    ``render(open_image(jpeg), view, size)``: renderer 2 from the encoded bytes
                (reduced DCT decode when the crop allows), with the view's photometric ops
* ``render_geo`` the same with the photometric ops removed (crop, resize, flip only)
* ``decoded``   ``render(decode_image(jpeg), view, size)``: renderer 2 from a full decode (what a
                caller that decodes first gets)
* ``pil_aug``   a uint8 peer: ``pil`` + flip + the view's ops on the PIL image as torchvision does
                for PIL inputs (ImageEnhance blends, HSV hue in uint8), PIL's box-approximated
                GaussianBlur, ImageOps.solarize, then float32 (not our formulas: a cost reference)
* ``torch_ops`` renderer 2 with its photometric ops as the torch kernels of ``eupe.views.photometric``
                (as it ran before the compiled kernels of ``eupe.views.kernels``; the bench checks that
                both give the same pixels, bit for bit, on every sample before timing)
* ``v1``        renderer 1 as it was (full decode, float32 torch resize, torchvision colour ops)

``--stages`` also prints where ``render``'s time goes at the first source size, stage by stage.

Run:  .venv/bin/python bench/render.py  [--sides 500,1000,0] [--resolutions 224] [--views 4] [--passes 7] [--stages]
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.assets import bundled_photos  # noqa: E402
from eupe.views import kernels  # noqa: E402
from eupe.views import photometric as P  # noqa: E402
from eupe.views import renderer as R  # noqa: E402
from eupe.views.policy import ViewPolicy, sample_views  # noqa: E402
from eupe.views.renderer import _crop_resize, _to_float, dct_scale, render  # noqa: E402
from eupe.views.source import decode_image, open_image  # noqa: E402
from eupe.views.spec import ViewSpec  # noqa: E402

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


POLICIES = {"policy": ViewPolicy(), "every op": ViewPolicy(jitter_p=1.0, grayscale_p=0.0, blur_p=1.0, solarize_p=1.0)}


def samples(side: int, resolution: int, k: int, policy: ViewPolicy = POLICIES["policy"]) -> list[Sample]:
    found = []
    for key, data in jpegs(side):
        w, h = Image.open(io.BytesIO(data)).size
        found += [(data, v) for v in sample_views(policy, 0, key, h, w, k, resolution=resolution)]
    return found


def pil_path(data: bytes, v: ViewSpec) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    box = (v.left, v.top, v.left + v.width, v.top + v.height)
    return np.asarray(img.resize((v.out_w, v.out_h), Image.Resampling.BILINEAR, box=box))


def pil_aug_path(data: bytes, v: ViewSpec) -> torch.Tensor:
    """The uint8 peer: PIL decode + resize + flip + the view's ops on the PIL image, then float32."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    box = (v.left, v.top, v.left + v.width, v.top + v.height)
    img = img.resize((v.out_w, v.out_h), Image.Resampling.BILINEAR, box=box)
    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if v.flip else img
    ops = {0: (v.brightness, 1.0, F.adjust_brightness), 1: (v.contrast, 1.0, F.adjust_contrast),
           2: (v.saturation, 1.0, F.adjust_saturation), 3: (v.hue, 0.0, F.adjust_hue)}
    for op in v.jitter_order:
        factor, identity, fn = ops[op]
        img = fn(img, factor) if factor != identity else img
    img = img.convert("L").convert("RGB") if v.grayscale else img
    if v.blur_sigma > 0:
        img = img.filter(ImageFilter.GaussianBlur(v.blur_sigma * min(v.out_h, v.out_w)))
    img = ImageOps.solarize(img, 128) if v.solarize else img
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255.0)


def render_torch_ops(data: bytes, v: ViewSpec) -> torch.Tensor:
    """Renderer 2 with its photometric ops as torch kernels (:func:`eupe.views.photometric.photometric`),
    as it ran before the compiled kernels: the same pixels, kept here for the side-by-side figure."""
    return P.photometric(torch.from_numpy(_to_float(_crop_resize(open_image(data), v, (v.out_h, v.out_w)))), v)


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
    "render_geo": lambda d, v: render(open_image(d), v.geometric()),
    "decoded": lambda d, v: render(decode_image(d), v),
    "pil_aug": pil_aug_path,
    "torch_ops": render_torch_ops,
    "v1": render_v1,
}


def time_paths(found: list[Sample], passes: int) -> dict[str, float]:
    """CPU ms per sample of each path: each sample's fastest of ``passes`` calls, averaged."""
    best = {name: np.full(len(found), np.inf) for name in PATHS}
    for _ in range(passes):
        for i, (data, view) in enumerate(found):
            for name, fn in PATHS.items():
                start = time.process_time_ns()
                fn(data, view)
                best[name][i] = min(best[name][i], time.process_time_ns() - start)
    return {name: float(ns.mean()) / 1e6 for name, ns in best.items()}


def _stage_ops(x: np.ndarray, v: ViewSpec) -> list[tuple[str, Callable[[], object]]]:
    """``render``'s photometric steps on ``x`` in order, as (stage name, call) pairs (see renderer.py)."""
    jitter = {0: ("brightness", v.brightness, 1.0, R._brightness_), 1: ("contrast", v.contrast, 1.0, R._contrast_),
              2: ("saturation", v.saturation, 1.0, R._saturation_), 3: ("hue", v.hue, 0.0, R._hue_)}
    state = {"x": x}

    def in_place(fn: Callable[..., None], *args: object) -> Callable[[], None]:
        return lambda: fn(state["x"], *args)

    def replacing(fn: Callable[..., np.ndarray], *args: object) -> Callable[[], None]:
        return lambda: state.update(x=fn(state["x"], *args))
    ops = [(name, in_place(fn, f)) for name, f, ident, fn in (jitter[o] for o in v.jitter_order) if f != ident]
    if v.grayscale:
        ops.append(("grayscale", replacing(R.luma_plane)))
    if v.blur_sigma > 0:
        ops.append(("blur", replacing(R._blur, v.blur_sigma)))
    ops.append(("solarize + clamp" if v.solarize else "clamp", in_place(kernels.finish_, v.solarize)))
    if v.grayscale:
        ops.append(("to 3 channels", replacing(lambda a: np.repeat(a, 3, axis=0))))
    return ops


def stages(found: list[Sample], passes: int) -> dict[str, tuple[float, float]]:
    """Per stage of ``render``: (CPU ms per sample, fraction of samples that run it); fastest pass per sample."""
    best: dict[tuple[int, str], float] = {}

    def clock(i: int, name: str, fn: Callable[[], object]) -> object:
        start = time.process_time_ns()
        out = fn()
        best[i, name] = min(best.get((i, name), math.inf), time.process_time_ns() - start)
        return out
    for _ in range(passes):
        for i, (data, v) in enumerate(found):
            src = clock(i, "open (header)", lambda: open_image(data))
            out = (v.out_h, v.out_w)
            clock(i, "decode", lambda: src.pixels(dct_scale(v, out) if src.scalable else 1))
            img = clock(i, "crop+resize+flip", lambda: _crop_resize(src, v, out))
            x = clock(i, "to float", lambda: _to_float(img))
            for name, fn in _stage_ops(x, v):
                clock(i, name, fn)
    names = list(dict.fromkeys(name for _, name in best))
    return {name: (sum(t for (_, n), t in best.items() if n == name) / len(found) / 1e6,
                   sum(n == name for _, n in best) / len(found)) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", default="500,1000,0",
                        help="longer side of the source JPEGs (px; 0: the photos' own sizes, 300-1411 px)")
    parser.add_argument("--resolutions", default="224", help="view resolutions (px)")
    parser.add_argument("--views", type=int, default=4, help="views per photo")
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--stages", action="store_true", help="also time render stage by stage")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sides = [int(s) for s in args.sides.split(",")]
    print(f"machine: {describe()}")
    print(f"{len(bundled_photos())} photos x {args.views} views; CPU ms per sample (each sample's fastest of "
          f"{args.passes} interleaved calls, averaged)")
    names = list(PATHS)
    print("| source side | views | size | reduced decodes | " + " | ".join(f"{n} (ms)" for n in names)
          + " | render / pil | render_geo / pil | decoded / pil | render / pil_aug | torch_ops / render | v1 / render |")
    print("|---" * (4 + len(names) + 6) + "|")
    for side in sides:
        for resolution in (int(s) for s in args.resolutions.split(",")):
            for label, policy in POLICIES.items():
                print(row(samples(side, resolution, args.views, policy), side, label, resolution, args.passes))
    if args.stages:
        resolution = int(args.resolutions.split(",")[0])
        for label, policy in POLICIES.items():
            print(f"\nrender stage by stage, {sides[0]} px sources, {label} views at {resolution} px:")
            print("| stage | CPU ms per sample | share of samples |\n|---|---|---|")
            timed = stages(samples(sides[0], resolution, args.views, policy), args.passes)
            for name, (ms, used) in timed.items():
                print(f"| {name} | {ms:.3f} | {used:.0%} |")
            print(f"| total | {sum(ms for ms, _ in timed.values()):.3f} | |")


def row(found: list[Sample], side: int, label: str, resolution: int, passes: int) -> str:
    """One table row: times of every path and their ratios, for one source side, view set and size."""
    reduced = sum(dct_scale(v, (resolution, resolution)) > 1 for _, v in found) / len(found)
    for data, v in found:  # the compiled kernels give the torch ops' pixels, bit for bit
        assert torch.equal(PATHS["render"](data, v), PATHS["torch_ops"](data, v)), v
    ms = time_paths(found, passes)
    cells = " | ".join(f"{ms[n]:.2f}" for n in PATHS)
    ratios = [ms["render"] / ms["pil"], ms["render_geo"] / ms["pil"], ms["decoded"] / ms["pil"],
              ms["render"] / ms["pil_aug"], ms["torch_ops"] / ms["render"]]
    where = f"{side} px" if side else "own size"
    return (f"| {where} | {label} | {resolution} px | {reduced:.0%} | {cells} | "
            + " | ".join(f"{r:.2f}x" for r in ratios) + f" | {ms['v1'] / ms['render']:.1f}x |")


if __name__ == "__main__":
    main()
