"""The optional pivot table of the Hamming layouts (flat, partitioned): every row's distance to
P pivot codes, which the research pivot band (``threshold``) filters on. Off by default
(``n_pivots=0``): it costs P bytes a row and the band saves no time on these CPUs
(bench/PIVOT_RESULTS.md); the seed's evaluation (``hashpivot eval``) builds with it."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..errors import InvalidInputError
from ..itq import ITQ
from ..kernels import hamming_distances
from ..pivots import pivot_table, select_pivots, table_dtype
from .base import U8, VERIFY_CHUNK, Derived, Expectation, Layout, Rows, TrainOptions, require


class PivotedLayout(Layout):
    """A Hamming layout with an optional pivot table."""

    def __init__(self, n_bits: int, itq: Optional[ITQ], pivots: Optional[np.ndarray]) -> None:
        super().__init__(n_bits, itq)
        nb = n_bits // 8
        self._pivots = np.ascontiguousarray(
            pivots if pivots is not None else np.zeros((0, nb), np.uint8)
        )

    @staticmethod
    def choose_pivots(codes: np.ndarray, opts: TrainOptions) -> Optional[np.ndarray]:
        if not opts.n_pivots:
            return None
        if codes.shape[0] == 0:
            raise InvalidInputError("cannot choose pivots from zero codes")
        return select_pivots(codes, opts.n_pivots, opts.pivot_method, opts.pivot_sample, opts.seed)

    @property
    def pivots(self) -> Optional[np.ndarray]:
        return self._pivots if self.n_pivots else None

    @property
    def n_pivots(self) -> int:
        return int(self._pivots.shape[0])

    def model_arrays(self) -> Dict[str, np.ndarray]:
        return {"pivots": self._pivots} if self.n_pivots else {}

    def derive(self, codes: np.ndarray, x: Optional[np.ndarray]) -> Derived:
        return {"table": pivot_table(codes, self._pivots)} if self.n_pivots else {}

    def pivot_snapshot_args(self, rows: Rows) -> Dict[str, object]:
        return {"pivots": self._pivots, "table": rows.table} if self.n_pivots else {}

    @staticmethod
    def pivot_expect(n: int, n_bits: int, P: int) -> Expectation:
        if not P:
            return {}
        return {"pivots": (U8, (P, n_bits // 8)), "table": (table_dtype(n_bits), (n, P))}

    def verify_table(self, rows: Rows) -> None:
        if not self.n_pivots:
            return
        for s in range(0, rows.n, VERIFY_CHUNK):
            d = hamming_distances(self._pivots, rows.codes[s : s + VERIFY_CHUNK]).T
            require(
                bool((d == rows.table[s : s + VERIFY_CHUNK]).all()),
                "pivot distances do not match the codes",
            )
