"""``hashpivot.Index``: ITQ codes + pivot band filter + Hamming ranking + exact rerank.

Rows are stored sorted by their distance to the first pivot(s) (``levels`` = 1 or 2), with cell
offsets, so the band ``|d(q, p_i) - d(x, p_i)| <= t`` on those pivots is a few contiguous row
windows: rows outside them are never read. The other pivots are checked inside the windows, only
for rows whose Hamming distance could enter the candidate list. Internal row order is mapped
back to the user's int64 ids.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._io import atomic_write, fsync_dir, sha256_array
from .codes import as_codes
from .errors import (CorruptFileError, DimensionError, DuplicateIdError, FormatVersionError,
                     IndexFormatError, InvalidInputError, InvalidTypeError, UnknownIdError,
                     ZeroVectorError)
from .hamming import _count, _threads, hamming_distances
from .itq import ITQ, as_embeddings
from .partition import assign, train_centres
from .pivots import pivot_table, select_pivots, table_dtype

FORMAT = "hashpivot-index"
VERSION = 2
STORES = ("float32", "float16", "int8", None)
HEADER = "header.json"
AUTO_FULL_SCAN = 200_000  # rows up to which shortlist="auto" means a full asymmetric scan

PathLike = Union[str, "os.PathLike[str]"]


def _check_rows(x: np.ndarray, name: str) -> None:
    if x.shape[0] and not np.einsum("ij,ij->i", x, x).all():
        bad = int((np.einsum("ij,ij->i", x, x) == 0).sum())
        raise ZeroVectorError(
            f"{name} contain {bad} zero vector(s): an all-zero embedding has no direction "
            "(did the encoder fail?); drop those rows"
        )


def _check_layout(layout: str) -> None:
    if layout not in ("flat", "partitioned"):
        raise InvalidInputError(f"layout must be 'flat' or 'partitioned', got {layout!r}")


def _as_ids(ids: object, n: int) -> np.ndarray:
    if not isinstance(ids, (np.ndarray, list, tuple, range)):
        raise InvalidTypeError(f"ids must be an array of integers, got {type(ids).__name__}")
    arr = np.asarray(ids)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidTypeError(f"ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64).reshape(-1)
    if arr.shape[0] != n:
        raise InvalidInputError(f"got {arr.shape[0]} ids for {n} embeddings")
    if (arr < 0).any():
        raise InvalidInputError("ids must be >= 0 (-1 marks a missing result)")
    if np.unique(arr).shape[0] != n:
        raise DuplicateIdError("ids contain duplicates; every document needs its own id")
    return arr


def _quantize(x: np.ndarray, store: Optional[str]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    if store is None:
        return None, None
    if store == "float32":
        return np.ascontiguousarray(x, dtype=np.float32), None
    if store == "float16":
        return np.ascontiguousarray(x, dtype=np.float16), None
    scale = np.abs(x).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


@dataclass(frozen=True)
class Rows:
    """One consistent version of the stored rows, in the sorted layout. Searches read a
    snapshot; add/remove build a new one and swap it in with one assignment, so a search running
    beside them sees the old rows or the new ones, never a mix."""

    codes: np.ndarray
    table: np.ndarray
    ids: np.ndarray
    offsets: np.ndarray  # flat: pivot-cell starts; partitioned: partition starts
    vectors: Optional[np.ndarray] = None
    scales: Optional[np.ndarray] = None
    parts: Optional[np.ndarray] = None   # partitioned: each row's partition (int32)
    radius: Optional[np.ndarray] = None  # partitioned: each partition's covering radius (int32)
    cdist: Optional[np.ndarray] = None   # partitioned: each row's distance to its centre


def _centre_distances_match(codes: np.ndarray, centres: np.ndarray, parts: np.ndarray,
                            cdist: np.ndarray, chunk: int = 1 << 20) -> bool:
    """Whether cdist holds every row's Hamming distance to its centre (checked in chunks)."""
    for s in range(0, codes.shape[0], chunk):
        x = np.bitwise_xor(codes[s:s + chunk], centres[parts[s:s + chunk]])
        if not (np.bitwise_count(x).sum(axis=1, dtype=np.int64) == cdist[s:s + chunk]).all():
            return False
    return True


