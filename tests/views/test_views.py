"""Tests for eupe.views: view specs, the sampling policy, decoding and the deterministic renderer.

Uses real photos shipped with scikit-image (astronaut, chelsea, camera), read as bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from eupe.views.policy import ViewPolicy, sample_views, view_rng
from eupe.views.renderer import render, render_views
from eupe.views.source import ImageDecodeError, decode_image
from eupe.views.spec import (IDENTITY_ORDER, VIEW_DIM, VIEW_FIELDS, VIEW_FORMAT_VERSION, ViewSpec, views_from_array,
                             views_to_array)

skimage = pytest.importorskip("skimage")
DATA = Path(skimage.__file__).parent / "data"


def _bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small CPU ops run far faster single-threaded on a busy 2-core box; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return decode_image(_bytes("astronaut.png"))


@pytest.fixture(scope="module")
def chelsea() -> torch.Tensor:
    return decode_image(_bytes("chelsea.png"))


@pytest.fixture(scope="module", params=["astronaut", "chelsea"])
def photo(request) -> torch.Tensor:
    return request.getfixturevalue(request.param)


def _sampled(n: int, seed: int = 0, policy: ViewPolicy | None = None) -> list[ViewSpec]:
    policy = policy or ViewPolicy()
    sizes = [(512, 512), (300, 451), (480, 64), (17, 900)]
    return [policy.sample(view_rng(seed, f"img{i}", i), *sizes[i % len(sizes)]) for i in range(n)]


def _plain(src_h: int = 100, src_w: int = 120, **kw) -> ViewSpec:
    return dataclasses.replace(ViewSpec.full(src_h, src_w, 64, 64), **kw)


# -- ViewSpec serialization ------------------------------------------------------------------------

def test_view_fields_layout():
    assert VIEW_DIM == len(VIEW_FIELDS) == 20
    assert len(set(VIEW_FIELDS)) == VIEW_DIM
    assert VIEW_FIELDS[11:15] == ("jitter_order_0", "jitter_order_1", "jitter_order_2", "jitter_order_3")
    assert isinstance(VIEW_FORMAT_VERSION, int)
    row = _plain(top=3, left=5, height=40, width=50, hue=-0.25, out_h=7, out_w=9).to_array()
    assert row.dtype == np.float64 and row.shape == (VIEW_DIM,)
    col = dict(zip(VIEW_FIELDS, row))
    assert (col["top"], col["left"], col["height"], col["width"], col["hue"]) == (3, 5, 40, 50, -0.25)
    assert (col["out_h"], col["out_w"], col["brightness"]) == (7, 9, 1.0)


def test_round_trip_is_exact_for_many_sampled_views():
    views = _sampled(400)
    arr = views_to_array(views)
    assert arr.shape == (400, VIEW_DIM) and arr.dtype == np.float64
    back = views_from_array(arr)
    assert back == views
    assert np.array_equal(views_to_array(back), arr)
    for v in views[:50]:
        assert ViewSpec.from_array(v.to_array()) == v
        assert ViewSpec.from_array(v.to_array()).to_array().tobytes() == v.to_array().tobytes()
    assert views_to_array([]).shape == (0, VIEW_DIM)
    assert views_from_array(np.zeros((0, VIEW_DIM))) == []


def _with(row: np.ndarray, field: str, value: float) -> np.ndarray:
    row = row.copy()
    row[VIEW_FIELDS.index(field)] = value
    return row


@pytest.mark.parametrize("field, value, named", [
    ("jitter_order_0", 1, "jitter_order"),
    ("jitter_order_3", 4, "jitter_order"),
    ("jitter_order_1", 1.5, "jitter_order"),
    ("top", -1, "top"),
    ("left", 100, "width"),
    ("top", 70, "height"),
    ("height", 0, "height"),
    ("width", -3, "width"),
    ("src_h", 10.5, "src_h"),
    ("out_w", 0, "out_w"),
    ("flip", 0.5, "flip"),
    ("grayscale", 2, "grayscale"),
    ("solarize", -1, "solarize"),
    ("hue", 0.7, "hue"),
    ("brightness", -0.1, "brightness"),
    ("contrast", float("nan"), "contrast"),
    ("blur_sigma", float("inf"), "blur_sigma"),
    ("blur_sigma", -0.01, "blur_sigma"),
])
def test_invalid_arrays_name_the_field(field, value, named):
    good = _plain(top=10, left=20, height=50, width=60).to_array()
    with pytest.raises(ValueError, match=f"'{named}'"):
        ViewSpec.from_array(_with(good, field, value))
    with pytest.raises(ValueError, match=f"row 1: .*'{named}'"):
        views_from_array(np.stack([good, _with(good, field, value)]))


def test_invalid_shapes_and_constructor_validation():
    with pytest.raises(ValueError, match="shape"):
        ViewSpec.from_array(np.zeros(VIEW_DIM - 1))
    with pytest.raises(ValueError, match="shape"):
        views_from_array(np.zeros(VIEW_DIM))
    with pytest.raises(ValueError, match="'jitter_order'"):
        _plain(jitter_order=(0, 1, 2))
    with pytest.raises(ValueError, match="'top'"):
        _plain(top=1.0)
    with pytest.raises(ValueError, match="'flip'"):
        _plain(flip=1)
    assert _plain(jitter_order=[3, 2, 1, 0]).jitter_order == (3, 2, 1, 0)


def test_full_and_with_output():
    v = ViewSpec.full(480, 640, 224, 224)
    assert (v.top, v.left, v.height, v.width) == (0, 0, 480, 640)
    assert not (v.flip or v.grayscale or v.solarize or v.has_jitter) and v.blur_sigma == 0.0
    assert v.jitter_order == IDENTITY_ORDER
    w = v.with_output(448, 336)
    assert (w.out_h, w.out_w) == (448, 336) and (v.out_h, v.out_w) == (224, 224)
    assert dataclasses.replace(w, out_h=224, out_w=224) == v


# -- policy and RNG ----------------------------------------------------------------------------

def test_view_rng_and_sample_views_are_reproducible():
    p = ViewPolicy()
    a = sample_views(p, 7, "n01440764/img_0001.JPEG", 375, 500, 6)
    b = sample_views(p, 7, "n01440764/img_0001.JPEG", 375, 500, 6)
    assert a == b and len(set(a)) == 6
    assert view_rng(1, "k", 2).random(4).tolist() == view_rng(1, "k", 2).random(4).tolist()
    # view i is independent of how many views / which images were drawn before
    assert sample_views(p, 7, "n01440764/img_0001.JPEG", 375, 500, 3) == a[:3]
    assert p.sample(view_rng(7, "n01440764/img_0001.JPEG", 4), 375, 500) == a[4]


def test_views_differ_across_seeds_keys_and_indices():
    base = view_rng(0, "a", 0).random(8)
    for other in (view_rng(1, "a", 0), view_rng(0, "b", 0), view_rng(0, "a", 1), view_rng(0, "a0", 0)):
        assert not np.array_equal(base, other.random(8))
    # no delimiter ambiguity between key and index
    assert not np.array_equal(view_rng(0, "a|1", 2).random(4), view_rng(0, "a", 12).random(4))
    p = ViewPolicy()
    assert sample_views(p, 0, "a", 300, 300, 4) != sample_views(p, 1, "a", 300, 300, 4)
    assert sample_views(p, 0, "a", 300, 300, 4) != sample_views(p, 0, "b", 300, 300, 4)


# The child imports only spec/policy (numpy, no torch: the package itself imports nothing), the same
# sampling code, seconds faster than importing torchvision.
_SUBPROCESS = """
import json, sys
from eupe.views.policy import ViewPolicy, sample_views, view_rng
from eupe.views.spec import views_to_array
views = sample_views(ViewPolicy(), 123, "key/äö.jpg", 333, 444, 5, resolution=224)
print(json.dumps({"views": views_to_array(views).tolist(), "rng": view_rng(-5, "x", 9).random(3).tolist(),
                  "fp": ViewPolicy().fingerprint(), "torch": "torch" in sys.modules}))
