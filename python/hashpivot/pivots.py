"""Pivots in Hamming space and the table of every code's distance to each pivot.

Two ways to choose pivots:

* ``"furthest_first"`` (the notebook's): a seeded random start, then repeatedly the sample code
  furthest from the pivots chosen so far.
* ``"incremental"`` (Bustos, Navarro & Chávez 2003): each new pivot is the candidate that most
  raises the mean lower bound max_i |d(a, p_i) - d(b, p_i)| over sampled pairs (a, b), i.e. the
  one that prunes most; outliers are not always good pivots.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import _core
from ._validate import count
from ._validate import seed as _seed
from .codes import as_codes
from .errors import InvalidInputError
from .kernels import hamming_distances

METHODS = ("furthest_first", "incremental")
MAX_PIVOTS: int = _core.MAX_PIVOTS  # the limits live in the C++ core (cpp/codes.h)
NARROW_TABLE_MAX_BITS: int = _core.NARROW_TABLE_MAX_BITS


def table_dtype(n_bits: int) -> np.dtype:
    """uint8 while every distance fits (n_bits <= NARROW_TABLE_MAX_BITS), uint16 beyond."""
    return np.dtype(np.uint8) if n_bits <= NARROW_TABLE_MAX_BITS else np.dtype(np.uint16)


def _sample(codes: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if codes.shape[0] <= size:
        return codes
    return codes[np.sort(rng.choice(codes.shape[0], size, replace=False))]


def furthest_first(codes: np.ndarray, n_pivots: int, rng: np.random.Generator) -> np.ndarray:
    chosen = [int(rng.integers(codes.shape[0]))]
    mind = hamming_distances(codes[chosen[0]], codes)[0]
    while len(chosen) < n_pivots:
        nxt = int(np.argmax(mind))
        chosen.append(nxt)
        mind = np.minimum(mind, hamming_distances(codes[nxt], codes)[0])
    return codes[chosen].copy()


def incremental(
    codes: np.ndarray,
    n_pivots: int,
    rng: np.random.Generator,
    n_candidates: int = 40,
    n_pairs: int = 4000,
) -> np.ndarray:
    n = codes.shape[0]
    a = rng.integers(0, n, n_pairs)
    b = rng.integers(0, n, n_pairs)
    bound = np.zeros(n_pairs, dtype=np.int32)
    pivots = []
    for _ in range(n_pivots):
        cand = codes[rng.choice(n, min(n, n_candidates), replace=False)]
        d = hamming_distances(cand, codes)  # (C, n)
        gain = np.maximum(bound[None, :], np.abs(d[:, a] - d[:, b])).mean(axis=1)
        best = int(np.argmax(gain))
        pivots.append(cand[best])
        bound = np.maximum(bound, np.abs(d[best, a] - d[best, b]))
    return np.ascontiguousarray(np.stack(pivots))


def select_pivots(
    codes: np.ndarray,
    n_pivots: int = 8,
    method: str = "furthest_first",
    sample: int = 10000,
    seed: int = 42,
) -> np.ndarray:
    """Chooses ``n_pivots`` pivot codes (n_pivots, n_bits // 8) from a seeded sample of codes."""
    codes = as_codes(codes)
    n_pivots = count(n_pivots, "n_pivots", 1, MAX_PIVOTS)
    sample = count(sample, "pivot_sample", 1)
    seed = _seed(seed)
    if method not in METHODS:
        raise InvalidInputError(f"pivot method must be one of {METHODS}, got {method!r}")
    if codes.shape[0] == 0:
        raise InvalidInputError("cannot choose pivots from zero codes")
    rng = np.random.default_rng(seed)
    pool = np.ascontiguousarray(_sample(codes, int(sample), rng))
    if method == "furthest_first":
        return furthest_first(pool, int(n_pivots), rng)
    return incremental(pool, int(n_pivots), rng)


def pivot_table(
    codes: np.ndarray, pivots: np.ndarray, chunk: int = 1 << 20, out: Optional[np.ndarray] = None
) -> np.ndarray:
    """Every code's distance to each pivot: (n, P), uint8 (uint16 above NARROW_TABLE_MAX_BITS)."""
    codes = as_codes(codes)
    pivots = as_codes(pivots, "pivots")
    dtype = table_dtype(codes.shape[1] * 8)
    table = out if out is not None else np.empty((codes.shape[0], pivots.shape[0]), dtype=dtype)
    for s in range(0, codes.shape[0], chunk):
        table[s : s + chunk] = hamming_distances(pivots, codes[s : s + chunk]).T
    return table
