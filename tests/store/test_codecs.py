"""Feature codecs: round trips within tolerance, slicing, serialisation, edge cases, zarr storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eupe.registry import Registry, UnknownNameError
from eupe.store.codecs.haar import HaarCodec, grid_shape, haar_forward, haar_inverse, haar_matrix
from eupe.store.codecs.metrics import fidelity, smooth_l1, token_cosine
from eupe.store.codecs.registry import CODECS, codec_from_dict, get_codec
from eupe.store.codecs.storage import stored_nbytes, zarr_compressors
from eupe.store.codecs.tokenint import TokenIntCodec

LOSSY = [n for n in CODECS if n != "fp16"]


def synthetic_features(views: int = 3, grid: tuple[int, int] = (16, 16), dim: int = 192,
                       outliers: tuple[int, ...] = (5, 77, 150), seed: int = 0) -> np.ndarray:
    """ViT-like tokens [views, h*w, dim]: channel means + spatially smooth field + noise, a few channels x50."""
    rng = np.random.default_rng(seed)
    h, w = grid
    mean = rng.normal(0, 1, dim)
    coarse = rng.normal(0, 1, (views, (h + 3) // 4, (w + 3) // 4, dim))
    field = coarse.repeat(4, 1).repeat(4, 2)[:, :h, :w]
    field = 0.5 * (field + np.roll(field, 1, 1))
    field = 0.5 * (field + np.roll(field, 1, 2))
    x = mean + field + rng.normal(0, 0.4, (views, h, w, dim))
    x[..., list(outliers)] *= 50.0
    return x.reshape(views, h * w, dim).astype(np.float32)


@pytest.fixture(scope="module")
def feats() -> np.ndarray:
    return synthetic_features()


@pytest.fixture(scope="module")
def encoded(feats) -> dict[str, dict[str, np.ndarray]]:
    return {name: get_codec(name).encode(feats) for name in CODECS}


# -- quality -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CODECS))
@pytest.mark.parametrize("outliers", [(5, 77, 150), ()], ids=["outliers", "plain"])
def test_round_trip_within_tolerance(name, outliers):
    codec = get_codec(name)
    x = synthetic_features(outliers=outliers, seed=1)
    cos = token_cosine(x, codec.decode(codec.encode(x)))
    assert cos.mean() >= codec.tolerance, (name, cos.mean(), codec.tolerance)
    assert codec.min_cosine == codec.tolerance


def test_fp16_near_exact(feats, encoded):
    y = get_codec("fp16").decode(encoded["fp16"])
    np.testing.assert_allclose(y, feats, rtol=1e-3, atol=1e-3)
    assert token_cosine(feats, y).min() > 0.999999


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_codecs_are_lossy_but_bounded(name, feats, encoded):
    y = get_codec(name).decode(encoded[name])
    assert y.dtype == np.float32 and y.shape == feats.shape
    rel = np.linalg.norm(y - feats, axis=-1) / np.linalg.norm(feats, axis=-1)
    assert rel.mean() > 1e-4          # actually lossy
    assert rel.mean() < 0.3           # but bounded
    assert token_cosine(feats, y).mean() > 0.97


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = x.reshape(-1, x.shape[-1])
    return flat.mean(0), flat.std(0)


def test_fidelity_reports_raw_and_normalized_cosine_and_smooth_l1():
    x = np.array([[[1.0, 10.0], [3.0, 10.0]]])          # channel 1 is constant-ish, big
    y = np.array([[[1.0, 10.5], [3.0, 9.5]]])           # error only in channel 1
    mean, std = np.array([2.0, 10.0]), np.array([1.0, 0.5])
    f = fidelity(x, y, mean, std)
    # raw: tokens (1,10)/(1,10.5) and (3,10)/(3,9.5); normalized: (-1,0)/(-1,1) and (1,0)/(1,-1)
    raw = [(1 + 105) / np.sqrt(101 * 111.25), (9 + 95) / np.sqrt(109 * 99.25)]
    assert f["raw_cosine"] == pytest.approx(np.mean(raw), abs=1e-12)
    assert f["raw_cosine_min"] == pytest.approx(min(raw), abs=1e-12)
    assert f["norm_cosine"] == pytest.approx(1 / np.sqrt(2), abs=1e-12) == f["norm_cosine_min"]
    assert f["smooth_l1"] == pytest.approx(0.25, abs=1e-12)   # |d| = 1 on 2 of 4 values: 0.5 * 1 each
    zt, za = torch.randn(3, 5, 4) * 2, torch.randn(3, 5, 4) * 2
    torch_value = torch.nn.functional.smooth_l1_loss(za.double(), zt.double()).item()
    assert smooth_l1(zt.numpy(), za.numpy()) == pytest.approx(torch_value, rel=1e-12)
    with pytest.raises(ValueError, match="std"):
        fidelity(x, y, mean, np.array([1.0, 0.0]))


@pytest.mark.parametrize("factor", [1.0, 100.0])
def test_compact_keeps_normalized_cosine_with_outlier_channels(factor):
    """A few channels 100x larger (PE-lang has no final norm): per-channel steps keep what the loss sees."""
    x = synthetic_features(views=4, dim=256, outliers=(), seed=5)
    x[..., [3, 100, 200]] *= factor
    mean, std = _stats(x)
    fid = {n: fidelity(x, get_codec(n).decode(get_codec(n).encode(x)), mean, std) for n in ("compact", "int8")}
    # white error of alpha**2/12 per channel-scaled value: 1 - cos ~ alpha**2/24 * chscale**2/std**2,
    # about 2 alpha**2/24 = 0.001 on these features whose channel means are as large as their spread
    assert fid["compact"]["norm_cosine"] >= 0.9985 and fid["compact"]["norm_cosine_min"] >= 0.997
    assert fid["compact"]["smooth_l1"] < 0.0012
    plain = synthetic_features(views=4, dim=256, outliers=(), seed=5)
    same = fidelity(plain, get_codec("compact").decode(get_codec("compact").encode(plain)), *_stats(plain))
    assert fid["compact"]["norm_cosine"] == pytest.approx(same["norm_cosine"], abs=1e-6)  # outliers change nothing
    if factor == 100.0:  # per-token absmax (int8) puts its whole range on the outliers
        assert fid["int8"]["norm_cosine"] < 0.99 < fid["int8"]["raw_cosine"]
    else:
        assert fid["int8"]["norm_cosine"] > 0.9999


def test_normalized_cosine_is_what_the_step_alpha_sets(feats, encoded):
    mean, std = _stats(feats)
    norm = {n: fidelity(feats, get_codec(n).decode(encoded[n]), mean, std)["norm_cosine"] for n in CODECS}
    size = {n: stored_nbytes(encoded[n], chunks_views=3) for n in CODECS}
    assert norm["compact"] >= 0.998 > norm["int8"]        # feats have 3 channels x50
    assert norm["tiny"] >= 0.985 > norm["int6"]
    assert size["tiny"] < size["compact"] < size["fp16"]
    assert size["int4"] < size["int6"] < size["int8"] < size["fp16"]
    for name in ("compact", "tiny"):   # white error in channel-scaled units: 1 - cos ~ alpha**2 / 24 x (1..2.5)
        alpha = get_codec(name).alpha
        assert alpha ** 2 / 24 < 1 - norm[name] < 2.5 * alpha ** 2 / 24, name


# -- shapes, slicing, determinism ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CODECS))
def test_components_describe_encode_output(name, feats, encoded):
    codec = get_codec(name)
    spec = codec.components(feats.shape[1], feats.shape[2])
    parts = encoded[name]
    assert set(spec) == set(parts)
    for key, (dtype, suffix) in spec.items():
        assert parts[key].dtype == dtype, key
        assert parts[key].shape == (feats.shape[0], *suffix), key


@pytest.mark.parametrize("name", list(CODECS))
def test_decode_of_a_slice_equals_slice_of_full_decode(name, encoded):
    codec = get_codec(name)
    full = codec.decode(encoded[name])
    for index in (1, slice(0, 2), slice(2, 3)):
        part = codec.decode({k: v[index] for k, v in encoded[name].items()})
        np.testing.assert_array_equal(part, full[index])


@pytest.mark.parametrize("name", list(CODECS))
def test_nested_leading_axes(name, feats):
    codec = get_codec(name)
    x = np.stack([feats[:2], feats[1:]])  # [2 images, 2 views, T, D]
    parts = codec.encode(x)
    y = codec.decode(parts)
    assert y.shape == x.shape
    np.testing.assert_array_equal(codec.decode({k: v[1, 0] for k, v in parts.items()}), y[1, 0])
    flat = codec.decode(codec.encode(feats[1:2]))[0]
    np.testing.assert_array_equal(y[0, 1], flat)  # the same view encodes the same whatever its batch


@pytest.mark.parametrize("name", list(CODECS))
def test_encode_is_deterministic(name, feats, encoded):
    again = get_codec(name).encode(feats.copy())
    for key, value in encoded[name].items():
        np.testing.assert_array_equal(again[key], value)


@pytest.mark.parametrize("name", list(CODECS))
def test_summary_vector_is_one_token(name, feats):
    codec = get_codec(name)
    x = feats[:, :1]
    parts = codec.encode(x)
    assert set(codec.components(1, x.shape[-1])) == set(parts)
    assert token_cosine(x, codec.decode(parts)).min() >= codec.tolerance


@pytest.mark.parametrize("name", list(CODECS))
def test_every_component_starts_with_the_token_axis_or_is_a_view_row(name):
    for name_, (_, suffix) in get_codec(name).components(7, 5).items():
        assert suffix[0] == 7 or suffix == (1, 5), name_


@pytest.mark.parametrize("name", list(CODECS))
def test_vectors_stored_without_token_axis(name, feats):
    codec = get_codec(name)
    x = feats[:, 0].reshape(1, 3, -1)  # [images, views, D], as summary tokens are stored
    parts = codec.encode_vector(x)
    spec = codec.vector_components(x.shape[-1])
    assert {n: (p.dtype, p.shape) for n, p in parts.items()} == {n: (dt, (1, 3, *sfx)) for n, (dt, sfx) in spec.items()}
    full = codec.decode_vector(parts)
    assert full.shape == x.shape and token_cosine(x, full).min() >= codec.tolerance
    for index in ((0, 1), (0, slice(1, 3)), 0):
        np.testing.assert_array_equal(codec.decode_vector({n: p[index] for n, p in parts.items()}), full[index])


@pytest.mark.parametrize("tokens", [1, 7, 24, 100, 257])
def test_haar_codec_any_token_count(tokens):
    x = synthetic_features(views=2, grid=(1, tokens), dim=64, outliers=(3,), seed=2)
    for codec in (get_codec("compact"), get_codec("tiny")):
        assert token_cosine(x, codec.decode(codec.encode(x))).mean() >= codec.tolerance


# -- edge cases -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CODECS))
def test_zero_and_constant_tokens_give_no_nan(name):
    codec = get_codec(name)
    x = synthetic_features(views=3, dim=64, outliers=(), seed=3)
    x[0] = 0.0                    # an all-zero view
    x[1, :5] = 0.0                # a few zero tokens
    x[1, 5:9] = 3.0               # constant tokens
    x[2] = -2.5                   # a constant view
    y = codec.decode(codec.encode(x))
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y[0], 0.0)
    if isinstance(codec, HaarCodec):  # the view mean is added back: zero tokens come back near zero
        assert np.abs(y[1, :5]).mean() < 0.1 * np.abs(x[1]).mean()
    else:
        np.testing.assert_array_equal(y[1, :5], 0.0)
    assert token_cosine(x[1, 5:9], y[1, 5:9]).min() > 0.97  # lossy like any other token
    np.testing.assert_allclose(y[2], -2.5, rtol=0.02)       # a constant view stays constant
    assert token_cosine(x[2], y[2]).min() > 0.99999


@pytest.mark.parametrize("name", list(CODECS))
def test_non_finite_input_raises(name):
    x = np.ones((2, 4, 8), np.float32)
    x[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        get_codec(name).encode(x)


def test_fp16_overflow_raises():
    with pytest.raises(ValueError, match="overflows float16"):
        get_codec("fp16").encode(np.full((1, 2, 4), 1e6, np.float32))


def test_large_haar_codes_use_the_high_byte_exactly():
    codec = HaarCodec("compact", alpha=0.02, levels=4)
    x = synthetic_features(views=2, dim=32, outliers=(1,), seed=4)
    parts = codec.encode(x)
    q = parts["codes"].astype(np.int32) + 256 * parts["codes_hi"].astype(np.int32)
    assert np.abs(q).max() > 127 and parts["codes_hi"].any()
    y = codec.decode(parts)
    assert fidelity(x, y, *_stats(x))["norm_cosine"] >= 1 - codec.alpha ** 2 / 8


# -- serialisation and registry ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CODECS))
def test_to_dict_from_dict_round_trip(name):
    codec = get_codec(name)
    d = json.loads(json.dumps(codec.to_dict()))
    assert d["name"] == name
    assert codec_from_dict(d) == codec


def test_from_dict_is_strict():
    d = get_codec("compact").to_dict()
    with pytest.raises(ValueError, match="bogus"):
        codec_from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="alpha"):
        codec_from_dict({k: v for k, v in d.items() if k != "alpha"})
    with pytest.raises(ValueError, match="int9.*valid names.*fp16"):
        codec_from_dict({**d, "name": "int9"})
    with pytest.raises(ValueError, match="version"):
        codec_from_dict({**d, "version": 99})
    with pytest.raises(ValueError, match="family"):
        codec_from_dict({**get_codec("int8").to_dict(), "family": "haar"})
    with pytest.raises(ValueError, match="bits"):
        codec_from_dict({**get_codec("int8").to_dict(), "bits": 12})


def test_custom_parameters_survive_serialisation():
    codec = HaarCodec("compact", alpha=0.2, levels=2)
    assert codec_from_dict(codec.to_dict()) == codec
    assert codec.tolerance < get_codec("compact").tolerance
    assert TokenIntCodec("int6", bits=5).to_dict()["bits"] == 5


def test_get_codec_unknown_name_lists_valid_names():
    assert isinstance(CODECS, Registry) and CODECS.names() == ["fp16", "int8", "int6", "int4", "compact", "tiny"]
    with pytest.raises(UnknownNameError) as err:
        get_codec("int3")
    assert str(err.value) == "unknown codec 'int3'; valid names: fp16, int8, int6, int4, compact, tiny"


def test_codecs_module_does_not_import_torch():
    """The registry, every family and the numpy path import and run in a fresh interpreter without torch."""
    import subprocess
    import sys

    code = ("import sys, numpy; from eupe.store.codecs.registry import get_codec, codec_names; "
            "[get_codec(n).decode(get_codec(n).encode(numpy.ones((4, 8), 'float32'))) for n in codec_names()]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- transforms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 14, 16, 24, 37])
@pytest.mark.parametrize("levels", [0, 1, 4, 16])
def test_haar_butterflies_match_the_orthonormal_matrix(n, levels):
    H = haar_matrix(n, levels)
    np.testing.assert_allclose(H @ H.T, np.eye(n), atol=1e-12)
    x = np.random.default_rng(n).normal(size=(2, n, 3)).astype(np.float32)
    y = haar_forward(x.copy(), -2, levels)
    np.testing.assert_allclose(y, np.einsum("ab,kbd->kad", H, x), atol=1e-5)
    np.testing.assert_allclose(haar_inverse(y, -2, levels), x, atol=1e-5)


def test_grid_shape():
    assert grid_shape(256) == (16, 16)
    assert grid_shape(1024) == (32, 32)
    assert grid_shape(384) == (16, 24)
    assert grid_shape(1) == (1, 1)
    assert grid_shape(7) == (1, 7)


# -- storage ----------------------------------------------------------------------------------------


def test_stored_nbytes_counts_compressed_chunks(encoded):
    raw = sum(v.nbytes for v in encoded["int8"].values())
    stored = stored_nbytes(encoded["int8"], chunks_views=2)
    assert 0 < stored < raw


def test_zstd_crc32c_detects_a_flipped_byte():
    import zarr
    from zarr.storage import MemoryStore

    files: dict = {}
    group = zarr.open_group(store=MemoryStore(store_dict=files), mode="w")
    arr = group.create_array("codes", shape=(4, 16, 8), chunks=(2, 16, 8), dtype="int8",
                             compressors=zarr_compressors(3), fill_value=0)
    arr[...] = np.arange(4 * 16 * 8).reshape(4, 16, 8).astype(np.int8)
    np.testing.assert_array_equal(group["codes"][2:], arr[2:])
    key = "codes/c/0/0/0"
    raw = bytearray(files[key].to_bytes())
    raw[len(raw) // 2] ^= 0xFF
    files[key] = type(files[key]).from_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        group["codes"][0:2]
    group["codes"][2:4]  # other chunks still read


# -- torch paths: the same formulas on tensors ---------------------------------------------------


@pytest.mark.parametrize("name", list(CODECS))
def test_torch_decode_is_bit_exact_with_numpy(name, feats, encoded):
    codec = get_codec(name)
    parts = {k: torch.from_numpy(v) for k, v in encoded[name].items()}
    y = codec.decode_torch(parts)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), codec.decode(encoded[name]))
    one = codec.decode_torch({k: v[1] for k, v in parts.items()})  # one view, as a batch row
    np.testing.assert_array_equal(one.numpy(), codec.decode(encoded[name])[1])


@pytest.mark.parametrize("name", list(CODECS))
def test_torch_encode_matches_numpy(name, feats, encoded):
    """Codes equal except where a float32 sum order (view mean, rms) moves a value across a rounding edge."""
    codec = get_codec(name)
    parts = codec.encode_torch(torch.from_numpy(feats))
    assert {k: (v.dtype, tuple(v.shape)) for k, v in parts.items()} == \
        {k: (getattr(torch, str(v.dtype)), v.shape) for k, v in encoded[name].items()}
    for key, value in encoded[name].items():
        got = parts[key].numpy()
        if value.dtype == np.int8:
            assert (got != value).mean() < 1e-3, key
        else:
            np.testing.assert_allclose(got.astype(np.float32), value.astype(np.float32), rtol=1e-3, atol=0)
    y_torch, y_np = codec.decode_torch(parts).numpy(), codec.decode(encoded[name])
    assert token_cosine(y_np, y_torch).min() > 0.9999


@pytest.mark.parametrize("name", list(CODECS))
def test_torch_vectors_match_numpy(name, feats):
    codec = get_codec(name)
    x = feats[:, 0].reshape(1, 3, -1)  # [images, views, D]
    parts = codec.encode_vector(x)
    tparts = codec.encode_vector_torch(torch.from_numpy(x))
    for key, value in parts.items():
        np.testing.assert_array_equal(tparts[key].numpy(), value)
    y = codec.decode_vector_torch({k: torch.from_numpy(v[0]) for k, v in parts.items()})
    np.testing.assert_array_equal(y.numpy(), codec.decode_vector(parts)[0])


@pytest.mark.parametrize("n", [1, 3, 16, 37])
def test_haar_butterflies_numpy_and_torch_agree_bit_for_bit(n):
    x = np.random.default_rng(n).normal(size=(2, n, 5)).astype(np.float32)
    forward = haar_forward(x.copy(), -2, 4)
    np.testing.assert_array_equal(haar_forward(torch.from_numpy(x.copy()), -2, 4).numpy(), forward)
    np.testing.assert_array_equal(haar_inverse(torch.from_numpy(forward.copy()), -2, 4).numpy(),
                                  haar_inverse(forward.copy(), -2, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(CODECS))
def test_cuda_decode_and_encode_match_cpu(name, feats, encoded):
    codec = get_codec(name)
    parts = {k: torch.from_numpy(v).cuda() for k, v in encoded[name].items()}
    np.testing.assert_array_equal(codec.decode_torch(parts).cpu().numpy(), codec.decode(encoded[name]))
    gpu = codec.encode_torch(torch.from_numpy(feats).cuda())
    assert token_cosine(codec.decode(encoded[name]), codec.decode_torch(gpu).cpu().numpy()).min() > 0.9999
