"""One immutable version of an index's rows with its C++ snapshot (validated once): what a
search reads. ``Index`` swaps versions in one assignment, so a search sees the rows as they were
when it started; the version plans against its own shape and runs the plan in one call."""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _core
from .filters import IdMap, as_filter
from .layouts import Layout, Rows
from .layouts.base import PER_CANDIDATE
from .plan import IndexShape, Plan, make_plan

Allowed = Tuple[Optional[np.ndarray], Optional[np.ndarray]]  # (row bitmap, allowed rows)
# Plans (and their C++ form) a version remembers: a single query's search is ~20 us of Python
# planning otherwise, as much as the search itself on a small index.
PLAN_CACHE = 64


class Version:
    """The rows, their snapshot, and (when a filter needs it) their id map."""

    def __init__(self, layout: Layout, rows: Rows, cosine: bool) -> None:
        self.layout, self.rows = layout, rows
        self.snapshot = layout.snapshot(rows)
        self.snapshot.normalize = cosine  # queries scaled to unit length in C++
        self._idmap: Optional[IdMap] = None
        # memory-mapped members (hashpivot.storage.SizeGuard): checked before each search
        self.guards = [a.size_guard for a in rows.resident() if hasattr(a, "size_guard")]
        self._plans: Dict[tuple, Plan] = {}
        self._cores: Dict[Plan, _core.Plan] = {}

    @property
    def idmap(self) -> IdMap:
        if self._idmap is None:  # two threads may both build it: the same map, harmless
            self._idmap = IdMap(self.rows.ids)
        return self._idmap

    def shape(self, store: bool = True) -> IndexShape:
        """What a search plan needs to know about these rows (hashpivot.plan)."""
        lay = self.layout
        return IndexShape(
            capabilities=lay.capabilities,
            n_rows=self.rows.n,
            n_bits=lay.n_bits,
            has_itq=lay.itq is not None,
            has_store=store and self.rows.store is not None,
            n_groups=lay.n_groups,
            n_pivots=lay.n_pivots,
            extra_bits=self.rows.extra_bits,
        )

    def allowed(self, allowed: object) -> Allowed:
        """A filter (ids, mask or IdFilter) as rows of this version."""
        if allowed is None:
            return None, None
        return as_filter(allowed).resolve(self.idmap, self.rows.n)

    def plan(self, k: int, filt: Allowed, store: bool = True, **options: Any) -> Plan:
        """make_plan against these rows, remembered by its arguments (their types included, so
        that a value make_plan refuses, such as candidates=True, is never taken for another)."""
        n_allowed = None if filt[1] is None else len(filt[1])
        try:
            named = sorted({**options, "k": k, "store": store, "allowed": n_allowed}.items())
            key = tuple(
                (name, type(v).__name__, tuple(sorted(v.items())) if isinstance(v, dict) else v)
                for name, v in named
            )
            plan = self._plans.get(key)
        except TypeError:  # an unhashable option: make_plan says what is wrong with it
            key, plan = None, None
        if plan is None:
            plan = make_plan(self.shape(store), k, allowed=n_allowed, **options)
            if key is not None:
                remember(self._plans, key, plan)
        return plan

    def run(
        self, q: np.ndarray, plan: Plan, filt: Allowed
    ) -> Tuple[np.ndarray, np.ndarray, int, int]:
        """(scores or distances, ids, rows scanned, vectors reranked): the whole plan in one
        GIL-free call."""
        for guard in self.guards:
            guard.check()
        core = self._cores.get(plan)
        if core is None:
            core = remember(self._cores, plan, plan.to_core())
        bits, rows = filt
        return self.snapshot.search(q, core, bits, rows if plan.source == "allowed" else None)

    def stats(self) -> Dict[str, Any]:
        """What the rows are and cost: bytes per document (everything a search reads counted:
        an ivf snapshot's blocked codes and int8 centres in place of the arrays they were made
        from, which an index loaded with mmap leaves on disk; ``index_bytes_per_doc`` leaves out
        the stored vectors and the extra bits, read only for the rows reranked or re-estimated)
        and group sizes."""
        rows, lay = self.rows, self.layout
        n, store = rows.n, 0 if rows.store is None else rows.store.nbytes
        # read only for the rows a search re-estimates, as the store for those it reranks
        store += sum(a.nbytes for f, a in rows.arrays().items() if f in PER_CANDIDATE)
        # what a search reads: the snapshot's own copies in place of the arrays they replace
        copies = self.snapshot.copies
        replaced = {**rows.arrays(), **lay.model_arrays()}
        replaced = {k: a for k, a in replaced.items() if k in copies}
        own = sum(a.nbytes for f, a in rows.arrays().items() if f not in PER_CANDIDATE)
        own += lay.model_bytes()
        own += sum(copies.values()) - sum(a.nbytes for a in replaced.values())
        out: Dict[str, Any] = {
            "n": n,
            "n_bits": lay.n_bits,
            "dim": None if lay.itq is None else lay.itq.dim,
            "layout": lay.name,
            "n_pivots": lay.n_pivots,
            "sorted_levels": lay.levels,
            "groups": lay.n_groups,
            "bytes_per_doc": (own + store) / n if n else 0.0,
            "index_bytes_per_doc": own / n if n else 0.0,
            "code_bytes_per_doc": lay.n_bits // 8,
        }
        if lay.n_groups:
            sizes = np.percentile(np.diff(rows.offsets), [0, 50, 100])
            out[f"n_{lay.capabilities.group_noun}"] = lay.n_groups
            out["group_size_min_median_max"] = [int(v) for v in sizes]
        return out


def remember(cache: Dict[Any, Any], key: Any, value: Any) -> Any:
    """Stores value under key, forgetting everything first when the cache is full (a caller
    cycling through many option sets only loses the speed-up)."""
    if len(cache) >= PLAN_CACHE:
        cache.clear()
    cache[key] = value
    return value


class SearchTotals:
    """Searches, queries, rows scanned and stored vectors reranked since the index was made
    (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {
            "searches": 0,
            "queries": 0,
            "rows_scanned": 0,
            "rows_possible": 0,
            "rows_reranked": 0,
        }

    def record(self, n_queries: int, scanned: int, n_rows: int, reranked: int = 0) -> None:
        with self._lock:
            c = self._counts
            c["searches"] += 1
            c["queries"] += n_queries
            c["rows_scanned"] += int(scanned)
            c["rows_possible"] += n_queries * n_rows
            c["rows_reranked"] += int(reranked)

    def as_dict(self) -> Dict[str, Any]:
        with self._lock:
            c: Dict[str, Any] = dict(self._counts)
        c["scanned_share"] = c["rows_scanned"] / c["rows_possible"] if c["rows_possible"] else None
        return c
