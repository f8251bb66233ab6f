"""The :class:`Codec` base class: the interface every codec family implements, once over an array backend.

A codec maps float32 token vectors ``x[..., T, D]`` to a dict of named numpy arrays (its
*components*, :meth:`Codec.components`) and back; the base class supplies the numpy and torch
entry points (:meth:`Codec.encode` / :meth:`Codec.decode` / ``*_torch``), the one-vector-per-view
variants (``*_vector``), the input checks, and the strict (de)serialisation of the stored
metadata (:meth:`Codec.to_dict` / :func:`eupe.store.codecs.registry.codec_from_dict`, format :data:`FORMAT_VERSION`).
The families live in :mod:`.fp16`, :mod:`.tokenint` and :mod:`.haar`; :mod:`.registry` names them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from eupe.store.codecs.ops import NUMPY, TORCH, Array

FORMAT_VERSION = 2
FP16_MAX = 65504.0

ComponentSpec = dict[str, tuple[np.dtype, tuple[int, ...]]]


@dataclass(frozen=True)
class Codec:
    """Base class: ``encode`` float32 ``[..., T, D]`` -> named components -> ``decode`` back.

    Subclasses are frozen dataclasses whose fields are the codec parameters (all of them go into
    :meth:`to_dict`) and implement ``_encode(x, ops)`` / ``_decode(parts, ops)`` once over an
    array backend: :meth:`encode`/:meth:`decode` run them on numpy arrays, :meth:`encode_torch`/
    :meth:`decode_torch` on torch tensors (any device) with the same formulas.  ``tolerance`` is
    the documented minimum expected mean per-token cosine against the float32 input.
    """

    name: str
    family: ClassVar[str] = "base"

    # -- interface -----------------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """float32 ``[..., T, D]`` -> components (numpy)."""
        return self._encode(self._check_input(x, NUMPY), NUMPY)

    def decode(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """Components (any leading index/slice) -> float32 ``[..., T, D]`` (numpy)."""
        return self._decode(self._parts(parts, NUMPY), NUMPY)

    def encode_torch(self, x: Any) -> dict[str, Any]:
        """:meth:`encode` on a torch tensor, on its device (e.g. quantise on the teacher's GPU)."""
        return self._encode(self._check_input(x, TORCH), TORCH)

    def decode_torch(self, parts: Mapping[str, Any]) -> Any:
        """:meth:`decode` on torch tensors, on their device; float32 ``[..., T, D]``."""
        return self._decode(self._parts(parts, TORCH), TORCH)

    def components(self, tokens: int, dim: int) -> ComponentSpec:
        """Per-view ``{name: (dtype, shape suffix)}``; a store creates ``[*leading, *suffix]``.

        Every suffix starts with the token axis ``T`` or is a per-view row ``(1, D)`` (what
        :meth:`encode_vector` relies on: at ``T = 1`` that first axis has length 1).
        """
        raise NotImplementedError

    def _encode(self, x: Array, ops: Any) -> dict[str, Array]:
        raise NotImplementedError

    def _decode(self, parts: Mapping[str, Array], ops: Any) -> Array:
        raise NotImplementedError

    # -- one vector per view (summary tokens), stored without the T=1 axis ---------------------
    def vector_components(self, dim: int) -> ComponentSpec:
        """:meth:`components` of a single token with its ``T = 1`` axis removed."""
        return {n: (dt, suffix[1:]) for n, (dt, suffix) in self.components(1, dim).items()}

    def encode_vector(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``x [..., D]`` -> components shaped ``[..., *vector_components suffix]``."""
        return self._encode_vector(x, NUMPY)

    def decode_vector(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """Inverse of :meth:`encode_vector` on any leading slice: float32 ``[..., D]``."""
        return self._decode_vector(parts, NUMPY)

    def encode_vector_torch(self, x: Any) -> dict[str, Any]:
        """:meth:`encode_vector` on a torch tensor."""
        return self._encode_vector(x, TORCH)

    def decode_vector_torch(self, parts: Mapping[str, Any]) -> Any:
        """:meth:`decode_vector` on torch tensors."""
        return self._decode_vector(parts, TORCH)

    def _encode_vector(self, x: Array, ops: Any) -> dict[str, Array]:
        x = ops.asarray(x)
        axis = x.ndim - 1  # the inserted T=1 axis, dropped again from every component
        parts = self._encode(self._check_input(ops.unsqueeze(x, axis), ops), ops)
        return {n: p[(slice(None),) * axis + (0,)] for n, p in parts.items()}

    def _decode_vector(self, parts: Mapping[str, Array], ops: Any) -> Array:
        suffix_ndim = {n: len(suffix) - 1 for n, (_, suffix) in self.components(1, 1).items()}
        with_axis = {}
        for n, p in self._parts(parts, ops).items():
            with_axis[n] = ops.unsqueeze(p, p.ndim - suffix_ndim.get(n, 0))
        return self._decode(with_axis, ops)[..., 0, :]

    @property
    def tolerance(self) -> float:
        raise NotImplementedError

    @property
    def min_cosine(self) -> float:
        """Alias of :attr:`tolerance` (the name the store's ``verify`` reads)."""
        return self.tolerance

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: ``{"name", "family", "version", **parameters}``."""
        return {"name": self.name, "family": self.family, "version": FORMAT_VERSION,
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}}

    # -- helpers for subclasses ----------------------------------------------------------------
    def _check_input(self, x: Array, ops: Any) -> Array:
        x = ops.cast(ops.asarray(x), "float32")
        if x.ndim < 2:
            raise ValueError(f"codec {self.name!r}: expected [..., T, D] features, got shape {tuple(x.shape)}")
        if not ops.all_finite(x):
            raise ValueError(f"codec {self.name!r}: features contain NaN or inf")
        return x

    def _parts(self, parts: Mapping[str, Array], ops: Any) -> dict[str, Array]:
        return {n: ops.asarray(p) for n, p in parts.items()}

    def _get(self, parts: Mapping[str, Array], key: str) -> Array:
        try:
            return parts[key]
        except KeyError:
            raise KeyError(f"codec {self.name!r}: component {key!r} missing "
                           f"(got {sorted(parts)})") from None


def checked_params(name: str, cls: type[Codec], d: Mapping[str, Any]) -> set[str]:
    """``cls``'s parameter names, once ``d`` holds exactly its keys, its family and this format version."""
    params = {f.name for f in dataclasses.fields(cls)} - {"name"}
    expected = {"name", "family", "version"} | params
    unknown, missing = sorted(set(d) - expected), sorted(expected - set(d))
    if unknown or missing:
        raise ValueError(f"codec {name!r}: unknown keys {unknown}, missing keys {missing}; "
                         f"expected exactly {sorted(expected)}")
    if d["family"] != cls.family:
        raise ValueError(f"codec {name!r}: family {d['family']!r} != {cls.family!r}")
    if d["version"] != FORMAT_VERSION:
        raise ValueError(f"codec {name!r}: format version {d['version']!r} unsupported "
                         f"(this code reads version {FORMAT_VERSION})")
    return params
