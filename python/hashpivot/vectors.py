"""The vectors an index keeps for the exact rerank: what a metric does to them (cosine scales
rows to unit length, ip keeps them) and how a store holds them (float32, float16, or int8 with
one scale a row)."""

from __future__ import annotations

import warnings
from typing import Optional, Tuple

import numpy as np

from .errors import ZeroVectorError

INT8_LEVELS = 127  # int8 store: x ~ scale * round(x / scale), |x / scale| <= 127
NORM_TOLERANCE = 1e-3  # |1 - ||x||| above this: not L2-normalised
_warned_unnormalised = False


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length without underflow (scaled by their largest entry first)."""
    big = np.abs(x).max(axis=1, keepdims=True)
    y = x / np.where(big > 0, big, 1)
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def check_nonzero(x: np.ndarray, name: str) -> None:
    zero = ~(x != 0).any(axis=1)  # exact: a tiny but non-zero vector still has a direction
    if zero.any():
        raise ZeroVectorError(
            f"{name} contain {int(zero.sum())} zero vector(s): an all-zero embedding has no "
            "direction (did the encoder fail?); drop those rows"
        )


def prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """Embeddings as the index keeps them under ``metric`` (warns once about unnormalised
    rows under "ip")."""
    global _warned_unnormalised
    check_nonzero(x, "embeddings")
    if metric == "cosine":
        return unit_rows(x)
    norms = np.linalg.norm(x, axis=1)
    if not _warned_unnormalised and x.size and np.abs(norms - 1).max() > NORM_TOLERANCE:
        _warned_unnormalised = True
        warnings.warn(
            "indexing vectors that are not L2-normalised under metric='ip': scores are raw "
            "inner products (build with metric='cosine' for cosine similarity)",
            UserWarning,
            stacklevel=3,
        )
    return x


def quantize(
    x: np.ndarray, store: Optional[str]
) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(vectors, int8 scales or None) as ``store`` keeps them; (None, None) without a store."""
    if store is None:
        return None, None
    if store == "float32":
        return np.ascontiguousarray(x, dtype=np.float32), None
    if store == "float16":
        return np.ascontiguousarray(x, dtype=np.float16), None
    scale = np.abs(x).max(axis=1) / INT8_LEVELS
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(x / scale[:, None]), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return q, scale.astype(np.float32)
