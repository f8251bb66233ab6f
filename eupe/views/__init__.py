"""Views: data-described training views of an image, their sampling policy, and the one renderer.

A :class:`ViewSpec` fully describes a view (crop box, flip, colour jitter, grayscale, blur,
solarize, output size) and serializes to a fixed-width float64 row for the feature store.
A :class:`ViewPolicy` draws views reproducibly from ``(seed, image key, view index)``.
:func:`open_image` reads an image's header (size, orientation, pixel limit) and decodes lazily;
:func:`render` turns that source (or decoded pixels) plus a view into a model input,
deterministically, decoding a JPEG at reduced size when the crop allows.

Note: ``eupe.views.render`` is the *function* (re-exported here, shadowing the submodule of the
same name); import the module's other names with ``from eupe.views.render import ...``.
"""

from eupe.views.policy import ViewPolicy, random_resized_crop_box, sample_views, view_rng
from eupe.views.render import render, render_views
from eupe.views.source import DEFAULT_MAX_PIXELS, ImageDecodeError, SourceImage, decode_image, open_image
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
]
