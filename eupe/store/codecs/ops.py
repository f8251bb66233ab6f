"""The array backends: the few array operations every codec formula is written over.

A codec's ``_encode``/``_decode`` take one of these adapters as ``ops`` and call only its methods
(plus plain ``+ - * /`` and indexing), so one formula runs on numpy arrays (:data:`NUMPY`) and on
torch tensors on any device (:data:`TORCH`) with the same float32 operations.  Importing this
module does not import torch: :class:`_TorchOps` imports it on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # a numpy array or a torch tensor (the torch paths import torch lazily)


class _NumpyOps:
    """The handful of array operations the codec formulas use, on numpy arrays."""

    name = "numpy"

    @staticmethod
    def asarray(a: Array) -> Array:
        return np.asarray(a)

    @staticmethod
    def cast(a: Array, dtype: str) -> Array:
        return a.astype(dtype, copy=False)

    @staticmethod
    def copy(a: Array) -> Array:
        return a.copy()

    @staticmethod
    def unsqueeze(a: Array, axis: int) -> Array:
        return np.expand_dims(a, axis)

    @staticmethod
    def rint(a: Array) -> Array:
        return np.rint(a)

    @staticmethod
    def clip(a: Array, lo: float, hi: float) -> Array:
        return np.clip(a, lo, hi)

    @staticmethod
    def absmax(a: Array, axis: int) -> Array:
        return np.abs(a).max(axis=axis)

    @staticmethod
    def mean(a: Array, axis: int, keepdims: bool = False) -> Array:
        return np.mean(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def sqrt(a: Array) -> Array:
        return np.sqrt(a)

    @staticmethod
    def inverse(s: Array) -> Array:
        """``1 / s`` where ``s > 0``, else 0 (float32)."""
        return np.divide(np.float32(1.0), s, out=np.zeros_like(s), where=s > 0)

    @staticmethod
    def all_finite(a: Array) -> bool:
        return bool(np.isfinite(a).all())

    @staticmethod
    def any(a: Array) -> bool:
        return bool(a.any())

    @staticmethod
    def max(a: Array) -> float:
        return float(a.max()) if a.size else 0.0


class _TorchOps:
    """The same operations on torch tensors (CPU or GPU); imports torch on first use."""

    name = "torch"

    @staticmethod
    def asarray(a: Array) -> Array:
        import torch

        return torch.as_tensor(a)

    @staticmethod
    def cast(a: Array, dtype: str) -> Array:
        import torch

        return a.to(getattr(torch, dtype))

    @staticmethod
    def copy(a: Array) -> Array:
        return a.clone()

    @staticmethod
    def unsqueeze(a: Array, axis: int) -> Array:
        return a.unsqueeze(axis)

    @staticmethod
    def rint(a: Array) -> Array:
        return a.round()  # half to even, as np.rint

    @staticmethod
    def clip(a: Array, lo: float, hi: float) -> Array:
        return a.clamp(lo, hi)

    @staticmethod
    def absmax(a: Array, axis: int) -> Array:
        return a.abs().amax(dim=axis)

    @staticmethod
    def mean(a: Array, axis: int, keepdims: bool = False) -> Array:
        return a.mean(dim=axis, keepdim=keepdims)

    @staticmethod
    def sqrt(a: Array) -> Array:
        return a.sqrt()

    @staticmethod
    def inverse(s: Array) -> Array:
        import torch

        return torch.where(s > 0, 1.0 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))

    @staticmethod
    def all_finite(a: Array) -> bool:
        return bool(a.isfinite().all())

    @staticmethod
    def any(a: Array) -> bool:
        return bool(a.any())

    @staticmethod
    def max(a: Array) -> float:
        return float(a.max()) if a.numel() else 0.0


NUMPY, TORCH = _NumpyOps(), _TorchOps()
