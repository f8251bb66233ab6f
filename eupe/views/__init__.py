"""Views: data-described training views of an image, their sampling policy, and the one renderer.

A :class:`ViewSpec` fully describes a view (crop box, flip, colour jitter, grayscale, blur,
solarize, output size) and serializes to a fixed-width float64 row for the feature store.
A :class:`ViewPolicy` draws views reproducibly from ``(seed, image key, view index)``.
:func:`open_image` reads an image's header (size, orientation, pixel limit) and decodes lazily;
:func:`render` turns that source (or decoded pixels) plus a view into a model input,
deterministically, decoding a JPEG at reduced size when the crop allows.

Names backed by torch/PIL (the renderer, image sources) load on first use (PEP 562), so the store's
metadata code (``info``, fingerprints) imports specs and policies without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from eupe.views.policy import ViewPolicy, random_resized_crop_box, sample_views, view_rng
from eupe.views.spec import (
    IDENTITY_ORDER,
    RENDERER_VERSION,
    VIEW_DIM,
    VIEW_FIELDS,
    VIEW_FORMAT_VERSION,
    ViewSpec,
    views_from_array,
    views_to_array,
)

_HEAVY = {
    "render": "renderer", "render_views": "renderer",
    "DEFAULT_MAX_PIXELS": "source", "ImageDecodeError": "source", "SourceImage": "source",
    "decode_image": "source", "open_image": "source", "warm_up_kernels": "kernels",
}

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IDENTITY_ORDER",
    "RENDERER_VERSION",
    "VIEW_DIM",
    "VIEW_FIELDS",
    "VIEW_FORMAT_VERSION",
    "ImageDecodeError",
    "SourceImage",
    "ViewPolicy",
    "ViewSpec",
    "decode_image",
    "open_image",
    "random_resized_crop_box",
    "render",
    "render_views",
    "sample_views",
    "view_rng",
    "views_from_array",
    "views_to_array",
    "warm_up_kernels",
]


def __getattr__(name: str) -> Any:
    if name not in _HEAVY:
        raise AttributeError(f"module 'eupe.views' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"eupe.views.{_HEAVY[name]}"), name)
    globals()[name] = value
    return value
