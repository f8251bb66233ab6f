"""The ``fp16`` family: :class:`Float16Codec`, features stored as float16.

``fp16`` -- components: ``values f16 [T, D]``;  ``x = values``.  |x| above 65504 raises (it
would become inf).  :data:`FP16` is the registered ``fp16`` codec, also what :class:`HaarCodec`
stores a single-token view (the summary vector) as.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from eupe.store.codecs.base import FP16_MAX, Codec, ComponentSpec
from eupe.store.codecs.ops import Array


@dataclass(frozen=True)
class Float16Codec(Codec):
    """``values = f16(x)``; ``x = values``.  |x| above 65504 raises (would become inf)."""

    family: ClassVar[str] = "float16"

    def _encode(self, x: Array, ops: Any) -> dict[str, Array]:
        if ops.max(ops.absmax(x, -1)) > FP16_MAX:
            raise ValueError(f"codec {self.name!r}: |x| = {ops.max(ops.absmax(x, -1)):g} overflows float16")
        return {"values": ops.cast(x, "float16")}

    def _decode(self, parts: Mapping[str, Array], ops: Any) -> Array:
        return ops.cast(self._get(parts, "values"), "float32")

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        return {"values": (np.dtype(np.float16), (tokens, dim))}

    @property
    def tolerance(self) -> float:
        return 0.9999


FP16 = Float16Codec("fp16")
