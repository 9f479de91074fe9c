"""Filtered search: the documents a search may return, given by id.

``Index.search(..., allowed=...)`` takes a 1-D array of user ids (int64; ids the index does not
hold are ignored), a boolean mask over the index's ids in id order (``mask[j]`` is the j-th
smallest id; with the default ids 0..n-1, ``mask[id]``), or an :class:`IdFilter` built once from
either and reused across calls. The filter is applied inside the C++ scan, before rows count as
candidates, so ``candidates``, ``nprobe`` and tuned settings mean "among allowed rows".
"""

from __future__ import annotations

import threading
import weakref
from typing import Optional, Tuple

import numpy as np

from ._validate import to_numpy
from .errors import InvalidInputError, InvalidTypeError

RESOLVE_CHUNK = 1 << 20  # allowed ids looked up at a time: memory follows the index, not the list


class IdMap:
    """A version of the rows' ids, sorted, with the row of each (made once per version)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.order = np.argsort(ids, kind="stable")
        self.sorted = np.ascontiguousarray(ids[self.order])

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Rows (ascending) holding these ids; unknown and repeated ids are ignored. The list
        is looked up a chunk at a time, never sorted or copied whole."""
        n = self.sorted.size
        if not n or not ids.size:
            return np.zeros(0, np.int64)
        hit = np.zeros(n, dtype=bool)
        for s in range(0, ids.size, RESOLVE_CHUNK):
            part = ids[s : s + RESOLVE_CHUNK].astype(np.int64, copy=False)
            pos = np.minimum(np.searchsorted(self.sorted, part), n - 1)
            hit[self.order[pos[self.sorted[pos] == part]]] = True
        return np.flatnonzero(hit).astype(np.int64)


class IdFilter:
    """The allowed documents of filtered searches, by user id or by mask; build it once and pass
    it to many searches (its rows are worked out once per version of the index). An id array
    is used as given, not copied: do not change it while the filter is in use."""

    def __init__(self, allowed: object) -> None:
        a = to_numpy(allowed)
        if isinstance(a, (list, tuple, range)):
            a = np.asarray(a)
        if not isinstance(a, np.ndarray):
            raise InvalidTypeError(
                "allowed must be an array of ids, a boolean mask or an "
                f"IdFilter, got {type(allowed).__name__}"
            )
        if a.ndim != 1:
            raise InvalidInputError(f"allowed must be 1-D, got shape {a.shape}")
        self.mask: Optional[np.ndarray] = None
        self.ids: Optional[np.ndarray] = None
        if a.dtype == np.bool_:
            self.mask = a.copy()
        elif np.issubdtype(a.dtype, np.integer) or a.size == 0:
            self.ids = a  # not copied: read a chunk at a time when resolved (IdMap.rows_of)
        else:
            raise InvalidTypeError(
                f"allowed ids must be integers (or a boolean mask), got {a.dtype}"
            )
        self._lock = threading.Lock()
        self._cache: Tuple[Optional[weakref.ref], object] = (None, None)

    def resolve(self, idmap: IdMap, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """(bitmap over rows with a spare word, allowed rows ascending) for this version."""
        with self._lock:
            ref, value = self._cache
            if ref is not None and ref() is idmap:
                return value  # type: ignore[return-value]
        if self.mask is not None:
            if self.mask.shape[0] != n:
                raise InvalidInputError(
                    f"an allowed mask needs one entry per document ({n}), got {self.mask.shape[0]}"
                )
            rows = np.sort(idmap.order[self.mask]).astype(np.int64)
        else:
            rows = idmap.rows_of(self.ids)
        value = (bitmap(rows, n), np.ascontiguousarray(rows))
        with self._lock:
            self._cache = (weakref.ref(idmap), value)
        return value


def bitmap(rows: np.ndarray, n: int) -> np.ndarray:
    """A little-endian uint64 bitmap over n rows with one spare word (the scan reads 8 rows at a
    time from any offset)."""
    words = (n + 63) // 64 + 1
    flags = np.zeros(words * 64, dtype=bool)
    flags[rows] = True
    return np.packbits(flags, bitorder="little").view("<u8").copy()


def as_filter(allowed: object) -> IdFilter:
    return allowed if isinstance(allowed, IdFilter) else IdFilter(allowed)
