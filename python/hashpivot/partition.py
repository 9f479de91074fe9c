"""Partitions in Hamming space for the partitioned layout: C centre codes drawn from a seeded
sample and refined by binary k-means (each bit of a centre is the majority bit of its members);
every code then belongs to its nearest centre.

Random seeding, not furthest-first: on ITQ codes of real text, furthest-first picks outliers,
which leaves partitions of 1 to 8,000 rows (C = 4,000 over 1M) and recall@10 0.945 at
nprobe=16, against 0 to 3,200 rows and 0.967 from random seeds (bench/PARTITION_RESULTS.md)."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .codes import as_codes
from .errors import InvalidInputError
from .kernels import hamming_knn
from .pivots import furthest_first


def default_partitions(n: int) -> int:
    """About 4 sqrt(N) partitions (at least 1, at most N)."""
    return int(max(1, min(n, round(4 * np.sqrt(max(n, 1))))))


def train_centres(
    codes: np.ndarray,
    n_partitions: Optional[int] = None,
    seed: int = 42,
    sample: Optional[int] = None,
    iters: int = 5,
    init: str = "random",
) -> np.ndarray:
    """(C, n_bits // 8) centre codes for ``codes``: ``init`` "random" (C distinct sample rows)
    or "furthest_first", then ``iters`` rounds of binary k-means on a sample of ``sample``
    rows (default max(64 C, 100,000)); an emptied centre takes a random sample row."""
    if init not in ("random", "furthest_first"):
        raise InvalidInputError(f"init must be 'random' or 'furthest_first', got {init!r}")
    codes = as_codes(codes)
    n = codes.shape[0]
    if n == 0:
        raise InvalidInputError("cannot partition zero codes")
    C = default_partitions(n) if n_partitions is None else int(n_partitions)
    if not 1 <= C <= n:
        raise InvalidInputError(
            f"n_partitions must be from 1 to the number of codes ({n}), got {C}"
        )
    rng = np.random.default_rng(seed)
    size = min(n, sample or max(64 * C, 100_000))
    pool = codes if size == n else codes[np.sort(rng.choice(n, size, replace=False))]
    pool = np.ascontiguousarray(pool)
    if init == "random":
        centres = np.ascontiguousarray(pool[rng.choice(size, C, replace=False)])
    else:
        centres = furthest_first(pool, C, rng)
    bits = np.unpackbits(pool, axis=1).astype(np.int32)
    for _ in range(iters):
        _, nearest = hamming_knn(pool, centres, 1)
        a = nearest[:, 0]
        order = np.argsort(a, kind="stable")
        counts = np.bincount(a, minlength=C)
        present = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts)])[present]
        sums = np.add.reduceat(bits[order], starts, axis=0)  # one row per non-empty cluster
        majority = (2 * sums >= counts[present, None]).astype(np.uint8)
        centres[present] = np.packbits(majority, axis=1)
        empty = np.flatnonzero(counts == 0)
        centres[empty] = pool[rng.choice(size, empty.size, replace=False)]
    return np.ascontiguousarray(centres)


def assign(
    codes: np.ndarray, centres: np.ndarray, threads: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each code and the distance to it: (int32 parts, int32 distances)."""
    d, nearest = hamming_knn(codes, centres, 1, threads=threads)
    return nearest[:, 0].astype(np.int32), d[:, 0].astype(np.int32)
