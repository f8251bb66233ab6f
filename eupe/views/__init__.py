"""Views: data-described training views of an image, their sampling policy, and the one renderer.

A :class:`ViewSpec` fully describes a view (crop box, flip, colour jitter, grayscale, blur,
solarize, output size) and serializes to a fixed-width float64 row for the feature store.
A :class:`ViewPolicy` draws views reproducibly from ``(seed, image key, view index)``.
:func:`render` turns decoded image pixels plus a view into a model input, deterministically.

Note: ``eupe.views.render`` is the *function* (re-exported here, shadowing the submodule of the
same name); import the module's other names with ``from eupe.views.render import ...``.
"""

from eupe.views.policy import ViewPolicy, random_resized_crop_box, sample_views, view_rng
from eupe.views.render import ImageDecodeError, decode_image, render, render_views
from eupe.views.spec import (
    IDENTITY_ORDER,
    VIEW_DIM,
    VIEW_FIELDS,
    VIEW_FORMAT_VERSION,
    ViewSpec,
    views_from_array,
    views_to_array,
)

__all__ = [
    "IDENTITY_ORDER",
    "VIEW_DIM",
    "VIEW_FIELDS",
    "VIEW_FORMAT_VERSION",
    "ImageDecodeError",
    "ViewPolicy",
    "ViewSpec",
    "decode_image",
    "random_resized_crop_box",
    "render",
    "render_views",
    "sample_views",
    "view_rng",
    "views_from_array",
    "views_to_array",
]
