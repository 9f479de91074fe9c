import numpy as np
import pytest

import hashpivot
from hashpivot import _core

ISAS = ["portable", "popcnt", "avx2", "avx512"]


def available_isas():
    best = _core.cpu_features()["best_isa"]
    return ISAS[: ISAS.index(best) + 1]


@pytest.fixture(params=available_isas())
def isa(request):
    """Runs a test once per instruction set this CPU has (the portable path included)."""
    before = hashpivot.cpu_features()["isa"]
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


def ref_distances(q: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Plain numpy Hamming distances (nq, n): the reference every kernel is checked against."""
    q = np.asarray(q, dtype=np.uint8).reshape(-1, codes.shape[1])
    return np.unpackbits(q[:, None, :] ^ codes[None, :, :], axis=2).sum(axis=2).astype(np.int32)


def ref_knn(q: np.ndarray, codes: np.ndarray, k: int, rows=None):
    """(distances, ids) in faiss' order, padded with (n_bits + 1, -1)."""
    n_bits = codes.shape[1] * 8
    d = ref_distances(q, codes)
    nq = d.shape[0]
    D = np.full((nq, k), n_bits + 1, dtype=np.int32)
    I = np.full((nq, k), -1, dtype=np.int64)
    for i in range(nq):
        cand = np.arange(codes.shape[0]) if rows is None else np.asarray(rows[i], dtype=np.int64)
        order = cand[np.lexsort((cand, d[i, cand]))][:k]
        D[i, : len(order)] = d[i, order]
        I[i, : len(order)] = order
    return D, I


def band_rows(index, q: np.ndarray, t: int):
    """Per query, the index's internal rows whose pivot distances all lie within t of the
    query's (the band filter by brute force)."""
    qd = ref_distances(q, np.asarray(index.pivots)).astype(np.int64)
    table = np.asarray(index.table).astype(np.int64)
    return [np.flatnonzero((np.abs(table - qd[j]) <= t).all(axis=1)) for j in range(len(qd))]


def banded_answer(index, q: np.ndarray, k: int, t: int, rows=None):
    """Brute force over the rows inside the band (and among `rows`, per query, when given):
    (distances, ids) in faiss' order."""
    keep = band_rows(index, q, t)
    if rows is not None:
        keep = [np.intersect1d(a, b) for a, b in zip(keep, rows)]
    D, R = ref_knn(q, np.asarray(index.codes), k, rows=keep)
    return D, np.where(R >= 0, index.ids[np.maximum(R, 0)], -1)
