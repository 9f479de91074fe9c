"""The vectors an index keeps for the exact rerank: what a metric does to them (cosine scales
rows to unit length, ip keeps them) and how a store holds them (float32, float16, or int8 with
one scale a row)."""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .errors import NonFiniteError, ZeroVectorError

INT8_LEVELS = 127  # int8 store: x ~ scale * round(x / scale), |x / scale| <= 127
NORM_TOLERANCE = 1e-3  # |1 - ||x||| above this: not L2-normalised
MAX_SEGMENTS = _core.MAX_SEGMENTS  # store segments a snapshot accepts
_warned_unnormalised = False


# Rows checked, normalised and copied at once by prepare(): its working memory beyond the copy
# it returns (16,384 x 384 float32 = 25 MB).
PREPARE_CHUNK = 1 << 14


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length without underflow (scaled by their largest entry first)."""
    big = np.abs(x).max(axis=1, keepdims=True)
    y = x / np.where(big > 0, big, 1)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return y.astype(np.float32, copy=False)


def check_nonzero(x: np.ndarray, name: str) -> None:
    zero = ~(x != 0).any(axis=1)  # exact: a tiny but non-zero vector still has a direction
    if zero.any():
        raise ZeroVectorError(
            f"{name} contain {int(zero.sum())} zero vector(s): an all-zero embedding has no "
            "direction (did the encoder fail?); drop those rows"
        )


def prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """Embeddings as the index keeps them under ``metric``: a new float32 array the index owns
    (never a view of the caller's buffer, which an ingestion loop may reuse), unit rows under
    "cosine". Checked (finite, non-zero), converted and normalised a chunk of rows at a time
    into the one output, so that a build from an ``np.memmap`` holds the input's pages and this
    copy, nothing more. Warns once about unnormalised rows under "ip"."""
    global _warned_unnormalised
    n = x.shape[0]
    out = np.empty(x.shape, dtype=np.float32)
    bad = zero = 0
    off_unit = 0.0
    for s in range(0, n, PREPARE_CHUNK):
        chunk = np.asarray(x[s : s + PREPARE_CHUNK], dtype=np.float32)
        bad += int((~np.isfinite(chunk)).any(axis=1).sum())
        zero += int((~(chunk != 0).any(axis=1)).sum())
        if bad or zero:
            continue  # counted to the end for the message; nothing more to compute
        if metric == "cosine":
            out[s : s + PREPARE_CHUNK] = unit_rows(chunk)
        else:
            out[s : s + PREPARE_CHUNK] = chunk
            if chunk.size:
                norms = np.linalg.norm(chunk, axis=1)
                off_unit = max(off_unit, float(np.abs(norms - 1).max()))
    if bad:
        raise NonFiniteError(f"embeddings contain NaN or inf in {bad} row(s); fix or drop them")
    if zero:
        raise ZeroVectorError(
            f"embeddings contain {zero} zero vector(s): an all-zero embedding has no "
            "direction (did the encoder fail?); drop those rows"
        )
    if not _warned_unnormalised and off_unit > NORM_TOLERANCE:
        _warned_unnormalised = True
        warnings.warn(
            "indexing vectors that are not L2-normalised under metric='ip': scores are raw "
            "inner products (build with metric='cosine' for cosine similarity)",
            UserWarning,
            stacklevel=3,
        )
    return out


def quantize(
    x: np.ndarray, store: Optional[str]
) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(vectors, int8 scales or None) as ``store`` keeps them; (None, None) without a store."""
    if store is None:
        return None, None
    if store == "float32":
        return np.ascontiguousarray(x, dtype=np.float32), None
    if store == "float16":
        return np.ascontiguousarray(x, dtype=np.float16), None
    scale = np.abs(x).max(axis=1) / INT8_LEVELS
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(x / scale[:, None]), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return q, scale.astype(np.float32)


class Store:
    """Stored vectors in segments, in the order they were added (slots). ``add()`` appends a
    segment instead of copying the ones before, so a memory-mapped store stays mapped; small
    segments merge geometrically (the one before absorbs the new one while it is no larger and
    not mapped), so there are about log2(rows) of them. Rows find their vector through their
    slot (hashpivot.layouts.Rows.slots)."""

    def __init__(self, segments: Sequence[np.ndarray], scales: Sequence[np.ndarray] = ()) -> None:
        self.segments = tuple(segments)
        self.scales = tuple(scales)  # int8 only: one array a segment

    @classmethod
    def of(cls, vectors: np.ndarray, scales: Optional[np.ndarray]) -> Store:
        return cls([vectors], [] if scales is None else [scales])

    @property
    def n(self) -> int:
        return sum(len(s) for s in self.segments)

    @property
    def dtype(self) -> np.dtype:
        return self.segments[0].dtype

    @property
    def dim(self) -> int:
        return int(self.segments[0].shape[1])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.segments + self.scales)

    def append(self, other: Store) -> Store:
        segs = [s for s in self.segments if len(s)] + list(other.segments)
        scs = [c for s, c in zip(self.segments, self.scales) if len(s)] + list(other.scales)
        while len(segs) > 1 and (
            len(segs) > MAX_SEGMENTS
            or (len(segs[-2]) <= len(segs[-1]) and not isinstance(segs[-2], np.memmap))
        ):
            segs[-2:] = [np.concatenate(segs[-2:])]
            if scs:
                scs[-2:] = [np.concatenate(scs[-2:])]
        return Store(segs, scs)

    def gather(self, slots: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(vectors, scales) of these slots (all, in slot order, for None): one segment and no
        slots returns it as it is (mapped or not), anything else a copy."""
        scales = self.scales or None
        if slots is None:
            if len(self.segments) == 1:
                return self.segments[0], scales and scales[0]
            return np.concatenate(self.segments), scales and np.concatenate(scales)
        ends = np.cumsum([len(s) for s in self.segments])
        seg = np.searchsorted(ends, slots, side="right")
        out = np.empty((len(slots), self.dim), self.dtype)
        out_sc = np.empty(len(slots), np.float32) if scales else None
        for g in np.unique(seg):
            at = np.flatnonzero(seg == g)
            local = slots[at] - (ends[g - 1] if g else 0)
            out[at] = self.segments[g][local]
            if out_sc is not None:
                out_sc[at] = scales[g][local]
        return out, out_sc


class RowVectors:
    """The stored vectors (or int8 scales) in row order, gathered a slice at a time: what
    ``Index.vectors`` is when rows and store are not one array in the same order. Slicing,
    index arrays, ``len`` and ``np.asarray`` work as on an array."""

    def __init__(self, store: Store, slots: Optional[np.ndarray], part: int) -> None:
        self._store, self._slots, self._part = store, slots, part  # part 0: vectors, 1: scales
        n = store.n if slots is None else len(slots)
        self.shape = (n, store.dim) if part == 0 else (n,)
        self.dtype = store.dtype if part == 0 else np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = (
            np.arange(*key.indices(len(self)))
            if isinstance(key, slice)
            else np.arange(len(self))[key]
        )
        slots = rows if self._slots is None else self._slots[rows]
        return self._store.gather(np.atleast_1d(slots))[self._part].reshape(
            np.shape(rows) + self.shape[1:]
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[:]
        return a if dtype is None else a.astype(dtype, copy=False)
