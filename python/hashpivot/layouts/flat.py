"""``flat``: every row is scanned. With pivots (research, off by default) the rows are sorted by
their distance to the first one or two pivots (cell offsets), so a pivot band is a few contiguous
windows; without, rows stay in insertion order and an add only appends."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Dict, Optional

import numpy as np

from .. import _core
from ..itq import ITQ
from .base import I64, Capabilities, Derived, Expectation, Rows, TrainOptions, register, require
from .base import starts as _starts
from .pivoted import PivotedLayout

if TYPE_CHECKING:  # pragma: no cover
    from ..storage import IndexHeader

WIDE_CELLS_BITS = 256  # beyond this many bits, (n_bits + 1)^2 cell offsets are too many


@register
class FlatLayout(PivotedLayout):
    name = "flat"
    first_version = 1
    build_options = ("n_pivots",)
    capabilities = Capabilities(
        source="all",
        scorings=("asymmetric", "hamming"),
        code_input=True,
        hamming_shortlist=True,
        probe_by_default=False,
    )

    def __init__(
        self, n_bits: int, itq: Optional[ITQ], pivots: Optional[np.ndarray], levels: int
    ) -> None:
        super().__init__(n_bits, itq, pivots)
        self._levels = levels

    @classmethod
    def from_codes(cls, codes: np.ndarray, itq: Optional[ITQ], opts: TrainOptions) -> FlatLayout:
        pivots = cls.choose_pivots(codes, opts)
        P = 0 if pivots is None else len(pivots)
        return cls(opts.n_bits, itq, pivots, cls.levels_for(opts.n_bits, P))

    @staticmethod
    def levels_for(n_bits: int, n_pivots: int) -> int:
        """Rows sorted on two pivots while the cells fit ((n_bits + 1)^2 offsets), else one;
        none without pivots."""
        if n_pivots == 0:
            return 0
        return 2 if (n_bits <= WIDE_CELLS_BITS and n_pivots >= 2) else 1

    @property
    def levels(self) -> int:
        return self._levels

    def cells(self) -> int:
        return (self.n_bits + 1) ** self._levels

    def order(self, rows: Rows, derived: Derived) -> Rows:
        if not self.n_pivots:
            return rows  # insertion order
        table = derived.get("table", rows.table)
        key = _core.cell_keys(np.ascontiguousarray(table), self._levels, self.n_bits)
        order = np.argsort(key, kind="stable")  # insertion order breaks ties
        return replace(rows, table=table).take(order, offsets=_starts(key[order], self.cells()))

    def snapshot(self, rows: Rows) -> _core.Snapshot:
        cells = {"cells": rows.offsets, "levels": self._levels} if self.n_pivots else {}
        return _core.Snapshot(**self.common(rows), **self.pivot_snapshot_args(rows), **cells)

    @classmethod
    def from_header(
        cls, header: IndexHeader, itq: Optional[ITQ], model: Dict[str, np.ndarray]
    ) -> FlatLayout:
        return cls(header.n_bits, itq, model.get("pivots"), header.levels)

    @classmethod
    def check_header(cls, header: IndexHeader) -> Optional[str]:
        P, levels = header.n_pivots, header.levels
        if (P == 0 and levels != 0) or (P > 0 and not 1 <= levels <= P):
            return f"levels={levels} with {P} pivots"
        return None

    @classmethod
    def expect(cls, header: IndexHeader) -> Expectation:
        P = header.n_pivots
        want = cls.pivot_expect(header.n, header.n_bits, P)
        if P:
            want["offsets"] = (I64, ((header.n_bits + 1) ** header.levels + 1,))
        return want

    def verify(self, rows: Rows) -> None:
        if not self.n_pivots:
            return
        key = _core.cell_keys(rows.table, self._levels, self.n_bits)
        require(bool((np.diff(key) >= 0).all()), "rows are not sorted by pivot cell")
        require(
            bool((_starts(key, self.cells()) == rows.offsets).all()),
            "cell offsets do not match the rows",
        )
        self.verify_table(rows)