"""


def test_reproducible_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-c", _SUBPROCESS], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "random"}, timeout=60)
    got = json.loads(out.stdout)
    views = sample_views(ViewPolicy(), 123, "key/äö.jpg", 333, 444, 5, resolution=224)
    assert np.array_equal(np.asarray(got["views"]), views_to_array(views))
    assert got["rng"] == view_rng(-5, "x", 9).random(3).tolist()
    assert got["fp"] == ViewPolicy().fingerprint()
    assert not got["torch"]  # spec and policy do not need torch


def test_sampled_statistics_respect_the_policy():
    p = ViewPolicy()
    n = 2000
    views = [p.sample(view_rng(3, "stats", i), 480, 640) for i in range(n)]
    frac = lambda pred: sum(map(pred, views)) / n  # noqa: E731
    assert abs(frac(lambda v: v.flip) - 0.5) < 0.05
    assert abs(frac(lambda v: v.has_jitter) - 0.8) < 0.04
    assert abs(frac(lambda v: v.grayscale) - 0.2) < 0.04
    assert abs(frac(lambda v: v.blur_sigma > 0) - 0.5) < 0.05
    assert abs(frac(lambda v: v.solarize) - 0.2) < 0.04
    area = np.array([v.height * v.width / (480 * 640) for v in views])
    assert area.min() >= 0.32 * 0.99 and area.max() <= 1.0
    assert area.max() > 0.95 and area.min() < 0.35  # the whole range is used
    ratio = np.array([v.width / v.height for v in views])
    assert ratio.min() >= 0.75 * 0.99 and ratio.max() <= 4 / 3 * 1.01
    assert all(v.top + v.height <= 480 and v.left + v.width <= 640 for v in views)
    assert len({(v.top, v.left) for v in views}) > n * 0.9
    for v in views:
        assert (v.out_h, v.out_w) == (256, 256)
        if v.has_jitter:
            assert 0.6 <= v.brightness <= 1.4 and 0.6 <= v.contrast <= 1.4
            assert 0.8 <= v.saturation <= 1.2 and -0.1 <= v.hue <= 0.1
        else:
            assert v.jitter_order == IDENTITY_ORDER
        if v.blur_sigma > 0:
            assert 0.1 <= v.blur_sigma * 224 <= 2.0
    assert len({v.jitter_order for v in views if v.has_jitter}) == 24


def test_sampling_extremes_and_fixed_draw_layout():
    never = ViewPolicy(flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0)
    always = ViewPolicy(flip_p=1, jitter_p=1, grayscale_p=1, blur_p=1, solarize_p=1, crop_scale=(1, 1))
    for i in range(50):
        v, w = never.sample(view_rng(0, "x", i), 200, 300), always.sample(view_rng(0, "x", i), 200, 300)
        assert not (v.flip or v.has_jitter or v.grayscale or v.solarize) and v.blur_sigma == 0
        assert w.flip and w.has_jitter and w.grayscale and w.solarize and w.blur_sigma > 0
        assert _box(never, i) == _box(ViewPolicy(), i)  # probabilities never move the crop
    assert ViewPolicy().sample(view_rng(0, "x", 0), 50, 60, resolution=448).out_h == 448
    # extreme aspect ratio: falls back to a centre crop inside the image
    v = ViewPolicy(crop_scale=(0.9, 1.0)).sample(view_rng(0, "thin", 0), 10, 1000)
    assert v.top + v.height <= 10 and v.left + v.width <= 1000


def _box(policy: ViewPolicy, i: int) -> tuple[int, int, int, int]:
    v = policy.sample(view_rng(0, "x", i), 200, 300)
    return v.top, v.left, v.height, v.width


@pytest.mark.parametrize("kw, named", [
    ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
    ({"crop_scale": (0.8, 0.5)}, "crop_scale"),
    ({"crop_scale": (0.5, 1.5)}, "crop_scale"),
    ({"crop_ratio": (-1.0, 1.0)}, "crop_ratio"),
    ({"flip_p": 1.5}, "flip_p"),
    ({"solarize_p": -0.1}, "solarize_p"),
    ({"brightness": -0.4}, "brightness"),
    ({"hue": 0.6}, "hue"),
    ({"blur_sigma": (0.0, 2.0)}, "blur_sigma"),
    ({"blur_sigma": (1.0,)}, "blur_sigma"),
    ({"blur_reference": 0}, "blur_reference"),
    ({"resolution": 256.0}, "resolution"),
    ({"jitter_p": "high"}, "jitter_p"),
])
def test_policy_validation(kw, named):
    with pytest.raises(ValueError, match=named):
        ViewPolicy(**kw)


def test_policy_dict_round_trip_and_fingerprint():
    p = ViewPolicy(flip_p=0.3, blur_sigma=(0.5, 1.5), resolution=224)
    d = json.loads(json.dumps(p.to_dict()))
    assert ViewPolicy.from_dict(d) == p
    assert ViewPolicy.from_dict(d).fingerprint() == p.fingerprint()
    assert ViewPolicy.from_dict({}) == ViewPolicy()
    assert ViewPolicy(flip_p=1) == ViewPolicy(flip_p=1.0)
    assert ViewPolicy(flip_p=1).fingerprint() == ViewPolicy(flip_p=1.0).fingerprint()
    assert ViewPolicy(crop_scale=[0.32, 1]).fingerprint() == ViewPolicy().fingerprint()
    fp = ViewPolicy().fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert ViewPolicy(solarize_p=0.0).fingerprint() != fp
    with pytest.raises(ValueError, match="bogus"):
        ViewPolicy.from_dict({"flip_p": 0.5, "bogus": 1})


def test_policy_reads_the_old_out_size_key():
    """``out_size`` (before the rename to ``resolution``) still reads, in configs and in stores."""
    p = ViewPolicy(flip_p=0.3, resolution=224)
    assert p.to_dict()["resolution"] == 224 and "out_size" not in p.to_dict()
    old = {("out_size" if k == "resolution" else k): v for k, v in p.to_dict().items()}
    assert ViewPolicy.from_dict(old) == p and ViewPolicy.from_dict({"out_size": 96}).resolution == 96
    old_sha = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert old_sha != p.fingerprint()
    assert ViewPolicy.from_stored(old, old_sha) == p  # a store written before the rename still opens
    with pytest.raises(ValueError, match="sha256"):
        ViewPolicy.from_stored({**old, "out_size": 256}, old_sha)
    with pytest.raises(ValueError, match="same field"):
        ViewPolicy.from_dict({"out_size": 224, "resolution": 224})
    with pytest.raises(ValueError, match="resolution"):
        ViewPolicy.from_dict({"out_size": 0})


# -- rendering -------------------------------------------------------------------------------------

def test_render_is_deterministic_and_round_trips(photo):
    views = sample_views(ViewPolicy(), 0, "det", *photo.shape[1:], 6)
    views[0] = dataclasses.replace(views[0], grayscale=True, blur_sigma=0.01, solarize=True)
    for v in views:
        a, b = render(photo, v), render(photo, v)
        assert a.dtype == torch.float32 and a.shape == (3, 256, 256)
        assert torch.equal(a, b)
        assert torch.equal(render(photo, ViewSpec.from_array(v.to_array())), a)
        assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    stacked = render_views(photo, views, size=(96, 128))
    assert stacked.shape == (6, 3, 96, 128)
    assert torch.equal(stacked[2], render(photo, views[2], (96, 128)))
    again = render_views(photo, views_from_array(views_to_array(views)))
    assert torch.equal(again, render_views(photo, views))


def test_same_content_at_256_and_448(photo):
    no_sol = sample_views(ViewPolicy(solarize_p=0.0), 5, "res", *photo.shape[1:], 5)
    blurred = [dataclasses.replace(v, blur_sigma=2.0 / 224) for v in no_sol[:3]]
    solarized = sample_views(ViewPolicy(solarize_p=1.0, blur_p=1.0), 6, "res", *photo.shape[1:], 2)
    for v in no_sol + blurred + solarized:
        small = render(photo, v, 256)
        big = render(photo, v, 448)
        assert big.shape == (3, 448, 448)
        down = F.resize(big, [256, 256], antialias=True)
        assert float((down - small).abs().mean()) < 0.02
        assert _corr(down, small) > 0.99


def test_relative_blur_is_actually_applied(astronaut):
    v = ViewSpec.full(512, 512, 256, 256)
    sharp, soft = render(astronaut, v), render(astronaut, dataclasses.replace(v, blur_sigma=4.0 / 256))
    high_freq = lambda x: float((x[..., 1:] - x[..., :-1]).abs().mean())  # noqa: E731
    assert high_freq(soft) < 0.5 * high_freq(sharp)
    assert abs(float(soft.mean()) - float(sharp.mean())) < 0.01


def test_flip_mirrors_the_render(photo):
    for v in sample_views(ViewPolicy(flip_p=0.0, blur_p=1.0), 1, "flip", *photo.shape[1:], 4):
        flipped = render(photo, dataclasses.replace(v, flip=True))
        assert not torch.equal(flipped, render(photo, v))
        torch.testing.assert_close(flipped, torch.flip(render(photo, v), dims=[-1]), atol=1e-6, rtol=0)


def test_full_view_equals_plain_resize(photo):
    """Renderer 2 resizes with PIL's antialiased bilinear in uint8 (renderer 1 resized in float32 with
    torch): the full view is exactly PIL's resize, and within a rounding step of the float resize."""
    h, w = photo.shape[1:]
    got = render(photo, ViewSpec.full(h, w, 200, 300))
    pil = Image.fromarray(photo.permute(1, 2, 0).numpy()).resize((300, 200), Image.Resampling.BILINEAR)
    assert torch.equal(got, torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255.0)
    float_resize = F.resize(photo.float() / 255.0, [200, 300], antialias=True)
    assert float((got - float_resize).abs().max()) <= 1.0 / 255.0
    assert float((got - float_resize).abs().mean()) < 0.5 / 255.0


