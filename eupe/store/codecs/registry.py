"""The one codec registry: every codec a store can name, looked up by that name.

:data:`CODECS` holds one configured instance per name.  Its order -- what :func:`codec_names`
returns, what an unknown name's error lists and what ``eupe-cache plan`` measures by default --
is the registration order below, from the largest store to the smallest: ``fp16``; the per-token
integers from widest to narrowest, ``int8``, ``int6``, ``int4``; the Haar codecs from finest to
coarsest step, ``compact``, ``tiny``.  Every store records its codec as
:meth:`~eupe.store.codecs.base.Codec.to_dict` and reads it back through this registry
(:func:`codec_from_dict`): a registered name and its parameters never
change.  A new codec is one more instance registered here (docs/contributing.md).
"""

from __future__ import annotations

from typing import Any, Mapping

from eupe.registry import Registry
from eupe.store.codecs.base import Codec, checked_params
from eupe.store.codecs.fp16 import FP16
from eupe.store.codecs.haar import HaarCodec
from eupe.store.codecs.tokenint import TokenIntCodec

CODECS: Registry[Codec] = Registry("codec")
for _codec in (FP16, TokenIntCodec("int8", bits=8), TokenIntCodec("int6", bits=6),
               TokenIntCodec("int4", bits=4), HaarCodec("compact", alpha=0.11, levels=4),
               HaarCodec("tiny", alpha=0.35, levels=4)):
    CODECS.register(_codec.name, _codec)

# (B/value stored, normalized patch-token cosine) measured on real DINOv2-S features, rounded
# (bench/cache.py; docs/cache.md's codec table): the figures `eupe-cache extract --help` quotes.
MEASURED: dict[str, tuple[float, float]] = {"compact": (0.52, 0.9992), "tiny": (0.33, 0.993)}


def get_codec(name: str) -> Codec:
    """The registered codec called ``name``; unknown names raise UnknownNameError listing the valid ones."""
    return CODECS.get(name)


def codec_names() -> list[str]:
    """Every registered codec name, in registration order (this module's docstring)."""
    return CODECS.names()


def codec_from_dict(d: Mapping[str, Any]) -> Codec:
    """Inverse of :meth:`Codec.to_dict`; strict: unknown name, family, version or keys raise ValueError."""
    d = dict(d)
    name = d.get("name")
    if not isinstance(name, str) or name not in CODECS:
        raise ValueError(f"unknown codec name {name!r}; valid names: {', '.join(CODECS.names())}")
    cls = type(CODECS.get(name))
    params = checked_params(name, cls, d)
    return cls(name=name, **{k: d[k] for k in params})
