"""Tests for lazy sources, reduced-size JPEG decoding, the pixel limit and the renderer version.

Real photos shipped with scikit-image, re-encoded as JPEGs at realistic sizes (1024 px).
"""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from eupe.views.photometric import (adjust_hue, adjust_hue_, brightness_, contrast_, gaussian_blur, grayscale,
                                    saturation_, solarize)
from eupe.views.policy import ViewPolicy, sample_views
from eupe.views.renderer import dct_scale, render, render_views
from eupe.views.source import DEFAULT_MAX_PIXELS, ImageDecodeError, SourceImage, decode_image, open_image
from eupe.views.spec import RENDERER_VERSION, ViewSpec

skimage = pytest.importorskip("skimage")
DATA = Path(skimage.__file__).parent / "data"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """The astronaut at 1024x1024 as a quality-90 JPEG (a realistic training image size)."""
    img = Image.open(DATA / "astronaut.png").convert("RGB").resize((1024, 1024), Image.Resampling.BICUBIC)
    return _encode(img, "JPEG", quality=90)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` gray pixels, with a few rows of data only."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(bytes(width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# -- reduced-size decoding -------------------------------------------------------------------------

def test_reduced_decode_is_used_and_agrees_with_the_full_decode(big_jpeg):
    src, full = open_image(big_jpeg), decode_image(big_jpeg)
    assert src.shape == (3, 1024, 1024) and isinstance(src, SourceImage)
    views = sample_views(ViewPolicy(), 0, "big", 1024, 1024, 8, resolution=224)
    scales = [dct_scale(v, (224, 224)) for v in views]
    assert set(scales) == {2}  # crops of 0.32..1 of 1024 px: half-size decode is still >= 224
    for v in views:
        reduced, exact = render(src, v), render(full, v)
        assert float((reduced - exact).abs().mean()) < 0.003  # < 1 grey level on average
        assert _corr(reduced, exact) > 0.999
    assert src.pixels(2).size == (512, 512)  # what was decoded: the half-size image
    progressive = _encode(Image.open(io.BytesIO(big_jpeg)), "JPEG", quality=90, progressive=True)
    prog = open_image(progressive)
    assert _corr(render(prog, views[0]), render(decode_image(progressive), views[0])) > 0.999
    assert prog.pixels(2).size == (512, 512)
    assert dct_scale(views[0], (448, 448)) == 1 and dct_scale(views[0], (64, 64)) == 8


def test_dct_scale_keeps_the_crop_at_least_the_output_size():
    v = dataclasses.replace(ViewSpec.full(1000, 1000, 224, 224), height=900, width=450)
    assert dct_scale(v, (224, 224)) == 2  # 450 / 2 >= 224 but 450 / 4 < 224
    assert dct_scale(v, (100, 100)) == 4 and dct_scale(v, (56, 56)) == 8 and dct_scale(v, (226, 226)) == 1


def test_same_pixels_from_source_and_tensor_without_reduction(photo_bytes):
    """PNGs, and JPEG views too small for a reduced decode, render bit-identically either way."""
    src, pixels = open_image(photo_bytes), decode_image(photo_bytes)
    assert torch.equal(src.decode(), pixels)
    views = sample_views(ViewPolicy(), 3, "same", *src.shape[1:], 6)
    for v in views:
        if src.scalable and dct_scale(v, (v.out_h, v.out_w)) > 1:
            continue
        assert torch.equal(render(src, v), render(pixels, v))
    if not src.scalable:
        assert torch.equal(render_views(src, views, 96), render_views(pixels, views, 96))


@pytest.fixture(params=["astronaut.png", "chelsea_jpeg"])
def photo_bytes(request) -> bytes:
    if request.param.endswith(".png"):
        return (DATA / request.param).read_bytes()
    return _encode(Image.open(DATA / "chelsea.png").convert("RGB"), "JPEG", quality=90)


def test_render_is_independent_of_what_was_decoded_before(big_jpeg):
    views = sample_views(ViewPolicy(), 1, "order", 1024, 1024, 4)
    fresh = [render(open_image(big_jpeg), v, 224) for v in views]
    shared = open_image(big_jpeg)
    render(shared, views[0], 448)  # decodes at full size first
    render(shared, views[1], 64)   # and at 1/8
    assert all(torch.equal(render(shared, v, 224), f) for v, f in zip(views, fresh))
    clone = pickle.loads(pickle.dumps(shared))
    assert clone._decoded == {} and clone.shape == shared.shape  # pickles as bytes only
    assert torch.equal(render(clone, views[2], 224), fresh[2])


def test_reduced_decode_applies_exif_orientation(big_jpeg):
    img = Image.open(io.BytesIO(big_jpeg)).crop((0, 0, 1024, 700))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated = open_image(_encode(img, "JPEG", quality=90, exif=exif.tobytes()))
    plain = decode_image(_encode(img, "JPEG", quality=90))
    assert rotated.shape == (3, 1024, 700)
    v = ViewSpec.full(1024, 700, 256, 128)
    assert dct_scale(v, (256, 128)) == 4
    want = render(torch.rot90(plain, k=-1, dims=(1, 2)).contiguous(), v)
    assert float((render(rotated, v) - want).abs().mean()) < 0.01


def test_corrupt_jpeg_is_refused_when_its_pixels_are_decoded(big_jpeg):
    src = open_image(big_jpeg[: len(big_jpeg) // 2])  # the header is intact
    with pytest.raises(ImageDecodeError, match="truncated"):
        render(src, ViewSpec.full(1024, 1024, 224, 224))
    with pytest.raises(ImageDecodeError):
        decode_image(big_jpeg[: len(big_jpeg) // 2])


# -- the pixel limit -------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns on the header too
def test_huge_images_are_refused_before_decoding():
    bomb = _png_header_only(10000, 10000)  # 100 Mpx of gray: 300 MB as RGB; the body is truncated
    assert len(bomb) < 200
    for fn in (decode_image, open_image):
        with pytest.raises(ImageDecodeError) as info:
            fn(bomb)
        assert "10000x10000" in info.value.reason and f"{DEFAULT_MAX_PIXELS:,}" in info.value.reason
        assert "refused before decoding" in info.value.reason


def test_pixel_limit_is_configurable():
    png = (DATA / "chelsea.png").read_bytes()  # 451 x 300 = 135,300 pixels
    with pytest.raises(ImageDecodeError, match=r"451x300 = 135,300 pixels, above the limit of 135,299"):
        decode_image(png, max_pixels=135_299)
    assert decode_image(png, max_pixels=135_300).shape == (3, 300, 451)
    assert open_image(png, max_pixels=None).shape == (3, 300, 451)
    for bad in (0, -5, True, 1.5):
        with pytest.raises(ValueError, match="max_pixels"):
            open_image(png, max_pixels=bad)


def test_pil_decompression_bomb_becomes_a_decode_error():
    with pytest.raises(ImageDecodeError, match="decompression-bomb") as info:
        decode_image(_png_header_only(20000, 20000), max_pixels=None)  # 400 Mpx: over PIL's own limit
    assert "400000000" in info.value.reason


# -- renderer version --------------------------------------------------------------------------------

def test_renderer_version_is_part_of_the_policy_identity():
    p = ViewPolicy()
    assert p.to_dict()["renderer"] == RENDERER_VERSION == 2
    old = {k: v for k, v in p.to_dict().items() if k != "renderer"}  # what renderer-1 stores recorded
    assert ViewPolicy.from_dict(old) == p  # a config without the key means this renderer
    with pytest.raises(ValueError, match="renderer 1 cannot be reproduced"):
        ViewPolicy.from_stored(old)  # a store without the key was made by renderer 1
    assert ViewPolicy.from_stored(p.to_dict(), p.fingerprint()) == p
    with pytest.raises(ValueError, match="sha256"):
        ViewPolicy.from_stored({**p.to_dict(), "flip_p": 0.0}, p.fingerprint())
    with pytest.raises(ValueError, match="renderer"):
        ViewPolicy(renderer=1)
    import hashlib
    import json
    old_fp = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert p.fingerprint() != old_fp  # a renderer-1 store's recorded sha256 no longer matches


# -- photometric ops -----------------------------------------------------------------------------------

@pytest.mark.parametrize("hue", [0.1, -0.1, 0.37, -0.5, 0.5])
def test_hue_matches_torchvision(hue):
    x = render(decode_image((DATA / "chelsea.png").read_bytes()), ViewSpec.full(300, 451, 96, 128))
    x[:, :8, :8] = 0.5  # grey pixels keep their value
    got = adjust_hue(x, hue)
    torch.testing.assert_close(got, F.adjust_hue(x, hue), atol=3e-6, rtol=0)
    assert torch.equal(got[:, :8, :8], x[:, :8, :8])
    assert float((got - x).abs().mean()) > 0.01


@pytest.mark.parametrize("radius, sigma", [(1, 0.3), (6, 2.0), (12, 4.0)])
def test_separable_blur_matches_torchvision(radius, sigma):
    x = render(decode_image((DATA / "astronaut.png").read_bytes()), ViewSpec.full(512, 512, 64, 80))
    k = 2 * radius + 1
    torch.testing.assert_close(gaussian_blur(x, radius, sigma), F.gaussian_blur(x, [k, k], [sigma, sigma]),
                               atol=3e-6, rtol=0)


def test_solarize_is_bit_identical_to_torchvision():
    x = render(decode_image((DATA / "astronaut.png").read_bytes()), ViewSpec.full(512, 512, 64, 64))
    x[0, 0, :5] = torch.tensor([0.5, 0.25, 1.0, 0.0, 0.4999999])
    for threshold in (0.5, 0.3, 0.1):
        assert torch.equal(solarize(x, threshold), F.solarize(x, threshold))
    assert float(solarize(x, 0.5)[0, 0, 0]) == 0.5 and float(solarize(x, 0.5)[0, 0, 2]) == 0.0


@pytest.mark.parametrize("factor", [0.6, 0.93, 1.0, 1.4])
def test_in_place_colour_ops_are_torchvision_bit_for_bit(factor):
    """The renderer's in-place brightness/contrast/saturation/luma repeat torchvision's float ops exactly."""
    x = render(decode_image((DATA / "chelsea.png").read_bytes()), ViewSpec.full(300, 451, 96, 128))
    for mine, theirs in ((brightness_, F.adjust_brightness), (contrast_, F.adjust_contrast),
                         (saturation_, F.adjust_saturation)):
        y = x.clone()
        assert mine(y, factor) is y  # in place
        assert torch.equal(y, theirs(x, factor)), mine.__name__
    assert torch.equal(grayscale(x), F.rgb_to_grayscale(x)[0])
    if factor != 1.0:
        assert not torch.equal(brightness_(x.clone(), factor), x)


def test_hue_in_place_equals_the_copy():
    x = render(decode_image((DATA / "astronaut.png").read_bytes()), ViewSpec.full(512, 512, 64, 80))
    before = x.clone()
    shifted = adjust_hue(x, 0.2)
    assert torch.equal(x, before)  # adjust_hue leaves its input alone
    y = x.clone()
    assert adjust_hue_(y, 0.2) is y and torch.equal(y, shifted)


def _reference_render(pixels: torch.Tensor, v: ViewSpec) -> torch.Tensor:
    """Renderer 2 as first written: float crop of the PIL resize, torchvision ops on [3, h, w] tensors."""
    box = pixels[:, v.top:v.top + v.height, v.left:v.left + v.width].permute(1, 2, 0).numpy()
    img = Image.fromarray(np.ascontiguousarray(box)).resize((v.out_w, v.out_h), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255.0)
    x = x.flip(-1) if v.flip else x
    ops = {0: (v.brightness, 1.0, F.adjust_brightness), 1: (v.contrast, 1.0, F.adjust_contrast),
           2: (v.saturation, 1.0, F.adjust_saturation), 3: (v.hue, 0.0, adjust_hue)}
    for op in v.jitter_order:
        factor, identity, fn = ops[op]
        x = fn(x, factor) if factor != identity else x
    x = F.rgb_to_grayscale(x, num_output_channels=3) if v.grayscale else x
    sigma = v.blur_sigma * min(v.out_h, v.out_w)
    radius = min(math.ceil(3.0 * sigma), min(v.out_h, v.out_w) - 1)
    x = gaussian_blur(x, radius, sigma) if sigma > 0 and radius >= 1 else x
    x = solarize(x, 0.5) if v.solarize else x
    return x.clamp(0.0, 1.0).contiguous()


def test_render_is_still_renderer_2_bit_for_bit():
    """Planar conversion, in-place ops and one-plane grayscale changed no pixel (RENDERER_VERSION stays 2)."""
    pixels = decode_image((DATA / "chelsea.png").read_bytes())
    every = ViewPolicy(jitter_p=1.0, grayscale_p=0.3, blur_p=1.0, solarize_p=0.5)
    views = sample_views(every, 4, "v2", 300, 451, 12, resolution=96) + sample_views(ViewPolicy(), 5, "v2", 300, 451, 4)
    views[0] = dataclasses.replace(views[0], grayscale=True, blur_sigma=0.02)  # one luma plane blurred
    assert {v.grayscale for v in views} == {True, False} and all(v.blur_sigma > 0 for v in views[:12])
    for v in views:
        assert torch.equal(render(pixels, v), _reference_render(pixels, v)), v
