"""How close decoded features are to the originals: per-token cosine, smooth-L1, :func:`fidelity`.

Plain numpy in float64; used by the tests, the store's ``verify`` and the benchmarks to hold every
codec to its documented tolerance, in raw space and in the normalised space the trainer's loss sees.
"""

from __future__ import annotations

import numpy as np


def token_cosine(reference: np.ndarray, approx: np.ndarray) -> np.ndarray:
    """Per-token cosine (float64, flattened over leading axes); two zero tokens count as 1."""
    a = np.asarray(reference, dtype=np.float64).reshape(-1, np.shape(reference)[-1])
    b = np.asarray(approx, dtype=np.float64).reshape(-1, np.shape(approx)[-1])
    num = np.einsum("ij,ij->i", a, b)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    den = na * nb
    both_zero = (na == 0) & (nb == 0)
    return np.where(both_zero, 1.0, num / np.where(den > 0, den, 1.0))


def smooth_l1(target: np.ndarray, approx: np.ndarray, beta: float = 1.0) -> float:
    """Mean smooth-L1 of ``approx - target`` (float64), as ``torch.nn.functional.smooth_l1_loss``."""
    d = np.abs(np.asarray(approx, np.float64) - np.asarray(target, np.float64))
    return float(np.mean(np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta))) if d.size else 0.0


def fidelity(raw: np.ndarray, decoded: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """How close ``decoded`` is to ``raw`` (both ``[..., D]``), in raw space and where the loss looks.

    ``mean``/``std`` ``[D]`` are the per-coordinate normalisation statistics the trainer applies,
    ``z = (x - mean) / std``.  Returns the mean and min per-token cosine in raw space
    (``raw_cosine``, ``raw_cosine_min``), the same in normalised space (``norm_cosine``,
    ``norm_cosine_min``), and ``smooth_l1``: the smooth-L1 loss (beta 1) between the normalised
    decoded and normalised raw tokens, i.e. the floor the codec puts under the training loss.
    """
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if np.shape(raw) != np.shape(decoded):
        raise ValueError(f"raw {np.shape(raw)} and decoded {np.shape(decoded)} differ in shape")
    if not (np.all(std > 0) and np.isfinite(std).all()):
        raise ValueError("std must be finite and > 0 in every coordinate")
    z_raw = (np.asarray(raw, np.float64) - mean) / std      # [..., D], broadcast over leading axes
    z_dec = (np.asarray(decoded, np.float64) - mean) / std
    raw_cos, norm_cos = token_cosine(raw, decoded), token_cosine(z_raw, z_dec)
    return {"raw_cosine": float(raw_cos.mean()), "raw_cosine_min": float(raw_cos.min()),
            "norm_cosine": float(norm_cos.mean()), "norm_cosine_min": float(norm_cos.min()),
            "smooth_l1": smooth_l1(z_raw, z_dec)}
