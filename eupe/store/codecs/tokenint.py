"""The ``token_int`` family: :class:`TokenIntCodec`, plain per-token absmax integer quantisation.

``int8``, ``int6``, ``int4`` (``bits`` b, ``L = 2**(b-1) - 1``): one code per int8 byte (zstd
entropy-codes them).  Encode: ``scale`` in float32, ``codes = clip(rint(x * (1 / scale)), -L, L)``
(0 where scale 0).  components: ``codes int8 [T, D]`` in ``[-L, L]``, ``scale f32 [T]``;
``x[t, c] = codes[t, c] * scale[t]``  with  ``scale[t] = max_c |x[t, c]| / L``.
These are the plain per-token baselines their names promise: they lose the normalised space
when a few channels dominate (per-token absmax spends the whole code range on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from eupe.store.codecs.base import Codec, ComponentSpec
from eupe.store.codecs.ops import Array

# Minimum expected mean cosine.  Per-token absmax error grows with the crest factor absmax/rms of
# the tokens (up to sqrt(D) when a few outlier channels dominate): 1 - cos ~ crest**2 / (24 L**2).
# Real DINOv2-S features reach int8 0.99997, int6 0.9995, int4 0.991; tokens with 3 channels x50
# drop to int8 0.9997, int6 0.995, int4 0.975, hence these loose, data-independent floors.
_TOKEN_INT_TOLERANCE = {8: 0.999, 7: 0.997, 6: 0.99, 5: 0.98, 4: 0.95, 3: 0.85, 2: 0.6}


@dataclass(frozen=True)
class TokenIntCodec(Codec):
    """``codes = round(x / scale)`` in ``[-L, L]``, ``scale = absmax_c(x) / L``; ``x = codes * scale``."""

    bits: int = 8
    family: ClassVar[str] = "token_int"

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 8):
            raise ValueError(f"codec {self.name!r}: bits must be an int in 2..8, got {self.bits!r}")

    @property
    def max_code(self) -> int:
        """L: codes lie in [-L, L]."""
        return 2 ** (self.bits - 1) - 1

    def _encode(self, x: Array, ops: Any) -> dict[str, Array]:
        scale = ops.absmax(x, -1) / float(self.max_code)                # [..., T] float32
        codes = ops.clip(ops.rint(x * ops.unsqueeze(ops.inverse(scale), -1)), -self.max_code, self.max_code)
        return {"codes": ops.cast(codes, "int8"), "scale": scale}

    def _decode(self, parts: Mapping[str, Array], ops: Any) -> Array:
        codes, scale = self._get(parts, "codes"), self._get(parts, "scale")
        return ops.cast(codes, "float32") * ops.unsqueeze(ops.cast(scale, "float32"), -1)

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        return {"codes": (np.dtype(np.int8), (tokens, dim)), "scale": (np.dtype(np.float32), (tokens,))}

    @property
    def tolerance(self) -> float:
        return _TOKEN_INT_TOLERANCE[self.bits]
