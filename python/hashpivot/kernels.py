"""The compiled kernels over packed codes you hold yourself: exact Hamming k-NN and range search,
distance matrices, the pivot band filter, asymmetric scoring of float projections. Each call
runs in C++ with the GIL released (an :class:`~hashpivot.Index` does all of this for you).

Results follow faiss' conventions: distances ascending, ties broken by the smaller row, and
``(n_bits + 1, -1)`` in the places where fewer than ``k`` rows exist.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from . import _core
from ._validate import count, is_int, to_numpy
from ._validate import threads as _threads
from .codes import as_codes
from .errors import InvalidInputError, InvalidTypeError, LimitError
from .plan import quantized_pool

# Results of one call beyond this many entries (k x queries) are refused: a k far beyond the
# number of codes would only allocate padding.
MAX_RESULT_ENTRIES = 1 << 28


def _pair(queries: np.ndarray, codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    q = as_codes(queries, "queries", allow_1d=True)
    c = as_codes(codes, "codes")
    if q.shape[1] != c.shape[1]:
        raise InvalidInputError(
            f"queries have {q.shape[1] * 8} bits but codes have {c.shape[1] * 8}"
        )
    return q, c


def _k(k: object, nq: int) -> int:
    k = count(k, "k", 0)
    if nq * k > MAX_RESULT_ENTRIES:
        raise LimitError(
            f"k={k:,} for {nq:,} queries would allocate {nq * k:,} results; "
            "ask for at most the number of codes"
        )
    return k


def cpu_features() -> dict:
    """Which kernel is in use (``isa``), the best this CPU supports, its flags, and the threads
    hashpivot uses (the CPU affinity mask, or ``HASHPIVOT_NUM_THREADS``).

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
    return _core.knn(q, c, _k(k, q.shape[0]), _threads(threads))


def hamming_range(
    query: np.ndarray, codes: np.ndarray, radius: int, threads: Optional[int] = None
) -> Union[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every code within ``radius`` (inclusive) of the query, by ascending distance then id.

    A single query (1-D, or one row) returns ``(distances int32, ids int64)``; a 2-D batch
    returns faiss' ``(lims, distances, ids)``, query i owning ``lims[i]:lims[i + 1]``. A radius
    above n_bits means every code.
    """
    single = isinstance(to_numpy(query), np.ndarray) and to_numpy(query).ndim == 1
    q, c = _pair(query, codes)
    n_bits = c.shape[1] * 8  # any radius >= n_bits means every code
    r = count(min(radius, n_bits) if is_int(radius) else radius, "radius", 0)
    lims, d, i = _core.range_search(q, c, r, _threads(threads))
    return (d, i) if single else (lims, d, i)


def hamming_distances(
    queries: np.ndarray, codes: np.ndarray, threads: Optional[int] = None
) -> np.ndarray:
    """All distances, an int32 array (nq, n)."""
    q, c = _pair(queries, codes)
    if q.shape[0] * c.shape[0] > MAX_RESULT_ENTRIES:
        raise LimitError(
            f"a {q.shape[0]:,} x {c.shape[0]:,} distance matrix is too large; ask in chunks"
        )
    return _core.distances(q, c, _threads(threads))


def band_bounds(
    query_dists: np.ndarray, threshold: int, n_pivots: int
) -> Tuple[np.ndarray, np.ndarray]:
    """The pivot band's per-pivot bounds (d_q - t, d_q + t) as int32 (nq, P)."""
    qd = np.asarray(to_numpy(query_dists))
    if qd.ndim == 1:
        qd = qd.reshape(1, -1)
    if not np.issubdtype(qd.dtype, np.integer):
        raise InvalidTypeError(f"query pivot distances must be integers, got {qd.dtype}")
    if qd.ndim != 2 or qd.shape[1] != n_pivots:
        raise InvalidInputError(
            f"query pivot distances must have {n_pivots} columns (one per pivot), got {qd.shape}"
        )
    t = count(threshold, "threshold", 0)
    qd = np.clip(qd.astype(np.int64), -(1 << 20), 1 << 20)
    lo = np.ascontiguousarray(np.clip(qd - t, -(1 << 30), 1 << 30), dtype=np.int32)
    hi = np.ascontiguousarray(np.clip(qd + t, -(1 << 30), 1 << 30), dtype=np.int32)
    return lo, hi


def _table(table: np.ndarray) -> np.ndarray:
    table = to_numpy(table)
    if not isinstance(table, np.ndarray) or table.dtype not in (np.uint8, np.uint16):
        raise InvalidTypeError("pivot table must be a uint8 or uint16 numpy array (n, n_pivots)")
    if table.ndim != 2 or not 1 <= table.shape[1] <= _core.MAX_PIVOTS:
        raise InvalidInputError(
            f"pivot table must be (n, n_pivots <= {_core.MAX_PIVOTS}), got {table.shape}"
        )
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
    lo, hi = band_bounds(query_dists, threshold, table.shape[1])
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
    """:func:`hamming_knn` over the rows that pass the pivot band filter only.
    ``query_dists``: (nq, P) pivot distances."""
    q, c = _pair(queries, codes)
    table = _table(table)
    lo, hi = band_bounds(query_dists, threshold, table.shape[1])
    if lo.shape[0] != q.shape[0]:
        raise InvalidInputError("query_dists needs one row per query")
    if table.shape[0] != c.shape[0]:
        raise InvalidInputError(
            f"pivot table has {table.shape[0]} rows but there are {c.shape[0]} codes"
        )
    return _core.knn(q, c, _k(k, q.shape[0]), _threads(threads), table=table, lo=lo, hi=hi)


def projections(z: np.ndarray, n_bits: int) -> np.ndarray:
    """Float query projections as the kernels take them: float32 (nq, n_bits), finite."""
    z = to_numpy(z)
    if not isinstance(z, np.ndarray) or not np.issubdtype(z.dtype, np.floating):
        raise InvalidTypeError("query projections must be a float numpy array (nq, n_bits)")
    z = np.ascontiguousarray(z.reshape(1, -1) if z.ndim == 1 else z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != n_bits:
        raise InvalidInputError(
            f"query projections must have {n_bits} columns (one per bit), got shape {z.shape}"
        )
    if not np.isfinite(z).all():
        raise InvalidInputError("query projections contain NaN or inf")
    return z


def asymmetric_knn(
    projections_: np.ndarray, codes: np.ndarray, k: int, threads: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Full scan by the asymmetric score z . (2 b - 1) of a float query projection z (for ITQ,
    ``ITQ.project(query)``) against each code's +-1 bits, z quantized to 16 levels for speed:
    ``(scores float32 (nq, k) descending, ids int64)``. The quantized scan keeps
    max(2k, k + 64) rows, whose exact float scores choose the k returned."""
    c = as_codes(codes)
    z = projections(projections_, c.shape[1] * 8)
    k = _k(k, z.shape[0])
    return _core.asym_knn(z, c, k, quantized_pool(k), _threads(threads))


def asymmetric_rescore(
    projections_: np.ndarray,
    codes: np.ndarray,
    candidates: np.ndarray,
    k: int,
    threads: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Exact asymmetric scores of candidate rows (nq, M; -1 = none): the k best per query,
    ``(scores float32 descending, rows int64)``, -inf / -1 where fewer exist."""
    c = as_codes(codes)
    z = projections(projections_, c.shape[1] * 8)
    cand = np.ascontiguousarray(
        np.asarray(to_numpy(candidates), dtype=np.int64).reshape(z.shape[0], -1)
    )
    return _core.asym_rescore(z, c, cand, _k(k, z.shape[0]), _threads(threads))
