"""Parity of an exported artifact with eager PyTorch: the images, the comparison, the tolerances.

Every exporter is checked the same way: its runtime runs the artifact on held-out bundled photos
(:func:`check_pixels`), the eager encoder runs on the same pixels (:func:`eager_outputs`), and
:func:`compare` gives the max abs difference and the mean/min cosine of the summary and patch
outputs, which a :class:`Tolerance` accepts or rejects. int8 programs are calibrated on other
photos (:func:`calibration_pixels`). torch is imported only by the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

    from eupe.models.features import Encoder

Outputs = tuple[np.ndarray, np.ndarray]  # (summary [B, D], patch [B, h, w, D])
CALIBRATION_PHOTOS = 8  # bundled photos 0..7 calibrate int8; parity checks use the ones after them


@dataclass(frozen=True)
class Tolerance:
    """What a parity result must satisfy: a max abs diff ceiling or a mean cosine floor."""

    metric: Literal["max_abs_diff", "cosine_mean"]
    bound: float

    def passes(self, result: dict[str, float]) -> bool:
        """Both the summary and the patch outputs within the bound."""
        values = (result[f"summary_{self.metric}"], result[f"patch_{self.metric}"])
        return max(values) <= self.bound if self.metric == "max_abs_diff" else min(values) >= self.bound

    def __str__(self) -> str:
        return (f"max abs diff <= {self.bound:g}" if self.metric == "max_abs_diff"
                else f"mean cosine >= {self.bound:g}")


FP32 = Tolerance("max_abs_diff", 1e-4)  # an fp32 artifact computes the same maths
INT8 = Tolerance("cosine_mean", 0.99)  # an int8 program keeps the features' directions


def photo_pixels(resolution: int, count: int, offset: int = 0) -> torch.Tensor:
    """``[count, 3, R, R]``: full views of bundled real photos ``offset:offset+count``, rendered by
    the shared renderer; seeded random pixels stand in where fewer photos are installed."""
    import torch

    from eupe.assets import bundled_photos
    from eupe.views.renderer import render
    from eupe.views.source import decode_image
    from eupe.views.spec import ViewSpec

    images = []
    for photo in bundled_photos()[offset:offset + count]:
        image = decode_image(photo.read_bytes())
        images.append(render(image, ViewSpec.full(image.shape[1], image.shape[2], resolution, resolution)))
    generator = torch.Generator().manual_seed(1 + offset)
    images += [torch.rand(3, resolution, resolution, generator=generator) for _ in range(count - len(images))]
    return torch.stack(images)


def calibration_pixels(resolution: int, count: int = CALIBRATION_PHOTOS) -> torch.Tensor:
    """Images that calibrate int8 quantization: the first ``count`` bundled photos."""
    return photo_pixels(resolution, count)


def check_pixels(resolution: int, count: int = 3) -> torch.Tensor:
    """Images for parity checks: bundled photos after the calibration ones (held out)."""
    return photo_pixels(resolution, count, offset=CALIBRATION_PHOTOS)


def eager_outputs(encoder: Encoder, pixels: torch.Tensor) -> Outputs:
    """The eager encoder's (summary, patch) as numpy arrays."""
    import torch

    with torch.no_grad():
        out = encoder.eval()(pixels)
    return out["summary"].numpy(), out["patch"].numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)  # [..., D] -> [N, D]
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def compare(reference: Outputs, candidate: Outputs) -> dict[str, float]:
    """Max abs diff and mean/min cosine (per summary vector, per patch token) of two outputs."""
    result: dict[str, float] = {}
    for name, ref, got in zip(("summary", "patch"), reference, candidate):
        if ref.shape != got.shape:
            raise ValueError(f"{name}: shape {got.shape} differs from the eager {ref.shape}")
        cos = _cosines(ref, got)
        result[f"{name}_max_abs_diff"] = float(np.abs(ref - got).max())
        result[f"{name}_cosine_mean"] = float(cos.mean())
        result[f"{name}_cosine_min"] = float(cos.min())
    return result


def parity(encoder: Encoder, run: Callable[[torch.Tensor], Outputs], pixels: torch.Tensor) -> dict[str, float]:
    """How closely ``run(pixels)`` (an artifact in its runtime) reproduces the eager encoder (see :func:`compare`)."""
    return compare(eager_outputs(encoder, pixels), run(pixels))