class Index:
    """A searchable index of embeddings (or of packed codes). Create it with :meth:`build`,
    :meth:`from_codes` or :meth:`load`.

    Thread safety: any number of threads may search while one adds or removes; each search sees
    the index as it was when it started. add/remove calls are serialised by a lock."""

    def __init__(self, itq: Optional[ITQ], pivots: np.ndarray, store: Optional[str], levels: int,
                 meta: Optional[Dict[str, Any]] = None, n_bits: Optional[int] = None,
                 centres: Optional[np.ndarray] = None) -> None:
        self.itq = itq
        self.centres = centres  # partitioned layout when set
        self.layout = "flat" if centres is None else "partitioned"
        self.n_bits = int(itq.n_bits if itq is not None else n_bits)
        self.pivots = pivots
        self.store = store
        self.levels = levels
        self.meta: Dict[str, Any] = dict(meta or {})
        nb = self.n_bits // 8
        empty_parts = None if centres is None else np.zeros(0, np.int32)
        empty_radius = None if centres is None else np.zeros(len(centres), np.int32)
        empty_cdist = None if centres is None else np.zeros(0, table_dtype(self.n_bits))
        self._rows = Rows(np.zeros((0, nb), dtype=np.uint8),
                          np.zeros((0, pivots.shape[0]), dtype=table_dtype(self.n_bits)),
                          np.zeros(0, dtype=np.int64), np.zeros(self._cells() + 1, dtype=np.int64),
                          parts=empty_parts, radius=empty_radius, cdist=empty_cdist)
        self._write_lock = threading.Lock()
        self._last_scanned = (0, 0)  # rows read, rows that a full scan would have read

    # the current rows (a snapshot: read it once per operation)
    codes = property(lambda self: self._rows.codes)
    table = property(lambda self: self._rows.table)
    ids = property(lambda self: self._rows.ids)
    offsets = property(lambda self: self._rows.offsets)
    vectors = property(lambda self: self._rows.vectors)
    scales = property(lambda self: self._rows.scales)

    # ---- construction ----
    @classmethod
    def build(cls, embeddings: np.ndarray, n_bits: int = 128, n_pivots: int = 8,
              store: Optional[str] = "float32", seed: int = 42, device: str = "auto",
              ids: Optional[Sequence[int]] = None, pivot_method: str = "furthest_first",
              pivot_sample: int = 10000, n_iter: int = 50, max_train: Optional[int] = None,
              meta: Optional[Dict[str, Any]] = None, progress: Optional[bool] = None,
              layout: str = "flat", n_partitions: Optional[int] = None) -> "Index":
        """Trains ITQ on the embeddings, chooses pivots, and adds every row.

        ``store``: how vectors are kept for the exact rerank ("float32", "float16", "int8" with
        a scale per row, or None for codes only). Embeddings should be L2-normalised: scores
        are inner products (= cosine similarity). ``layout="partitioned"`` groups rows by the
        nearest of ``n_partitions`` centre codes (default about 4 sqrt(N)) for sub-linear search.
        """
        _check_layout(layout)
        if store not in STORES:
            raise InvalidInputError(f"store must be one of {STORES}, got {store!r}")
        x = as_embeddings(embeddings)
        _check_rows(x, "embeddings")
        itq = ITQ(n_bits=n_bits, n_iter=n_iter, seed=seed, device=device,
                  max_train=max_train).fit(x, progress=progress)
        codes = itq.encode(x, progress=progress)
        pivots = select_pivots(codes, n_pivots, pivot_method, pivot_sample, seed)
        centres = train_centres(codes, n_partitions, seed) if layout == "partitioned" else None
        index = cls(itq, pivots, store, cls._levels_for(itq.n_bits, pivots), meta,
                    centres=centres)
        index._append(x, codes, ids)
        return index

    @classmethod
    def from_codes(cls, codes: np.ndarray, ids: Optional[Sequence[int]] = None,
                   n_pivots: int = 8, seed: int = 42, pivot_method: str = "furthest_first",
                   pivot_sample: int = 10000, meta: Optional[Dict[str, Any]] = None,
                   layout: str = "flat", n_partitions: Optional[int] = None) -> "Index":
        """An index of packed codes you already have (sentence-transformers "ubinary", or
        faiss codes through :func:`hashpivot.from_faiss_codes`): no vectors, no ITQ. Search
        it with :meth:`search_codes`."""
        _check_layout(layout)
        codes = as_codes(codes)
        pivots = select_pivots(codes, n_pivots, pivot_method, pivot_sample, seed)
        n_bits = codes.shape[1] * 8
        centres = train_centres(codes, n_partitions, seed) if layout == "partitioned" else None
        index = cls(None, pivots, None, cls._levels_for(n_bits, pivots), meta, n_bits=n_bits,
                    centres=centres)
        index._append(None, codes, ids)
        return index

    @staticmethod
    def _levels_for(n_bits: int, pivots: np.ndarray) -> int:
        return 2 if (n_bits <= 256 and pivots.shape[0] >= 2) else 1

    def _cells(self) -> int:
        return (self.n_bits + 1) ** self.levels

    def _keys(self, table: np.ndarray) -> np.ndarray:
        key = table[:, 0].astype(np.int64)
        if self.levels == 2:
            key = key * (self.n_bits + 1) + table[:, 1]
        return key

    def _layout(self, codes, table, ids, vectors, scales, parts=None, radius=None,
                cdist=None) -> Rows:
        """Sorts rows by their pivot cell (flat) or by partition, then distance to its centre
        (partitioned); the sort is stable, so insertion order breaks ties. Sets the offsets."""
        if self.centres is None:
            key, cells = self._keys(table), self._cells()
            counts = np.bincount(key, minlength=cells)
        else:
            key = parts.astype(np.int64) * (self.n_bits + 1) + cdist
            counts = np.bincount(parts, minlength=len(self.centres))
        order = np.argsort(key, kind="stable")
        take = lambda a: None if a is None else np.ascontiguousarray(a[order])  # noqa: E731
        return Rows(take(codes), take(table), take(ids),
                    np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                    take(vectors), take(scales), take(parts), radius, take(cdist))

    def _append(self, x: Optional[np.ndarray], codes: np.ndarray,
                ids: Optional[Sequence[int]]) -> np.ndarray:
        with self._write_lock:
            old = self._rows
            n = codes.shape[0]
            if ids is None:
                start = int(old.ids.max()) + 1 if old.ids.size else 0
                new_ids = np.arange(start, start + n, dtype=np.int64)
            else:
                new_ids = _as_ids(ids, n)
                clash = np.isin(new_ids, old.ids)
                if clash.any():
                    raise DuplicateIdError(
                        f"{int(clash.sum())} id(s) are already in the index (e.g. "
                        f"{int(new_ids[clash][0])}); remove them first or choose new ids")
            table = pivot_table(codes, self.pivots)
            vec, sc = _quantize(x, self.store) if x is not None else (None, None)
            cat = lambda a, b: None if b is None else (b if a is None else np.concatenate([a, b]))  # noqa: E731
            parts = radius = cdist = None
            if self.centres is not None:  # new rows join their nearest centre; radii only grow
                new_parts, dist = assign(codes, self.centres)
                parts = np.concatenate([old.parts, new_parts])
                cdist = np.concatenate([old.cdist, dist.astype(old.cdist.dtype)])
                radius = old.radius.copy()
                np.maximum.at(radius, new_parts, dist)
            self._rows = self._layout(
                np.concatenate([old.codes, codes]), np.concatenate([old.table, table]),
                np.concatenate([old.ids, new_ids]), cat(old.vectors, vec), cat(old.scales, sc),
                parts, radius, cdist)
            return new_ids

    def _require_itq(self) -> ITQ:
        if self.itq is None:
            raise InvalidInputError("this index was built from codes (no ITQ model): "
                                    "use add_codes() and search_codes()")
        return self.itq

    def add(self, embeddings: np.ndarray, ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """Adds rows; ``ids`` default to max(id) + 1, + 2, ... Returns the ids given."""
        itq = self._require_itq()
        x = as_embeddings(embeddings, "embeddings", itq.dim)
        _check_rows(x, "embeddings")
        return self._append(x, itq.encode(x), ids)

    def add_codes(self, codes: np.ndarray, ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """Adds packed codes to an index made by :meth:`from_codes`."""
        if self.itq is not None:
            raise InvalidInputError("this index encodes embeddings itself: use add()")
        codes = as_codes(codes)
        if codes.shape[1] * 8 != self.n_bits:
            raise DimensionError(f"codes have {codes.shape[1] * 8} bits; the index has {self.n_bits}")
        return self._append(None, codes, ids)

    def remove(self, ids: Sequence[int]) -> int:
        """Removes the rows with these ids (every id must be present). Returns how many."""
        arr = np.unique(np.asarray(ids).reshape(-1))
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InvalidTypeError(f"ids must be integers, got dtype {arr.dtype}")
        with self._write_lock:
            old = self._rows
            missing = ~np.isin(arr, old.ids)
            if missing.any():
                raise UnknownIdError(
                    f"{int(missing.sum())} id(s) are not in the index (e.g. {int(arr[missing][0])})")
            keep = ~np.isin(old.ids, arr)
            sel = lambda a: None if a is None else a[keep]  # noqa: E731
            self._rows = self._layout(old.codes[keep], old.table[keep], old.ids[keep],
                                      sel(old.vectors), sel(old.scales), sel(old.parts),
                                      old.radius, sel(old.cdist))  # radii stay upper bounds
        return int(arr.size)

    def __len__(self) -> int:
        return int(self._rows.ids.shape[0])

    @property
    def dim(self) -> Optional[int]:
        return self.itq.dim if self.itq is not None else None

    # ---- search ----
    def encode_queries(self, queries: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        itq = self._require_itq()
        q = as_embeddings(queries, "queries", itq.dim)
        _check_rows(q, "queries")
        return q, itq.encode(q)

    def candidates(self, query_codes: np.ndarray, n: int, threshold: Optional[int] = None,
                   threads: Optional[int] = None, rows: Optional[Rows] = None,
                   nprobe: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The first ``n`` rows by Hamming distance (internal rows, -1 padded), pivot-filtered
        when ``threshold`` is given (flat layout), from the ``nprobe`` nearest partitions or all
        that can hold a result (partitioned layout): ``(distances int32, rows int64)``."""
        rows = rows or self._rows
        qc = as_codes(query_codes, "query codes", allow_1d=True)
        if qc.shape[1] * 8 != self.n_bits:
            raise DimensionError(f"query codes have {qc.shape[1] * 8} bits; the index has {self.n_bits}")
        th = _threads(threads)
        n_rows = rows.ids.shape[0]
        if nprobe is not None:
            nprobe = _count(nprobe, "nprobe", 1)
            if self.centres is None:
                raise InvalidInputError("nprobe needs layout='partitioned'")
        lo = hi = None
        if threshold is not None:
            t = _count(threshold, "threshold", 0)
            if t > self.n_bits:
                raise InvalidInputError(f"threshold must be from 0 to n_bits={self.n_bits}, got {t}")
            qd = hamming_distances(qc, self.pivots).astype(np.int64)
            lo = np.ascontiguousarray(qd - t, dtype=np.int32)
            hi = np.ascontiguousarray(qd + t, dtype=np.int32)
        if self.centres is not None:
            D, found, scanned = _core.partition_knn(
                qc, rows.codes, self.centres, rows.offsets, rows.radius, rows.cdist, n,
                nprobe or 0, th, None if lo is None else rows.table, lo, hi)
            self._last_scanned = (int(scanned), qc.shape[0] * n_rows)
            return D, found
        if threshold is None:
            self._last_scanned = (qc.shape[0] * n_rows, qc.shape[0] * n_rows)
            return _core.knn(qc, rows.codes, n, th)
        D, found, scanned = _core.banded_knn(qc, rows.codes, rows.table, lo, hi, rows.offsets,
                                             self.levels, n, th)
        self._last_scanned = (int(scanned), qc.shape[0] * n_rows)
        return D, found

    @staticmethod
    def _ids_of(rows: Rows, found: np.ndarray) -> np.ndarray:
        if not rows.ids.shape[0]:
            return np.full(found.shape, -1, dtype=np.int64)
        return np.where(found >= 0, rows.ids[np.maximum(found, 0)], -1)

    def search(self, queries: np.ndarray, k: int = 10, threshold: Optional[int] = None,
               candidates: int = 300, rerank: bool = True, threads: Optional[int] = None,
               scoring: str = "asymmetric", shortlist: Union[int, str, None] = "auto",
               nprobe: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The k best documents for each query: ``(scores, ids)``, each (nq, k).

        ``scoring="hamming"``: Hamming ranking of the binarized query over the rows
        (pivot-filtered when ``threshold`` is set). ``scoring="asymmetric"``: the codes are
        ranked by z . (2 b - 1) with the query's float ITQ projection z, by a full scan, or,
        with ``shortlist=M``, over the first M rows of the Hamming ranking (which the pivot
        filter may cut). The first ``candidates`` are reranked by exact inner product when
        ``rerank`` and a store exist: float32 scores, descending. Without that: Hamming
        distances (int32, ascending) or asymmetric scores (float32, descending). Ids are -1
        (scores -inf, distances n_bits + 1) where fewer than k documents qualify.

        Defaults (see the README's benchmark): asymmetric scoring with 300 candidates keeps
        the quality of Hamming ranking with 1000; ``shortlist="auto"`` is a full asymmetric
        scan up to 200,000 rows (or no pivot filter), beyond that a Hamming shortlist of
        3 x candidates, since a full asymmetric scan costs about 2.3 Hamming scans.

        A partitioned index with ``nprobe=K`` and asymmetric scoring (shortlist "auto") picks
        the K partitions whose centres score best for the float projection and scans them
        asymmetrically; in exact mode (``nprobe=None``) it ranks by Hamming first, with the
        triangle-inequality bounds, and re-scores that shortlist of 3 x candidates.
        """
        k = _count(k, "k", 1)
        candidates = _count(candidates, "candidates", 1)
        if scoring not in ("hamming", "asymmetric"):
            raise InvalidInputError(f"scoring must be 'hamming' or 'asymmetric', got {scoring!r}")
        if nprobe is not None:
            nprobe = _count(nprobe, "nprobe", 1)
            if self.centres is None:
                raise InvalidInputError("nprobe needs layout='partitioned'")
        partition_scan = (scoring == "asymmetric" and self.centres is not None and
                          nprobe is not None and threshold is None and shortlist == "auto")
        if shortlist == "auto":
            shortlist = None
            if scoring == "asymmetric" and not partition_scan and (
                    threshold is not None or len(self) > AUTO_FULL_SCAN or self.centres is not None):
                shortlist = 3 * max(k, candidates)
        elif shortlist is not None:
            shortlist = _count(shortlist, "shortlist", 1)
            if scoring != "asymmetric":
                raise InvalidInputError("shortlist is the Hamming stage of scoring='asymmetric'")
        if scoring == "asymmetric" and shortlist is None and self.centres is not None \
                and not partition_scan:
            shortlist = 3 * max(k, candidates)
        if scoring == "asymmetric" and threshold is not None and shortlist is None:
            raise InvalidInputError("the pivot filter works on the Hamming ranking: with "
                                    "scoring='asymmetric' give a shortlist=M as well")
        if scoring == "asymmetric" and self.itq is None:
            raise InvalidInputError("asymmetric scoring needs the ITQ model: an index built "
                                    "from codes is searched with search_codes()")
        q, qc = self.encode_queries(queries)
        rows = self._rows
        th = _threads(threads)
        exact = bool(rerank) and rows.vectors is not None
        L = max(k, candidates) if exact else k
        if scoring == "hamming":
            D, found = self.candidates(qc, L, threshold, threads, rows, nprobe)
            if not exact:
                return D, self._ids_of(rows, found)
        else:
            z = self.itq.project(q)
            if partition_scan:  # asymmetric choice of partitions and scan of their rows
                _, pool, scanned = _core.asym_partition_knn(
                    z, rows.codes, self.centres, rows.offsets, nprobe, max(2 * L, L + 64), th)
                self._last_scanned = (int(scanned), q.shape[0] * len(rows.ids))
            elif shortlist is not None:
                _, pool = self.candidates(qc, max(shortlist, L), threshold, threads, rows, nprobe)
            else:  # quantized full scan, then exact float scores of twice as many as needed
                _, pool = _core.asym_knn(z, rows.codes, max(2 * L, L + 64), th)
                self._last_scanned = (q.shape[0] * len(rows.ids), q.shape[0] * len(rows.ids))
            S, found = _core.asym_rescore(z, rows.codes, pool, L, th)
            if not exact:
                return S, self._ids_of(rows, found)
        S, R = _core.rerank(q, found, rows.vectors, rows.scales, k, th)
        return S, self._ids_of(rows, R)

    def search_codes(self, query_codes: np.ndarray, k: int = 10, threshold: Optional[int] = None,
                     threads: Optional[int] = None, nprobe: Optional[int] = None
                     ) -> Tuple[np.ndarray, np.ndarray]:
        """Hamming search with packed query codes: ``(distances int32, ids int64)``."""
        k = _count(k, "k", 1)
        rows = self._rows
        D, found = self.candidates(query_codes, k, threshold, threads, rows, nprobe)
        return D, self._ids_of(rows, found)

    def stats(self) -> Dict[str, Any]:
        n = len(self)
        nbytes = self.codes.nbytes + self.table.nbytes + self.ids.nbytes
        store = 0 if self.vectors is None else self.vectors.nbytes + (
            0 if self.scales is None else self.scales.nbytes)
        scanned, full = self._last_scanned
        return {
            "n": n, "n_bits": self.n_bits, "dim": self.dim, "n_pivots": int(self.pivots.shape[0]),
            "sorted_levels": self.levels, "store": self.store,
            "bytes_per_doc": (nbytes + store) / n if n else 0.0,
            "code_bytes_per_doc": self.n_bits // 8,
            "last_search_scanned_share": scanned / full if full else None,
            "layout": self.layout,
            **({} if self.centres is None else {
                "n_partitions": len(self.centres),
                "partition_size_min_median_max": [int(v) for v in np.percentile(
                    np.diff(self.offsets), [0, 50, 100])]}),
        }

    # ---- persistence ----
    def save(self, path: PathLike) -> None:
        """Saves to a directory: raw .npy arrays plus header.json (format version, shapes, dtypes,
        sha256). Arrays of a new generation are written and fsynced first, then the header is
        replaced atomically, then the old generation is deleted: a crash at any point leaves
        either the old index or the new one."""
        rows = self._rows
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        gen = uuid.uuid4().hex[:12]
        arrays = {"codes": rows.codes, "table": rows.table, "ids": rows.ids,
                  "offsets": rows.offsets, "pivots": self.pivots, "vectors": rows.vectors,
                  "scales": rows.scales, "parts": rows.parts, "radius": rows.radius,
                  "cdist": rows.cdist, "centres": self.centres}
        entries = {}
        for name, arr in arrays.items():
            if arr is None:
                continue
            arr = np.ascontiguousarray(arr)
            fname = f"{name}-{gen}.npy"
            atomic_write(root / fname, lambda f, a=arr: np.save(f, a, allow_pickle=False))
            entries[name] = {"file": fname, "dtype": str(arr.dtype), "shape": list(arr.shape),
                             "sha256": sha256_array(arr)}
        itq_file = None
        if self.itq is not None:
            itq_file = f"itq-{gen}.npz"
            self.itq.save(root / itq_file)
        header = {"format": FORMAT, "version": VERSION, "n": int(rows.ids.shape[0]),
                  "n_bits": self.n_bits, "dim": self.dim, "n_pivots": int(self.pivots.shape[0]),
                  "levels": self.levels, "store": self.store, "meta": self.meta, "itq": itq_file,
                  "layout": self.layout,
                  "arrays": entries}
        atomic_write(root / HEADER, lambda f: f.write(json.dumps(header, indent=1).encode()))
        keep = {HEADER, itq_file} | {e["file"] for e in entries.values()}
        for p in root.iterdir():  # the previous generation and leftovers of crashed saves
            if p.name not in keep and p.suffix in (".npy", ".npz", ".tmp"):
                try:
                    p.unlink()
                except OSError:
                    pass
        fsync_dir(root)

    @classmethod
    def load(cls, path: PathLike, mmap: bool = True, verify: bool = True) -> "Index":
        """Loads a saved index; ``mmap`` maps the arrays read-only (shared between processes).
        Refuses an unknown version, a missing, truncated or corrupt file (checksums when
        ``verify``). Nothing is ever unpickled."""
        root = Path(path)
        hp = root / HEADER
        if not hp.is_file():
            raise CorruptFileError(f"{root} is not a hashpivot index (no {HEADER})")
        try:
            header = json.loads(hp.read_bytes().decode())
            fmt, version = header.get("format"), header.get("version")
        except Exception:
            raise CorruptFileError(f"{hp} is corrupt (not JSON)") from None
        if fmt != FORMAT:
            raise CorruptFileError(f"{root} is not a hashpivot index (format {fmt!r})")
        # version 1 differs only for the partitioned layout (no centre distances, other order)
        if version != VERSION and not (version == 1 and header.get("layout", "flat") == "flat"):
            raise FormatVersionError(
                f"{root} has index format version {version}; this hashpivot reads version "
                f"{VERSION} (and flat indexes of version 1): upgrade hashpivot or rebuild the index")
        try:
            itq = ITQ.load(cls._member(root, header["itq"], "itq")) if header["itq"] else None
            arrays = {name: cls._load_array(root, name, e, mmap, verify)
                      for name, e in header["arrays"].items()}
            centres = arrays.get("centres")
            if (header.get("layout", "flat") == "partitioned") != (centres is not None):
                raise CorruptFileError(f"{hp}: the layout does not match the arrays")
            index = cls(itq, np.ascontiguousarray(arrays["pivots"]), header["store"],
                        int(header["levels"]), header.get("meta"), n_bits=int(header["n_bits"]),
                        centres=None if centres is None else np.ascontiguousarray(centres))
            index._rows = Rows(arrays["codes"], arrays["table"], arrays["ids"], arrays["offsets"],
                               arrays.get("vectors"), arrays.get("scales"), arrays.get("parts"),
                               arrays.get("radius"), arrays.get("cdist"))
            index._validate(header, verify)
        except IndexFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
            raise CorruptFileError(f"{hp} is inconsistent: {e!r}") from None
        return index

    @staticmethod
    def _member(root: Path, name: object, what: str) -> Path:
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise CorruptFileError(f"{root}: bad file name for '{what}' in the header")
        f = root / name
        if not f.is_file():
            raise CorruptFileError(f"{root}: the file for '{what}' ({name}) is missing")
        return f

    @classmethod
    def _load_array(cls, root: Path, name: str, e: dict, mmap: bool, verify: bool) -> np.ndarray:
        f = cls._member(root, e["file"], name)
        try:
            a = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as err:
            raise CorruptFileError(f"{f} is truncated or corrupt: {err}") from None
        if str(a.dtype) != e["dtype"] or list(a.shape) != list(e["shape"]):
            raise CorruptFileError(f"{f}: dtype/shape {a.dtype}{a.shape} do not match the header")
        if verify and sha256_array(a) != e["sha256"]:
            raise CorruptFileError(f"{f}: checksum mismatch (the file is corrupt)")
        return a

    def _validate(self, header: dict, verify: bool) -> None:
        r = self._rows
        n, nb, P = int(header["n"]), self.n_bits // 8, self.pivots.shape[0]
        n_off = self._cells() + 1 if self.centres is None else len(self.centres) + 1
        ok = (r.codes.shape == (n, nb) and r.table.shape == (n, P) and
              r.ids.shape == (n,) and r.offsets.shape == (n_off,) and
              self.pivots.shape[1] == nb and self.pivots.dtype == np.uint8 and
              r.table.dtype == table_dtype(self.n_bits) and r.ids.dtype == np.int64 and
              r.offsets.dtype == np.int64 and r.codes.dtype == np.uint8 and
              1 <= P <= 16 and self.levels in (1, 2) and self.store in STORES)
        if self.itq is not None:
            ok &= header.get("dim") == self.itq.dim and self.itq.n_bits == self.n_bits
        if r.vectors is not None:
            ok &= r.vectors.ndim == 2 and r.vectors.shape[0] == n and \
                (self.itq is None or r.vectors.shape[1] == self.itq.dim)
        if self.store == "int8":
            ok &= r.scales is not None and r.scales.shape == (n,)
        if self.centres is not None:
            C = len(self.centres)
            ok &= (self.centres.ndim == 2 and self.centres.shape[1] == nb and
                   self.centres.dtype == np.uint8 and r.parts is not None and
                   r.parts.shape == (n,) and r.parts.dtype == np.int32 and
                   r.radius is not None and r.radius.shape == (C,) and r.radius.dtype == np.int32 and
                   r.cdist is not None and r.cdist.shape == (n,) and
                   r.cdist.dtype == table_dtype(self.n_bits))
            if ok and n:  # the search's bounds trust these: order, radii, distances
                ok &= bool(((r.parts >= 0) & (r.parts < C)).all())
                key = r.parts.astype(np.int64) * (self.n_bits + 1) + r.cdist
                ok &= bool((np.diff(key) >= 0).all())
                ok &= bool((r.cdist <= r.radius[r.parts]).all())
                ok &= bool((np.bincount(r.parts, minlength=C) == np.diff(r.offsets)).all())
                if ok and verify:
                    ok &= _centre_distances_match(r.codes, self.centres, r.parts, r.cdist)
        if not ok:
            raise CorruptFileError("the index arrays do not agree with each other or the header")
        if r.offsets[0] != 0 or r.offsets[-1] != n or (np.diff(r.offsets) < 0).any():
            raise CorruptFileError("the index's row offsets are inconsistent")
        if n and int(r.table.max()) > self.n_bits:
            raise CorruptFileError("the pivot table holds distances above n_bits")