def test_crop_box_and_photometric_ops_values(astronaut):
    base = _plain(512, 512, top=100, left=40, height=64, width=80, out_h=64, out_w=80)
    pixels = astronaut[:, 100:164, 40:120].float() / 255.0
    torch.testing.assert_close(render(astronaut, base), pixels, atol=1e-6, rtol=0)  # no resampling
    torch.testing.assert_close(render(astronaut, dataclasses.replace(base, brightness=0.5)),
                               pixels * 0.5, atol=1e-6, rtol=0)
    gray = render(astronaut, dataclasses.replace(base, grayscale=True))
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    torch.testing.assert_close(gray[0], 0.2989 * pixels[0] + 0.587 * pixels[1] + 0.114 * pixels[2],
                               atol=1e-3, rtol=0)
    plain = render(astronaut, base)
    sol = render(astronaut, dataclasses.replace(base, solarize=True))
    assert torch.equal(sol, torch.where(plain >= 0.5, 1.0 - plain, plain))
    jit = dict(brightness=1.4, contrast=0.6, saturation=1.2, hue=0.1)
    a = render(astronaut, dataclasses.replace(base, **jit, jitter_order=(0, 1, 2, 3)))
    b = render(astronaut, dataclasses.replace(base, **jit, jitter_order=(3, 2, 1, 0)))
    assert float((a - b).abs().max()) > 0.05  # the order is honoured


