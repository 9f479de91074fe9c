"""``partitioned``, the codes-only layout: rows grouped by the nearest of C Hamming centre codes,
ordered inside a partition by the distance to its centre, with each partition's covering radius:
exact search prunes partitions and rings by the triangle inequality, ``nprobe`` scans the nearest
few. It needs no float vectors, so it serves indexes of given codes (sentence-transformers
"ubinary", faiss binary codes); ivf serves embeddings better.

Centres: C codes drawn from a seeded sample and refined by binary k-means (each bit of a centre is
the majority bit of its members); every code then belongs to its nearest centre. Random seeding,
not furthest-first: on ITQ codes of real text, furthest-first picks outliers, which leaves
partitions of 1 to 8,000 rows (C = 4,000 over 1M) and recall@10 0.945 at nprobe=16, against 0 to
3,200 rows and 0.967 from random seeds (bench/PARTITION_RESULTS.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import numpy as np

from .. import _core
from ..codes import as_codes
from ..errors import InvalidInputError
from ..itq import ITQ
from ..kernels import hamming_knn
from ..pivots import furthest_first, table_dtype
from .base import (
    I32,
    I64,
    U8,
    VERIFY_CHUNK,
    Capabilities,
    Derived,
    Expectation,
    Rows,
    TrainOptions,
    default_groups,
    register,
    require,
)
from .base import starts as _starts
from .pivoted import PivotedLayout

if TYPE_CHECKING:  # pragma: no cover
    from ..storage import IndexHeader

KMEANS_ITERS = 5  # binary k-means rounds
MIN_TRAIN = 100_000  # rows binary k-means trains on (at least; 64 a centre beyond)
TRAIN_PER_PARTITION = 64


def train_centres(
    codes: np.ndarray,
    n_partitions: Optional[int] = None,
    seed: int = 42,
    sample: Optional[int] = None,
    iters: int = KMEANS_ITERS,
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
    C = default_groups(n) if n_partitions is None else int(n_partitions)
    if not 1 <= C <= n:
        raise InvalidInputError(
            f"n_partitions must be from 1 to the number of codes ({n}), got {C}"
        )
    rng = np.random.default_rng(seed)
    size = min(n, sample or max(TRAIN_PER_PARTITION * C, MIN_TRAIN))
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


@register
class PartitionedLayout(PivotedLayout):
    name = "partitioned"
    first_version = 2
    build_options = ("n_pivots", "n_partitions")
    group_array = "centres"
    capabilities = Capabilities(
        source="partitions",
        scorings=("asymmetric", "hamming"),
        code_input=True,
        hamming_shortlist=True,
        probe_by_default=False,  # exact (pruned by the covering radii) unless nprobe is given
        group_noun="partitions",
    )

    def __init__(
        self,
        n_bits: int,
        itq: Optional[ITQ],
        pivots: Optional[np.ndarray],
        centres: np.ndarray,
    ) -> None:
        super().__init__(n_bits, itq, pivots)
        self._centres = np.ascontiguousarray(centres)

    @classmethod
    def from_codes(
        cls, codes: np.ndarray, itq: Optional[ITQ], opts: TrainOptions
    ) -> PartitionedLayout:
        pivots = cls.choose_pivots(codes, opts)
        return cls(opts.n_bits, itq, pivots, train_centres(codes, opts.n_groups, opts.seed))

    @property
    def centres(self) -> np.ndarray:
        return self._centres

    @property
    def n_groups(self) -> int:
        return int(self._centres.shape[0])

    def model_arrays(self) -> Dict[str, np.ndarray]:
        return {**super().model_arrays(), "centres": self._centres}

    def derive(self, codes: np.ndarray, x: Optional[np.ndarray]) -> Derived:
        parts, dist = assign(codes, self._centres)
        return {
            **super().derive(codes, x),
            "parts": parts,
            "cdist": dist.astype(table_dtype(self.n_bits)),
        }

    def append(self, rows: Rows, new: Rows, derived: Derived) -> Rows:
        radius = rows.radius.copy()  # radii only grow (a removal leaves an upper bound)
        np.maximum.at(radius, derived["parts"], derived["cdist"].astype(np.int32))
        return super().append(replace(rows, radius=radius), new, derived)

    def order(self, rows: Rows, derived: Derived) -> Rows:
        parts = derived.get("parts", rows.parts)
        cdist = derived.get("cdist", rows.cdist)
        radius = rows.radius if rows.radius is not None else np.zeros(self.n_groups, np.int32)
        if rows.radius is None and parts.size:
            np.maximum.at(radius, parts, cdist.astype(np.int32))
        order = np.lexsort((cdist, parts))  # by partition, then distance to its centre
        rows = replace(
            rows, table=derived.get("table", rows.table), parts=parts, cdist=cdist, radius=radius
        )
        return rows.take(order, offsets=_starts(parts[order], self.n_groups))

    def snapshot(self, rows: Rows) -> _core.Snapshot:
        return _core.Snapshot(
            **self.common(rows),
            **self.pivot_snapshot_args(rows),
            centres=self._centres,
            part_offsets=rows.offsets,
            radius=rows.radius,
            cdist=rows.cdist,
        )

    @classmethod
    def from_header(
        cls, header: IndexHeader, itq: Optional[ITQ], model: Dict[str, np.ndarray]
    ) -> PartitionedLayout:
        return cls(header.n_bits, itq, model.get("pivots"), model["centres"])

    @classmethod
    def check_header(cls, header: IndexHeader) -> Optional[str]:
        return f"levels={header.levels}: partitions are not sorted cells" if header.levels else None

    @classmethod
    def expect(cls, header: IndexHeader) -> Expectation:
        n, C, tdt = header.n, header.groups, table_dtype(header.n_bits)
        return {
            **cls.pivot_expect(n, header.n_bits, header.n_pivots),
            "centres": (U8, (C, header.n_bits // 8)),
            "offsets": (I64, (C + 1,)),
            "parts": (I32, (n,)),
            "radius": (I32, (C,)),
            "cdist": (tdt, (n,)),
        }

    def verify(self, rows: Rows) -> None:
        C = self.n_groups
        require(bool(((rows.parts >= 0) & (rows.parts < C)).all()), "partition out of range")
        require(bool((np.diff(rows.parts) >= 0).all()), "rows not grouped by partition")
        require(
            bool((_starts(rows.parts, C) == rows.offsets).all()),
            "partition offsets do not match the rows",
        )
        for s in range(0, rows.n, VERIFY_CHUNK):
            c = rows.codes[s : s + VERIFY_CHUNK]
            d = np.unpackbits(c ^ self._centres[rows.parts[s : s + VERIFY_CHUNK]], axis=1).sum(1)
            require(
                bool((d == rows.cdist[s : s + VERIFY_CHUNK]).all()),
                "centre distances do not match the codes",
            )
        self.verify_table(rows)
