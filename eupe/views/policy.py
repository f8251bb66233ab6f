"""Augmentation policy: how random views are drawn, reproducibly.

A :class:`ViewPolicy` holds the augmentation strengths (defaults follow the DINOv2/DINOv3
global-crop recipe).  :meth:`ViewPolicy.sample` turns a numpy ``Generator`` into a concrete
:class:`~eupe.views.spec.ViewSpec`; :func:`view_rng` derives that generator from
``(seed, image key, view index)`` with SHA-256, so the same view comes out in any process,
any Python run and whatever order the images are visited in.

Random draws are made in a fixed layout: the photometric draws (always the same count, even
for branches not taken) come first, the crop last.  So changing one probability does not
reshuffle the other fields of a view.

``renderer`` records the renderer version (:data:`~eupe.views.spec.RENDERER_VERSION`) the views
are rendered with: it is part of :meth:`ViewPolicy.to_dict` and :meth:`ViewPolicy.fingerprint`, so
a store made by another renderer does not match, and :meth:`ViewPolicy.from_stored` refuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from eupe.views.spec import IDENTITY_ORDER, RENDERER_VERSION, ViewSpec

_PAIR_FIELDS = ("crop_scale", "crop_ratio", "blur_sigma")
_INT_FIELDS = ("blur_reference", "resolution", "renderer")
_OLD_KEYS = {"out_size": "resolution"}  # keys of earlier versions -> their field today
_RNG_DOMAIN = "eupe.views.view_rng.v1"


def _fail(field: str, message: str) -> None:
    raise ValueError(f"invalid ViewPolicy.{field}: {message}")


def _pair(value: Any, field: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        _fail(field, f"expected a pair (low, high), got {value!r}")
    low, high = (_number(v, field) for v in value)
    if low > high:
        _fail(field, f"low {low} > high {high}")
    return low, high


def _number(value: Any, field: str) -> float:
    numeric = isinstance(value, (int, float, np.integer, np.floating))
    numeric = numeric and not isinstance(value, (bool, np.bool_))
    if not numeric or not math.isfinite(value):
        _fail(field, f"expected a finite number, got {value!r}")
    return float(value)


def _positive_int(value: Any, field: str) -> int:
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not integer or value <= 0:
        _fail(field, f"expected a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ViewPolicy:
    """Augmentation strengths and probabilities; defaults follow DINOv2/DINOv3 global crops.

    ``blur_sigma`` is in pixels at an output resolution of ``blur_reference``; views store it
    relative to the output side (``sigma_px / blur_reference``).  ``resolution`` is the side, in
    pixels, of the square views :meth:`sample` draws by default (``out_size`` before).
    """

    # The paper names the augmentations (random resized crop, flip, colour jitter, blur,
    # solarization) but not their strengths: every value below is ours, taken from DINOv2/DINOv3.
    crop_scale: tuple[float, float] = (0.32, 1.0)  # ours: DINOv2 global-crop scale
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # ours: torchvision's default
    flip_p: float = 0.5  # ours
    jitter_p: float = 0.8  # ours: DINOv2
    brightness: float = 0.4  # ours: DINOv2
    contrast: float = 0.4  # ours: DINOv2
    saturation: float = 0.2  # ours: DINOv2
    hue: float = 0.1  # ours: DINOv2
    grayscale_p: float = 0.2  # ours: DINOv2 (the paper does not list grayscale)
    blur_p: float = 0.5  # ours: between DINOv2's two global crops (1.0 and 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # ours: DINOv2
    blur_reference: int = 224  # ours: the side at which blur_sigma is in pixels
    solarize_p: float = 0.2  # ours: DINOv2's second global crop
    resolution: int = 256
    renderer: int = RENDERER_VERSION

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, self._normalized(f.name, getattr(self, f.name)))
        self._check_ranges()

    @staticmethod
    def _normalized(name: str, value: Any) -> Any:
        if name in _PAIR_FIELDS:
            return _pair(value, name)
        if name in _INT_FIELDS:
            return _positive_int(value, name)
        return _number(value, name)

    def _check_ranges(self) -> None:
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            _fail("crop_scale", f"need 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0]:
            _fail("crop_ratio", f"need 0 < low <= high, got {self.crop_ratio}")
        if not 0.0 < self.blur_sigma[0]:
            _fail("blur_sigma", f"need 0 < low <= high, got {self.blur_sigma}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _fail(name, f"probability must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0.0:
                _fail(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            _fail("hue", f"must be in [0, 0.5], got {self.hue}")
        if self.renderer != RENDERER_VERSION:
            _fail("renderer", f"views made by renderer {self.renderer} cannot be reproduced by this code "
                  f"(renderer {RENDERER_VERSION}); re-extract the store with this code or use the "
                  f"version that made it")

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, src_h: int, src_w: int,
               resolution: int | None = None) -> ViewSpec:
        """One view of a ``src_h x src_w`` image, square at ``resolution`` (default: the policy's)."""
        resolution = self.resolution if resolution is None else _positive_int(resolution, "resolution")
        flip = bool(rng.random() < self.flip_p)
        jitter = self._sample_jitter(rng)
        grayscale = bool(rng.random() < self.grayscale_p)
        blur_sigma = self._sample_blur(rng)
        solarize = bool(rng.random() < self.solarize_p)
        top, left, height, width = random_resized_crop_box(
            rng, src_h, src_w, self.crop_scale, self.crop_ratio)
        return ViewSpec(src_h=src_h, src_w=src_w, top=top, left=left, height=height, width=width,
                        flip=flip, **jitter, grayscale=grayscale, blur_sigma=blur_sigma,
                        solarize=solarize, out_h=resolution, out_w=resolution)

    def _sample_jitter(self, rng: np.random.Generator) -> dict[str, Any]:
        """Colour-jitter factors and order like torchvision's ColorJitter (identity when not applied)."""
        applied = rng.random() < self.jitter_p
        order = tuple(int(i) for i in rng.permutation(4))
        factors = {name: float(rng.uniform(max(0.0, 1.0 - s), 1.0 + s))
                   for name, s in (("brightness", self.brightness), ("contrast", self.contrast),
                                   ("saturation", self.saturation))}
        hue = float(rng.uniform(-self.hue, self.hue))
        if not applied:
            return dict(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0,
                        jitter_order=IDENTITY_ORDER)
        return dict(**factors, hue=hue, jitter_order=order)

    def _sample_blur(self, rng: np.random.Generator) -> float:
        applied = rng.random() < self.blur_p
        sigma_px = float(rng.uniform(*self.blur_sigma))
        return sigma_px / self.blur_reference if applied else 0.0

    # -- (de)serialization --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (pairs as lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViewPolicy:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys raise ``ValueError``.
        Keys of earlier versions (``out_size``) are read as today's (``resolution``)."""
        for old, new in _OLD_KEYS.items():
            if old in d and new in d:
                raise ValueError(f"ViewPolicy keys {old!r} and {new!r} name the same field; give only {new!r}")
        d = {_OLD_KEYS.get(k, k): v for k, v in d.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ViewPolicy keys: {unknown}")
        return cls(**d)

    @classmethod
    def from_stored(cls, d: dict[str, Any], sha256: str | None = None) -> ViewPolicy:
        """The policy a store recorded: like :meth:`from_dict`, but a missing ``renderer`` means
        renderer 1 (stores written before the key existed) and is refused like any other renderer
        this code does not have; with ``sha256``, the attributes must still hash to it (under the
        key names they were recorded with, e.g. ``out_size``)."""
        policy = cls.from_dict({"renderer": 1, **d})
        recorded = {new: old for old, new in _OLD_KEYS.items() if old in d}
        if sha256 is not None and policy._digest(recorded) != sha256:
            raise ValueError(f"view policy attributes do not match their recorded sha256 "
                             f"({policy._digest(recorded)[:16]}... vs {str(sha256)[:16]}...): edited?")
        return policy

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the canonical JSON of :meth:`to_dict` (renderer version included)."""
        return self._digest({})

    def _digest(self, renamed: dict[str, str]) -> str:
        """SHA-256 of the canonical JSON of :meth:`to_dict` with fields ``renamed`` (field -> key)."""
        d = {renamed.get(k, k): v for k, v in self.to_dict().items()}
        canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def random_resized_crop_box(rng: np.random.Generator, src_h: int, src_w: int,
                            scale: tuple[float, float],
                            ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` like torchvision's ``RandomResizedCrop.get_params``, numpy-driven."""
    area = src_h * src_w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * float(rng.uniform(scale[0], scale[1]))
        aspect = math.exp(float(rng.uniform(log_ratio[0], log_ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= src_w and 0 < h <= src_h:
            top = int(rng.integers(0, src_h - h + 1))
            left = int(rng.integers(0, src_w - w + 1))
            return top, left, h, w
    return _center_crop_box(src_h, src_w, ratio)


def _center_crop_box(src_h: int, src_w: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    in_ratio = src_w / src_h
    if in_ratio < ratio[0]:
        w, h = src_w, int(round(src_w / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = src_h, int(round(src_h * ratio[1]))
    else:
        h, w = src_h, src_w
    h, w = max(1, min(h, src_h)), max(1, min(w, src_w))
    return (src_h - h) // 2, (src_w - w) // 2, h, w


def view_rng(seed: int, key: str, index: int) -> np.random.Generator:
    """Generator for view ``index`` of image ``key`` under ``seed``; stable across processes and runs."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(key, str):
        raise ValueError(f"key must be a str, got {key!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    payload = json.dumps([_RNG_DOMAIN, int(seed), key, int(index)], ensure_ascii=True)
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    entropy = int.from_bytes(digest, "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def sample_views(policy: ViewPolicy, seed: int, key: str, src_h: int, src_w: int, k: int,
                 resolution: int | None = None, first: int = 0) -> list[ViewSpec]:
    """Views ``first..k-1`` of image ``key``: view ``i`` is drawn from ``view_rng(seed, key, i)`` alone,
    so a store grown from K to K2 views holds the views a store made with K2 would."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    return [policy.sample(view_rng(seed, key, i), src_h, src_w, resolution) for i in range(first, k)]