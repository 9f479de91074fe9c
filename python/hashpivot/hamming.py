"""Exact Hamming search over packed codes, run by the C++ core with the GIL released.

Results follow faiss' conventions: distances ascending, ties broken by the smaller row, and
``(n_bits + 1, -1)`` in the places where fewer than ``k`` rows exist.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _core
from .codes import as_codes
from .errors import InvalidInputError, InvalidTypeError


def _threads(threads: Optional[int]) -> int:
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InvalidInputError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _pair(queries: np.ndarray, codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    q = as_codes(queries, "queries", allow_1d=True)
    c = as_codes(codes, "codes")
    if q.shape[1] != c.shape[1]:
        raise InvalidInputError(
            f"queries have {q.shape[1] * 8} bits but codes have {c.shape[1] * 8}"
        )
    return q, c


def cpu_features() -> dict:
    """Which kernel is in use (``isa``), the best this CPU supports, and the CPU flags.

    Set ``HASHPIVOT_ISA=portable|popcnt|avx2|avx512`` before import to force a lower level.
    """
    return dict(_core.cpu_features())


def hamming_knn(
    queries: np.ndarray, codes: np.ndarray, k: int, threads: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """The k nearest codes of each query: ``(distances int32 (nq, k), ids int64 (nq, k))``.

    ``k`` may exceed ``len(codes)``; the missing places hold distance ``n_bits + 1`` and id -1.
    """
    q, c = _pair(queries, codes)
    return _core.knn(q, c, _count(k, "k", 0), _threads(threads))


def hamming_range(
    query: np.ndarray, codes: np.ndarray, radius: int, threads: Optional[int] = None
):
    """Every code within ``radius`` (inclusive) of the query, by ascending distance then id.

    A single query (1-D, or one row) returns ``(distances int32, ids int64)``; a 2-D batch
    returns faiss' ``(lims, distances, ids)``, query i owning ``lims[i]:lims[i + 1]``.
    """
    single = isinstance(query, np.ndarray) and query.ndim == 1
    q, c = _pair(query, codes)
    lims, d, i = _core.range_search(q, c, _count(radius, "radius", 0), _threads(threads))
    return (d, i) if single else (lims, d, i)


def hamming_distances(
    queries: np.ndarray, codes: np.ndarray, threads: Optional[int] = None
) -> np.ndarray:
    """All distances, an int32 array (nq, n)."""
    q, c = _pair(queries, codes)
    return _core.distances(q, c, _threads(threads))


def _bounds(query_dists: np.ndarray, threshold: int, n_pivots: int) -> Tuple[np.ndarray, np.ndarray]:
    qd = np.asarray(query_dists)
    if qd.ndim == 1:
        qd = qd.reshape(1, -1)
    if not np.issubdtype(qd.dtype, np.integer):
        raise InvalidTypeError(f"query pivot distances must be integers, got {qd.dtype}")
    if qd.ndim != 2 or qd.shape[1] != n_pivots:
        raise InvalidInputError(
            f"query pivot distances must have {n_pivots} columns (one per pivot), got {qd.shape}"
        )
    t = _count(threshold, "threshold", 0)
    qd = qd.astype(np.int64)
    lo = np.ascontiguousarray(np.clip(qd - t, -(1 << 20), 1 << 20), dtype=np.int32)
    hi = np.ascontiguousarray(np.clip(qd + t, -(1 << 20), 1 << 20), dtype=np.int32)
    return lo, hi


def _table(table: np.ndarray) -> np.ndarray:
    if not isinstance(table, np.ndarray) or table.dtype not in (np.uint8, np.uint16):
        raise InvalidTypeError("pivot table must be a uint8 or uint16 numpy array (n, n_pivots)")
    if table.ndim != 2 or not 1 <= table.shape[1] <= 16:
        raise InvalidInputError(f"pivot table must be (n, n_pivots <= 16), got {table.shape}")
    if not table.flags.c_contiguous:
        raise InvalidInputError("pivot table is not C-contiguous: pass np.ascontiguousarray(...)")
    return table


def pivot_filter(
    table: np.ndarray, query_dists: np.ndarray, threshold: int, threads: Optional[int] = None
) -> np.ndarray:
    """Rows kept by the pivot band filter: ``|query_dists[i] - table[row, i]| <= threshold`` for
    every pivot i. ``table`` is (n, P) uint8/uint16, ``query_dists`` the query's P distances.
    Returns the kept rows (int64, ascending)."""
    table = _table(table)
    lo, hi = _bounds(query_dists, threshold, table.shape[1])
    if lo.shape[0] != 1:
        raise InvalidInputError("pivot_filter takes one query's pivot distances")
    return _core.pivot_filter(table, lo, hi, 0, table.shape[0], _threads(threads))


def pivot_knn(
    queries: np.ndarray,
    codes: np.ndarray,
    k: int,
    table: np.ndarray,
    query_dists: np.ndarray,
    threshold: int,
    threads: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`hamming_knn` over the rows that pass the pivot band filter only, fused so that a
    code is read only for a row that passes. ``query_dists``: (nq, P) pivot distances."""
    q, c = _pair(queries, codes)
    table = _table(table)
    lo, hi = _bounds(query_dists, threshold, table.shape[1])
    if lo.shape[0] != q.shape[0]:
        raise InvalidInputError("query_dists needs one row per query")
    if table.shape[0] != c.shape[0]:
        raise InvalidInputError(
            f"pivot table has {table.shape[0]} rows but there are {c.shape[0]} codes"
        )
    return _core.knn(q, c, _count(k, "k", 0), _threads(threads), table, lo, hi)


def _projections(z: np.ndarray, n_bits: int) -> np.ndarray:
    if not isinstance(z, np.ndarray) or not np.issubdtype(z.dtype, np.floating):
        raise InvalidTypeError("query projections must be a float numpy array (nq, n_bits)")
    z = np.ascontiguousarray(z.reshape(1, -1) if z.ndim == 1 else z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != n_bits:
        raise InvalidInputError(f"query projections must have {n_bits} columns (one per bit), "
                                f"got shape {z.shape}")
    if not np.isfinite(z).all():
        raise InvalidInputError("query projections contain NaN or inf")
    return z


def asymmetric_knn(projections: np.ndarray, codes: np.ndarray, k: int,
                   threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Full scan by the asymmetric score z . (2 b - 1) of a float query projection z (for ITQ,
    ``ITQ.project(query)``) against each code's +-1 bits, z quantized to 16 levels for speed:
    ``(scores float32 (nq, k) descending, ids int64)``. The quantized scan keeps
    max(2k, k + 64) rows, whose exact float scores choose the k returned."""
    c = as_codes(codes)
    z = _projections(projections, c.shape[1] * 8)
    k = _count(k, "k", 0)
    # the quantized scan over-fetches; exact float scores then pick the k best
    _, rows = _core.asym_knn(z, c, max(2 * k, k + 64), _threads(threads))
    return _core.asym_rescore(z, c, rows, k, _threads(threads))


def asymmetric_rescore(projections: np.ndarray, codes: np.ndarray, candidates: np.ndarray, k: int,
                       threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Exact asymmetric scores of candidate rows (nq, M; -1 = none): the k best per query,
    ``(scores float32 descending, rows int64)``, -inf / -1 where fewer exist."""
    c = as_codes(codes)
    z = _projections(projections, c.shape[1] * 8)
    cand = np.ascontiguousarray(np.asarray(candidates, dtype=np.int64).reshape(z.shape[0], -1))
    return _core.asym_rescore(z, c, cand, _count(k, "k", 0), _threads(threads))
