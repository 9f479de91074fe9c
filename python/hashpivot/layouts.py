"""How an index lays out its rows, one strategy per layout. Each keeps its model (pivots,
centres, the ITQ that encodes rows), builds the rows' arrays in its order, makes the C++
snapshot of a version of them, and says what its saved arrays must look like.

* ``flat``: every row, sorted by its distance to the first one or two pivots (cell offsets), so
  a pivot band is a few contiguous windows; a search scans every row (or the windows).
* ``partitioned``: rows grouped by the nearest of C Hamming centre codes, ordered inside a
  partition by the distance to its centre, with each partition's covering radius: exact search
  prunes partitions and rings by the triangle inequality, ``nprobe`` scans the nearest few.
* ``ivf``: rows grouped by the nearest of C float k-means centres, coded as ITQ codes of the
  residual x - c with a per-row factor (hashpivot.ivf); ``nprobe`` lists scored by <q, c>.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Dict, Optional, Tuple

import numpy as np

from . import _core
from ._validate import count
from .errors import CorruptFileError
from .itq import ITQ
from .kernels import hamming_distances
from .partition import assign as assign_partitions
from .pivots import pivot_table, table_dtype
from .plan import IndexShape

Expectation = Dict[str, Tuple[np.dtype, Tuple[int, ...]]]
U8, I32, I64, F32 = np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.float32)
VERIFY_CHUNK = 1 << 20  # rows whose derived arrays a verifying load recomputes at once


@dataclass(frozen=True)
class Rows:
    """One immutable version of the rows, in the layout's order. add/remove make a new one."""

    codes: np.ndarray
    ids: np.ndarray
    vectors: Optional[np.ndarray] = None
    scales: Optional[np.ndarray] = None
    table: Optional[np.ndarray] = None  # flat, partitioned: distances to the pivots (n, P)
    offsets: Optional[np.ndarray] = None  # flat: cell starts; partitioned, ivf: group starts
    parts: Optional[np.ndarray] = None  # partitioned: each row's partition
    radius: Optional[np.ndarray] = None  # partitioned: each partition's covering radius
    cdist: Optional[np.ndarray] = None  # partitioned: each row's distance to its centre
    lists: Optional[np.ndarray] = None  # ivf: each row's list
    factors: Optional[np.ndarray] = None  # ivf: each row's residual scale a_x

    def take(self, order: np.ndarray, **changed: Any) -> Rows:
        """These rows in another order (or a subset), with some arrays replaced."""

        def pick(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if a is None else np.ascontiguousarray(a[order])

        per_row = {f: pick(getattr(self, f)) for f in PER_ROW}
        per_row.update(changed)
        return replace(self, **per_row)

    def arrays(self) -> Dict[str, np.ndarray]:
        return {
            f: getattr(self, f) for f in self.__dataclass_fields__ if getattr(self, f) is not None
        }

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])


PER_ROW = ("codes", "ids", "vectors", "scales", "table", "parts", "cdist", "lists", "factors")


def _concat(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if b is None:
        return a
    return b if a is None else np.concatenate([a, b])


def _starts(groups: np.ndarray, n_groups: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(groups, minlength=n_groups))]).astype(
        np.int64
    )


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise CorruptFileError(f"the index arrays do not agree with each other: {what}")


