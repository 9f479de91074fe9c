"""User ids (int64, >= 0; -1 marks a missing result): checked once, and assigned to added rows."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ._validate import to_numpy
from .errors import DuplicateIdError, InvalidInputError, InvalidTypeError, LimitError
from .options import MAX_ID


def as_ids(ids: object, n: int) -> np.ndarray:
    """``n`` distinct user ids as int64, or a named error."""
    ids = to_numpy(ids)
    if not isinstance(ids, (np.ndarray, list, tuple, range)):
        raise InvalidTypeError(f"ids must be an array of integers, got {type(ids).__name__}")
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError, OverflowError):
        raise InvalidTypeError("ids must be integers") from None
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidTypeError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0):
        raise InvalidInputError("ids must be >= 0 (-1 marks a missing result)")
    if arr.size and arr.dtype == np.uint64 and arr.max() > MAX_ID:
        raise LimitError(f"ids must be at most 2**63 - 1, got {int(arr.max())}")
    arr = arr.astype(np.int64).reshape(-1)
    if arr.shape[0] != n:
        raise InvalidInputError(f"got {arr.shape[0]} ids for {n} embeddings")
    if np.unique(arr).shape[0] != n:
        raise DuplicateIdError("ids contain duplicates; every document needs its own id")
    return arr


def new_ids(existing: np.ndarray, n: int, ids: Optional[Sequence[int]]) -> np.ndarray:
    """The ids of ``n`` added rows: ``ids`` checked against the index's, or by default
    max(id) + 1, + 2, ..."""
    if ids is None:
        start = int(existing.max()) + 1 if len(existing) else 0
        if start + n - 1 > MAX_ID:
            raise LimitError(
                f"ids would pass 2**63 - 1 (the largest id is {start - 1}); give ids explicitly"
            )
        return np.arange(start, start + n, dtype=np.int64)
    arr = as_ids(ids, n)
    clash = np.isin(arr, existing)
    if clash.any():
        raise DuplicateIdError(
            f"{int(clash.sum())} id(s) are already in the index (e.g. {int(arr[clash][0])}); "
            "remove them first or choose new ids"
        )
    return arr


def id_set(ids: object) -> np.ndarray:
    """Distinct ids, sorted (what remove() takes: any integer array-like)."""
    try:
        arr = np.unique(np.asarray(to_numpy(ids)).reshape(-1))
    except (TypeError, ValueError):
        raise InvalidTypeError("ids must be integers") from None
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidTypeError(f"ids must be integers, got dtype {arr.dtype}")
    return arr
