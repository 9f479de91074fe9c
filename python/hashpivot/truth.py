"""Ground truth: the exact inner-product top-k by numpy brute force, and recall@k against it.
The one helper that ``tune()``, ``hashpivot eval`` and the benchmarks measure with."""

from __future__ import annotations

from typing import Optional

import numpy as np

TRUTH_CHUNK = 1 << 16  # stored rows scored at once: memory stays (queries x chunk) floats


def exact_topk(
    queries: np.ndarray,
    docs: np.ndarray,
    k: int,
    exclude: Optional[np.ndarray] = None,
    scales: Optional[np.ndarray] = None,
    chunk: int = TRUTH_CHUNK,
) -> np.ndarray:
    """Rows of the k largest inner products of each query with ``docs`` (any float dtype or
    int8 with per-row ``scales``; memory-mapped is fine: read a chunk at a time), best first,
    ties by row. ``exclude``: one row per query left out (documents searched as queries)."""
    q = np.asarray(queries, dtype=np.float32)
    k = min(k, len(docs) - (1 if exclude is not None else 0))
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_r = np.zeros((len(q), 0), np.int64)
    if k <= 0:
        return best_r
    for s in range(0, len(docs), chunk):
        block = np.asarray(docs[s : s + chunk], dtype=np.float32)
        if scales is not None:
            block = block * np.asarray(scales[s : s + chunk], dtype=np.float32)[:, None]
        sims = q @ block.T
        if exclude is not None:
            hit = (exclude >= s) & (exclude < s + len(block))
            sims[np.flatnonzero(hit), exclude[hit] - s] = -np.inf
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        best_r = np.concatenate([best_r, part + s], axis=1)
        order = np.lexsort((best_r, -best_s), axis=1)[:, :k]
        best_s = np.take_along_axis(best_s, order, 1)
        best_r = np.take_along_axis(best_r, order, 1)
    return best_r


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of the exact top-k that the returned top-k holds (over all queries)."""
    kk = min(k, truth.shape[1])
    hits = sum(np.isin(truth[j, :kk], found[j, :k]).sum() for j in range(len(truth)))
    return float(hits / (len(truth) * kk)) if len(truth) else float("nan")


__all__ = ["exact_topk", "recall_at"]