class Layout:
    """A layout strategy: the model that places rows, and their order."""

    name: ClassVar[str]

    def __init__(self, n_bits: int, itq: Optional[ITQ]) -> None:
        self.n_bits = n_bits
        self.itq = itq  # encodes rows and queries (None: an index of given codes)

    # model
    def model_arrays(self) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def n_pivots(self) -> int:
        return 0

    @property
    def n_groups(self) -> int:
        return 0

    # rows
    def empty(self) -> Rows:
        return self.order(
            Rows(np.zeros((0, self.n_bits // 8), np.uint8), np.zeros(0, np.int64)),
            self.derive(np.zeros((0, self.n_bits // 8), np.uint8), None),
        )

    def encode(self, x: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """Codes of float rows (and any other per-row arrays the layout derives from them)."""
        codes = self.itq.encode(x)
        return codes, self.derive(codes, x)

    def derive(self, codes: np.ndarray, x: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        """Per-row arrays of new codes (pivot distances, partition...)."""
        raise NotImplementedError

    def append(self, rows: Rows, new: Rows, derived: Dict[str, np.ndarray]) -> Rows:
        both = Rows(
            **{
                f: _concat(getattr(rows, f), getattr(new, f))
                for f in ("codes", "ids", "vectors", "scales")
            }
        )
        merged = {f: _concat(getattr(rows, f), derived.get(f)) for f in derived}
        return self.order(replace(both, **{f: getattr(rows, f) for f in ("radius",)}), merged)

    def order(self, rows: Rows, derived: Dict[str, np.ndarray]) -> Rows:
        """Sorts rows (with their derived arrays) into the layout's order; sets the offsets."""
        raise NotImplementedError

    def remove(self, rows: Rows, keep: np.ndarray) -> Rows:
        kept = rows.take(np.flatnonzero(keep))
        return self.order(kept, {})

    # search
    def snapshot(self, rows: Rows) -> _core.Snapshot:
        raise NotImplementedError

    def shape(self, rows: Rows, has_store: bool) -> IndexShape:
        return IndexShape(
            layout=self.name,
            n_rows=rows.n,
            n_bits=self.n_bits,  # type: ignore
            has_itq=self.itq is not None,
            has_store=has_store,
            n_groups=self.n_groups,
            n_pivots=self.n_pivots,
        )

    def _common(self, rows: Rows, centre_queries: bool = True) -> Dict[str, Any]:
        itq = self.itq
        return dict(
            codes=rows.codes,
            ids=rows.ids,
            mean=None if itq is None or not centre_queries else itq.mean,
            projection=None if itq is None else itq.projection,
            vectors=rows.vectors,
            scales=rows.scales,
        )

    # files
    def expect(self, n: int, C: int) -> Expectation:
        """dtype and shape of each saved array (model and rows) for n rows, C groups."""
        raise NotImplementedError

    def verify(self, rows: Rows) -> None:
        """Recomputes what the rows' derived arrays must hold (a verifying load)."""


class FlatLayout(Layout):
    name = "flat"

    def __init__(self, n_bits: int, itq: Optional[ITQ], pivots: np.ndarray, levels: int) -> None:
        super().__init__(n_bits, itq)
        self.pivots = np.ascontiguousarray(pivots)
        self.levels = levels

    @staticmethod
    def levels_for(n_bits: int, n_pivots: int) -> int:
        """Rows sorted on two pivots while the cells fit ((n_bits + 1)^2 offsets), else one."""
        return 2 if (n_bits <= 256 and n_pivots >= 2) else 1

    @property
    def n_pivots(self) -> int:
        return int(self.pivots.shape[0])

    def model_arrays(self) -> Dict[str, np.ndarray]:
        return {"pivots": self.pivots}

    def derive(self, codes: np.ndarray, x: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        return {"table": pivot_table(codes, self.pivots)}

    def cells(self) -> int:
        return (self.n_bits + 1) ** self.levels

    def order(self, rows: Rows, derived: Dict[str, np.ndarray]) -> Rows:
        table = derived.get("table", rows.table)
        key = _core.cell_keys(np.ascontiguousarray(table), self.levels, self.n_bits)
        order = np.argsort(key, kind="stable")  # insertion order breaks ties
        return replace(rows, table=table).take(order, offsets=_starts(key[order], self.cells()))

    def snapshot(self, rows: Rows) -> _core.Snapshot:
        return _core.Snapshot(
            **self._common(rows),
            pivots=self.pivots,
            table=rows.table,
            cells=rows.offsets,
            levels=self.levels,
        )

    def expect(self, n: int, C: int) -> Expectation:
        nb, P = self.n_bits // 8, self.n_pivots
        return {
            "pivots": (U8, (P, nb)),
            "table": (table_dtype(self.n_bits), (n, P)),
            "offsets": (I64, (self.cells() + 1,)),
        }

    def verify(self, rows: Rows) -> None:
        key = _core.cell_keys(rows.table, self.levels, self.n_bits)
        _require(bool((np.diff(key) >= 0).all()), "rows are not sorted by pivot cell")
        _require(
            bool((_starts(key, self.cells()) == rows.offsets).all()),
            "cell offsets do not match the rows",
        )
        _verify_table(rows, self.pivots)


def _verify_table(rows: Rows, pivots: np.ndarray) -> None:
    for s in range(0, rows.n, VERIFY_CHUNK):
        d = hamming_distances(pivots, rows.codes[s : s + VERIFY_CHUNK]).T
        _require(
            bool((d == rows.table[s : s + VERIFY_CHUNK]).all()),
            "pivot distances do not match the codes",
        )


class PartitionedLayout(Layout):
    name = "partitioned"

    def __init__(
        self, n_bits: int, itq: Optional[ITQ], pivots: np.ndarray, centres: np.ndarray
    ) -> None:
        super().__init__(n_bits, itq)
        self.pivots = np.ascontiguousarray(pivots)
        self.centres = np.ascontiguousarray(centres)

    @property
    def n_pivots(self) -> int:
        return int(self.pivots.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.centres.shape[0])

    def model_arrays(self) -> Dict[str, np.ndarray]:
        return {"pivots": self.pivots, "centres": self.centres}

    def derive(self, codes: np.ndarray, x: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        parts, dist = assign_partitions(codes, self.centres)
        return {
            "table": pivot_table(codes, self.pivots),
            "parts": parts,
            "cdist": dist.astype(table_dtype(self.n_bits)),
        }

    def append(self, rows: Rows, new: Rows, derived: Dict[str, np.ndarray]) -> Rows:
        radius = rows.radius.copy()  # radii only grow (a removal leaves an upper bound)
        np.maximum.at(radius, derived["parts"], derived["cdist"].astype(np.int32))
        return super().append(replace(rows, radius=radius), new, derived)

    def order(self, rows: Rows, derived: Dict[str, np.ndarray]) -> Rows:
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
            **self._common(rows),
            pivots=self.pivots,
            table=rows.table,
            centres=self.centres,
            part_offsets=rows.offsets,
            radius=rows.radius,
            cdist=rows.cdist,
        )

    def expect(self, n: int, C: int) -> Expectation:
        nb, P, tdt = self.n_bits // 8, self.n_pivots, table_dtype(self.n_bits)
        return {
            "pivots": (U8, (P, nb)),
            "table": (tdt, (n, P)),
            "centres": (U8, (C, nb)),
            "offsets": (I64, (C + 1,)),
            "parts": (I32, (n,)),
            "radius": (I32, (C,)),
            "cdist": (tdt, (n,)),
        }

    def verify(self, rows: Rows) -> None:
        C = self.n_groups
        _require(bool(((rows.parts >= 0) & (rows.parts < C)).all()), "partition out of range")
        _require(bool((np.diff(rows.parts) >= 0).all()), "rows not grouped by partition")
        _require(
            bool((_starts(rows.parts, C) == rows.offsets).all()),
            "partition offsets do not match the rows",
        )
        for s in range(0, rows.n, VERIFY_CHUNK):
            c = rows.codes[s : s + VERIFY_CHUNK]
            d = np.unpackbits(c ^ self.centres[rows.parts[s : s + VERIFY_CHUNK]], axis=1).sum(1)
            _require(
                bool((d == rows.cdist[s : s + VERIFY_CHUNK]).all()),
                "centre distances do not match the codes",
            )
        _verify_table(rows, self.pivots)


class IVFLayout(Layout):
    name = "ivf"

    def __init__(self, n_bits: int, itq: ITQ, centres: np.ndarray) -> None:
        super().__init__(n_bits, itq)
        self.centres = np.ascontiguousarray(centres, dtype=np.float32)

    @property
    def n_groups(self) -> int:
        return int(self.centres.shape[0])

    def model_arrays(self) -> Dict[str, np.ndarray]:
        return {"list_centres": self.centres}

    def empty(self) -> Rows:
        z = np.zeros(0, np.int32)
        return self.order(
            Rows(np.zeros((0, self.n_bits // 8), np.uint8), np.zeros(0, np.int64)),
            {"lists": z, "factors": np.zeros(0, np.float32)},
        )

    def encode(self, x: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        from .ivf import assign, residual_codes

        lists = assign(x, self.centres, self.itq.device)
        codes, factors = residual_codes(self.itq, x, self.centres, lists)
        return codes, {"lists": lists, "factors": factors}

    def encode_assigned(
        self, x: np.ndarray, lists: np.ndarray
    ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        from .ivf import residual_codes

        codes, factors = residual_codes(self.itq, x, self.centres, lists)
        return codes, {"lists": lists.astype(np.int32), "factors": factors}

    def derive(self, codes: np.ndarray, x: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        raise CorruptFileError("an ivf index encodes embeddings itself")  # pragma: no cover

    def order(self, rows: Rows, derived: Dict[str, np.ndarray]) -> Rows:
        lists = derived.get("lists", rows.lists)
        order = np.argsort(lists, kind="stable")
        rows = replace(rows, lists=lists, factors=derived.get("factors", rows.factors))
        return rows.take(order, offsets=_starts(lists[order], self.n_groups))

    def snapshot(self, rows: Rows) -> _core.Snapshot:
        # queries are not centred: <q, x> = <q, c> + <q, r>, and <q, r> ~ <W^T q, y>
        return _core.Snapshot(
            **self._common(rows, centre_queries=False),
            list_centres=self.centres,
            list_offsets=rows.offsets,
            factors=rows.factors,
            lists=rows.lists,
        )

    def expect(self, n: int, C: int) -> Expectation:
        dim = self.itq.dim
        return {
            "list_centres": (F32, (C, dim)),
            "offsets": (I64, (C + 1,)),
            "lists": (I32, (n,)),
            "factors": (F32, (n,)),
        }

    def verify(self, rows: Rows) -> None:
        C = self.n_groups
        _require(bool(((rows.lists >= 0) & (rows.lists < C)).all()), "list out of range")
        _require(bool((np.diff(rows.lists) >= 0).all()), "rows not grouped by list")
        _require(
            bool((_starts(rows.lists, C) == rows.offsets).all()),
            "list offsets do not match the rows",
        )
        _require(
            bool(np.isfinite(rows.factors).all() and np.isfinite(self.centres).all()),
            "non-finite factors or centres",
        )


def make_layout(
    name: str, n_bits: int, itq: Optional[ITQ], model: Dict[str, np.ndarray], levels: int = 0
) -> Layout:
    if name == "flat":
        return FlatLayout(n_bits, itq, model["pivots"], levels)
    if name == "partitioned":
        return PartitionedLayout(n_bits, itq, model["pivots"], model["centres"])
    return IVFLayout(n_bits, itq, model["list_centres"])


# Groups a saved header may declare beyond its rows (remove() can leave more lists than rows;
# 4 * sqrt(N) lists at 10M rows is 12,650).
MAX_GROUPS = 1 << 16


def group_count(name: str, entries: Dict[str, Any], n: int) -> int:
    """C of a saved partitioned or ivf index, bounded before anything is allocated."""
    key = {"partitioned": "centres", "ivf": "list_centres"}.get(name)
    if key is None:
        return 0
    try:
        C = count(entries[key]["shape"][0], "groups", 1, max(n, MAX_GROUPS))
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise CorruptFileError(f"the header's {key} are malformed ({e})") from None
    return C