def test_render_rejects_mismatched_images(astronaut):
    v = ViewSpec.full(300, 451, 64, 64)
    with pytest.raises(ValueError, match=r"512x512.*300x451"):
        render(astronaut, v)
    with pytest.raises(ValueError, match="uint8"):
        render(astronaut.float(), ViewSpec.full(512, 512, 64, 64))


# -- decoding --------------------------------------------------------------------------------------

def test_decode_png_and_jpeg():
    png = decode_image(_bytes("astronaut.png"))
    ref = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))
    assert png.dtype == torch.uint8 and png.shape == (3, 512, 512)
    assert np.array_equal(png.permute(1, 2, 0).numpy(), ref)
    jpg = decode_image(_encode(Image.fromarray(ref), "JPEG", quality=95))
    assert jpg.dtype == torch.uint8 and jpg.shape == (3, 512, 512)
    assert float((jpg.float() - png.float()).abs().mean()) < 4.0
    cat = decode_image(_bytes("chelsea.png"))
    assert cat.shape == (3, 300, 451)


def test_decode_grayscale_rgba_palette_cmyk_16bit():
    gray = decode_image(_bytes("camera.png"))
    assert gray.shape == (3, 512, 512) and gray.dtype == torch.uint8
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])
    assert np.array_equal(gray[0].numpy(), np.asarray(Image.open(DATA / "camera.png")))
    rgb = Image.open(DATA / "chelsea.png").convert("RGB")
    rgba = rgb.copy()
    rgba.putalpha(128)
    assert torch.equal(decode_image(_encode(rgba, "PNG")), decode_image(_encode(rgb, "PNG")))
    pal = decode_image(_encode(rgb.convert("P"), "PNG"))
    assert pal.shape == (3, 300, 451) and float(pal.float().std()) > 10
    cmyk = decode_image(_encode(rgb.convert("CMYK"), "JPEG", quality=95))
    assert cmyk.shape == (3, 300, 451)
    assert float((cmyk.float() - decode_image(_encode(rgb, "PNG")).float()).abs().mean()) < 6.0
    deep = np.asarray(Image.open(DATA / "camera.png")).astype(np.uint16) * 257
    wide = decode_image(_encode(Image.fromarray(deep), "PNG"))
    assert torch.equal(wide[0], gray[0])


def test_decode_applies_exif_orientation():
    rgb = Image.open(DATA / "chelsea.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(_encode(rgb, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.shape == (3, 451, 300)
    plain = decode_image(_encode(rgb, "JPEG", quality=95))
    assert float((out.float() - torch.rot90(plain, k=-1, dims=(1, 2)).float()).abs().mean()) < 2.0


@pytest.mark.parametrize("make", [
    lambda: _encode(Image.open(DATA / "chelsea.png").convert("RGB"), "JPEG")[:5000],
    lambda: _bytes("astronaut.png")[:20000],
    lambda: b"this is not an image at all" * 10,
    lambda: b"",
    lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
])
def test_decode_rejects_truncated_and_garbage_bytes(make):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(make())
    assert isinstance(info.value, ValueError) and info.value.reason
