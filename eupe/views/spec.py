"""The view specification: a complete, serializable description of one training view.

A *view* of an image is everything needed to turn the source pixels into a model input:
the crop box, the flip, the colour jitter (factors and order), grayscale, blur and
solarize.  Nothing random happens while rendering; all randomness is drawn once (see
:mod:`eupe.views.policy`) and frozen into a :class:`ViewSpec`.

The teacher-feature cache stores views as fixed-width float64 rows (:meth:`ViewSpec.to_array`,
column names in :data:`VIEW_FIELDS`), so the trainer can re-render exactly the same view
for the student, possibly at another output resolution (:meth:`ViewSpec.with_output`).
Every value fits a float64 exactly, so the row round-trips bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

VIEW_FORMAT_VERSION: int = 1
"""Bumped whenever the meaning or layout of a view row changes."""

RENDERER_VERSION: int = 2
"""Bumped whenever the pixels :func:`eupe.views.renderer.render` produces for a view change.

1: full decode, float32 crop + torch antialiased bilinear resize.  2: JPEG decoded at a reduced
DCT scale when the crop allows, PIL uint8 antialiased bilinear crop-resize.  The version is part
of :class:`~eupe.views.policy.ViewPolicy` (``renderer``), hence of its fingerprint and of a store's
identity: views cached by another renderer are not reproduced by this one.
"""

VIEW_FIELDS: tuple[str, ...] = (
    "src_h", "src_w",
    "top", "left", "height", "width",
    "flip",
    "brightness", "contrast", "saturation", "hue",
    "jitter_order_0", "jitter_order_1", "jitter_order_2", "jitter_order_3",
    "grayscale",
    "blur_sigma",
    "solarize",
    "out_h", "out_w",
)
VIEW_DIM: int = len(VIEW_FIELDS)

IDENTITY_ORDER: tuple[int, int, int, int] = (0, 1, 2, 3)
"""Jitter order used when no colour jitter is applied (0=brightness, 1=contrast, 2=saturation, 3=hue)."""

_INT_FIELDS = ("src_h", "src_w", "top", "left", "height", "width", "out_h", "out_w")
_BOOL_FIELDS = ("flip", "grayscale", "solarize")
_FLOAT_FIELDS = ("brightness", "contrast", "saturation", "hue", "blur_sigma")
_ORDER_COLUMNS = ("jitter_order_0", "jitter_order_1", "jitter_order_2", "jitter_order_3")


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"invalid view field {field!r}: {message}")


def _as_int(value: Any, field: str) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    _require(ok, field, f"expected an integer, got {value!r}")
    return int(value)


def _as_bool(value: Any, field: str) -> bool:
    _require(isinstance(value, (bool, np.bool_)), field, f"expected a bool, got {value!r}")
    return bool(value)


def _as_float(value: Any, field: str) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    _require(ok, field, f"expected a number, got {value!r}")
    _require(math.isfinite(float(value)), field, f"expected a finite number, got {value!r}")
    return float(value)


def _as_order(value: Any) -> tuple[int, int, int, int]:
    items = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else ()
    _require(len(items) == 4, "jitter_order", f"expected 4 entries, got {value!r}")
    order = tuple(_as_int(v, "jitter_order") for v in items)
    _require(sorted(order) == [0, 1, 2, 3], "jitter_order", f"not a permutation of (0, 1, 2, 3): {order}")
    return order  # type: ignore[return-value]


@dataclass(frozen=True)
class ViewSpec:
    """One view of one source image; see the module docstring.

    ``blur_sigma`` is a fraction of the output side (``sigma_px = blur_sigma * min(out_h, out_w)``)
    so that renders at different resolutions look alike; 0 means no blur.
    """

    src_h: int
    src_w: int
    top: int
    left: int
    height: int
    width: int
    flip: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    jitter_order: tuple[int, int, int, int]
    grayscale: bool
    blur_sigma: float
    solarize: bool
    out_h: int
    out_w: int

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            object.__setattr__(self, name, _as_int(getattr(self, name), name))
        for name in _BOOL_FIELDS:
            object.__setattr__(self, name, _as_bool(getattr(self, name), name))
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, _as_float(getattr(self, name), name))
        object.__setattr__(self, "jitter_order", _as_order(self.jitter_order))
        self._check_sizes()
        self._check_box()
        self._check_photometric()

    def _check_sizes(self) -> None:
        for name in ("src_h", "src_w", "height", "width", "out_h", "out_w"):
            _require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")

    def _check_box(self) -> None:
        _require(self.top >= 0, "top", f"must be >= 0, got {self.top}")
        _require(self.left >= 0, "left", f"must be >= 0, got {self.left}")
        _require(self.top + self.height <= self.src_h, "height",
                 f"box rows {self.top}..{self.top + self.height} exceed src_h={self.src_h}")
        _require(self.left + self.width <= self.src_w, "width",
                 f"box columns {self.left}..{self.left + self.width} exceed src_w={self.src_w}")

    def _check_photometric(self) -> None:
        for name in ("brightness", "contrast", "saturation", "blur_sigma"):
            _require(getattr(self, name) >= 0.0, name, f"must be >= 0, got {getattr(self, name)}")
        _require(-0.5 <= self.hue <= 0.5, "hue", f"must be in [-0.5, 0.5], got {self.hue}")

    # -- construction helpers -------------------------------------------------------------

    @classmethod
    def full(cls, src_h: int, src_w: int, out_h: int, out_w: int) -> ViewSpec:
        """The whole image resized to ``(out_h, out_w)``, no augmentation (for evaluation)."""
        return cls(src_h=src_h, src_w=src_w, top=0, left=0, height=src_h, width=src_w,
                   flip=False, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0,
                   jitter_order=IDENTITY_ORDER, grayscale=False, blur_sigma=0.0,
                   solarize=False, out_h=out_h, out_w=out_w)

    def geometric(self) -> ViewSpec:
        """This view's crop, flip and output size alone: every photometric op at its identity."""
        return replace(self, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0,
                       grayscale=False, blur_sigma=0.0, solarize=False)

    def with_output(self, h: int, w: int) -> ViewSpec:
        """A copy of this view with another default output resolution."""
        return replace(self, out_h=h, out_w=w)

    @property
    def has_jitter(self) -> bool:
        """True when any colour-jitter factor differs from the identity."""
        return (self.brightness, self.contrast, self.saturation, self.hue) != (1.0, 1.0, 1.0, 0.0)

    # -- serialization ----------------------------------------------------------------------

    def to_array(self) -> np.ndarray:
        """The view as a float64 row of length :data:`VIEW_DIM` (column order :data:`VIEW_FIELDS`)."""
        values = [
            self.src_h, self.src_w, self.top, self.left, self.height, self.width,
            self.flip, self.brightness, self.contrast, self.saturation, self.hue,
            *self.jitter_order, self.grayscale, self.blur_sigma, self.solarize,
            self.out_h, self.out_w,
        ]
        return np.asarray([float(v) for v in values], dtype=np.float64)

    @classmethod
    def from_array(cls, a: Any) -> ViewSpec:
        """Parse and validate a row written by :meth:`to_array`; ``ValueError`` names the bad field."""
        row = np.asarray(a, dtype=np.float64)
        if row.shape != (VIEW_DIM,):
            raise ValueError(f"view array must have shape ({VIEW_DIM},), got {row.shape}")
        col = dict(zip(VIEW_FIELDS, row.tolist()))
        for name, value in col.items():
            _require(math.isfinite(value), name, f"not finite: {value}")
        kwargs: dict[str, Any] = {n: _integral(col[n], n) for n in _INT_FIELDS}
        kwargs.update({n: _flag(col[n], n) for n in _BOOL_FIELDS})
        kwargs.update({n: col[n] for n in _FLOAT_FIELDS})
        kwargs["jitter_order"] = tuple(_integral(col[n], "jitter_order") for n in _ORDER_COLUMNS)
        return cls(**kwargs)


def _integral(value: float, field: str) -> int:
    _require(float(value).is_integer(), field, f"expected an integer value, got {value}")
    return int(value)


def _flag(value: float, field: str) -> bool:
    _require(value in (0.0, 1.0), field, f"expected 0 or 1, got {value}")
    return value == 1.0


def views_to_array(views: Sequence[ViewSpec]) -> np.ndarray:
    """Stack views into a float64 array ``[N, VIEW_DIM]`` (``[0, VIEW_DIM]`` when empty)."""
    if len(views) == 0:
        return np.zeros((0, VIEW_DIM), dtype=np.float64)
    return np.stack([v.to_array() for v in views])


def views_from_array(a: Any) -> list[ViewSpec]:
    """Parse an ``[N, VIEW_DIM]`` array into views; ``ValueError`` names the row and field."""
    rows = np.asarray(a, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != VIEW_DIM:
        raise ValueError(f"views array must have shape (N, {VIEW_DIM}), got {rows.shape}")
    views = []
    for i, row in enumerate(rows):
        try:
            views.append(ViewSpec.from_array(row))
        except ValueError as exc:
            raise ValueError(f"row {i}: {exc}") from exc
    return views
