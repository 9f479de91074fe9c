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
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._io import atomic_write, fsync_dir, sha256_array
from .codes import as_codes
from .errors import IndexFormatError, InvalidInputError, InvalidTypeError
from .hamming import _count, _threads, hamming_distances
from .itq import ITQ, as_embeddings
from .pivots import pivot_table, select_pivots, table_dtype

FORMAT = "hashpivot-index"
VERSION = 1
STORES = ("float32", "float16", "int8", None)
HEADER = "header.json"

PathLike = Union[str, "os.PathLike[str]"]


def _check_rows(x: np.ndarray, name: str) -> None:
    if x.shape[0] and not np.einsum("ij,ij->i", x, x).all():
        bad = int((np.einsum("ij,ij->i", x, x) == 0).sum())
        raise InvalidInputError(
            f"{name} contain {bad} zero vector(s): an all-zero embedding has no direction "
            "(did the encoder fail?); drop those rows"
        )


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
        raise InvalidInputError("ids contain duplicates; every document needs its own id")
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


class Index:
    """A searchable index of embeddings. Create it with :meth:`build` or :meth:`load`."""

    def __init__(self, itq: ITQ, pivots: np.ndarray, store: Optional[str], levels: int,
                 meta: Optional[Dict[str, Any]] = None) -> None:
        self.itq = itq
        self.pivots = pivots
        self.store = store
        self.levels = levels
        self.meta: Dict[str, Any] = dict(meta or {})
        nb = itq.n_bits // 8
        self.codes = np.zeros((0, nb), dtype=np.uint8)
        self.table = np.zeros((0, pivots.shape[0]), dtype=table_dtype(itq.n_bits))
        self.ids = np.zeros(0, dtype=np.int64)
        self.vectors: Optional[np.ndarray] = None
        self.scales: Optional[np.ndarray] = None
        self.offsets = np.zeros(self._cells() + 1, dtype=np.int64)
        self._last_scanned = (0, 0)  # rows read, rows that a full scan would have read

    # ---- construction ----
    @classmethod
    def build(cls, embeddings: np.ndarray, n_bits: int = 128, n_pivots: int = 8,
              store: Optional[str] = "float32", seed: int = 42, device: str = "auto",
              ids: Optional[Sequence[int]] = None, pivot_method: str = "furthest_first",
              pivot_sample: int = 10000, n_iter: int = 50, max_train: Optional[int] = None,
              meta: Optional[Dict[str, Any]] = None, progress: Optional[bool] = None) -> "Index":
        """Trains ITQ on the embeddings, chooses pivots, and adds every row.

        ``store``: how vectors are kept for the exact rerank ("float32", "float16", "int8" with
        a scale per row, or None for codes only). Embeddings should be L2-normalised: scores
        are inner products (= cosine similarity).
        """
        if store not in STORES:
            raise InvalidInputError(f"store must be one of {STORES}, got {store!r}")
        x = as_embeddings(embeddings)
        _check_rows(x, "embeddings")
        itq = ITQ(n_bits=n_bits, n_iter=n_iter, seed=seed, device=device,
                  max_train=max_train).fit(x, progress=progress)
        codes = itq.encode(x, progress=progress)
        pivots = select_pivots(codes, n_pivots, pivot_method, pivot_sample, seed)
        levels = 2 if (itq.n_bits <= 256 and pivots.shape[0] >= 2) else 1
        index = cls(itq, pivots, store, levels, meta)
        index._append(x, codes, ids)
        return index

    def _cells(self) -> int:
        return (self.itq.n_bits + 1) ** self.levels

    def _keys(self, table: np.ndarray) -> np.ndarray:
        key = table[:, 0].astype(np.int64)
        if self.levels == 2:
            key = key * (self.itq.n_bits + 1) + table[:, 1]
        return key

    def _relayout(self, codes, table, ids, vectors, scales) -> None:
        """Sorts rows by their cell (stable, so insertion order breaks ties) and sets offsets."""
        key = self._keys(table)
        order = np.argsort(key, kind="stable")
        self.codes = np.ascontiguousarray(codes[order])
        self.table = np.ascontiguousarray(table[order])
        self.ids = np.ascontiguousarray(ids[order])
        self.vectors = None if vectors is None else np.ascontiguousarray(vectors[order])
        self.scales = None if scales is None else np.ascontiguousarray(scales[order])
        counts = np.bincount(key, minlength=self._cells())
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _append(self, x: np.ndarray, codes: np.ndarray, ids: Optional[Sequence[int]]) -> np.ndarray:
        n = x.shape[0]
        if ids is None:
            start = int(self.ids.max()) + 1 if self.ids.size else 0
            new_ids = np.arange(start, start + n, dtype=np.int64)
        else:
            new_ids = _as_ids(ids, n)
            clash = np.isin(new_ids, self.ids)
            if clash.any():
                raise InvalidInputError(
                    f"{int(clash.sum())} id(s) are already in the index (e.g. "
                    f"{int(new_ids[clash][0])}); remove them first or choose new ids"
                )
        table = pivot_table(codes, self.pivots)
        vec, sc = _quantize(x, self.store)
        cat = lambda a, b: b if a is None else np.concatenate([a, b])  # noqa: E731
        self._relayout(
            np.concatenate([self.codes, codes]), np.concatenate([self.table, table]),
            np.concatenate([self.ids, new_ids]),
            None if vec is None else cat(self.vectors, vec),
            None if sc is None else cat(self.scales, sc),
        )
        return new_ids

    def add(self, embeddings: np.ndarray, ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """Adds rows; ``ids`` default to max(id) + 1, + 2, ... Returns the ids given."""
        x = as_embeddings(embeddings, "embeddings", self.itq.dim)
        _check_rows(x, "embeddings")
        return self._append(x, self.itq.encode(x), ids)

    def remove(self, ids: Sequence[int]) -> int:
        """Removes the rows with these ids (every id must be present). Returns how many."""
        arr = np.unique(np.asarray(ids).reshape(-1))
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InvalidTypeError(f"ids must be integers, got dtype {arr.dtype}")
        missing = ~np.isin(arr, self.ids)
        if missing.any():
            raise InvalidInputError(
                f"{int(missing.sum())} id(s) are not in the index (e.g. {int(arr[missing][0])})"
            )
        keep = ~np.isin(self.ids, arr)
        self._relayout(self.codes[keep], self.table[keep], self.ids[keep],
                       None if self.vectors is None else self.vectors[keep],
                       None if self.scales is None else self.scales[keep])
        return int(arr.size)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_bits(self) -> int:
        return self.itq.n_bits

    @property
    def dim(self) -> int:
        return self.itq.dim

    # ---- search ----
    def encode_queries(self, queries: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        q = as_embeddings(queries, "queries", self.itq.dim)
        _check_rows(q, "queries")
        return q, self.itq.encode(q)

    def candidates(self, query_codes: np.ndarray, n: int, threshold: Optional[int] = None,
                   threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The first ``n`` rows by Hamming distance (internal rows, -1 padded), pivot-filtered
        when ``threshold`` is given: ``(distances int32, rows int64)``."""
        qc = as_codes(query_codes, "query codes", allow_1d=True)
        th = _threads(threads)
        if threshold is None:
            self._last_scanned = (qc.shape[0] * len(self), qc.shape[0] * len(self))
            return _core.knn(qc, self.codes, n, th)
        t = _count(threshold, "threshold", 0)
        if t > self.n_bits:
            raise InvalidInputError(f"threshold must be from 0 to n_bits={self.n_bits}, got {t}")
        qd = hamming_distances(qc, self.pivots).astype(np.int64)
        lo = np.ascontiguousarray(qd - t, dtype=np.int32)
        hi = np.ascontiguousarray(qd + t, dtype=np.int32)
        D, rows, scanned = _core.banded_knn(qc, self.codes, self.table, lo, hi, self.offsets,
                                            self.levels, n, th)
        self._last_scanned = (int(scanned), qc.shape[0] * len(self))
        return D, rows

    def _ids_of(self, rows: np.ndarray) -> np.ndarray:
        if not len(self):
            return np.full(rows.shape, -1, dtype=np.int64)
        return np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)

    def search(self, queries: np.ndarray, k: int = 10, threshold: Optional[int] = None,
               candidates: int = 1000, rerank: bool = True,
               threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The k best documents for each query: ``(scores, ids)``, each (nq, k).

        Hamming ranking over the rows (pivot-filtered when ``threshold`` is set); the first
        ``candidates`` are reranked by exact inner product when ``rerank`` and a store exist:
        float32 scores, descending. Otherwise int32 Hamming distances, ascending. Ids are -1
        (scores -inf, distances n_bits + 1) where fewer than k documents qualify.
        """
        k = _count(k, "k", 0)
        candidates = _count(candidates, "candidates", 1)
        q, qc = self.encode_queries(queries)
        exact = bool(rerank) and self.vectors is not None
        D, rows = self.candidates(qc, max(k, candidates) if exact else k, threshold, threads)
        if not exact:
            return D, self._ids_of(rows)
        S, R = _core.rerank(q, rows, self.vectors, self.scales, k, _threads(threads))
        return S, self._ids_of(R)

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
        }

    # ---- persistence ----
    def _arrays(self) -> Dict[str, np.ndarray]:
        arrays = {"codes": self.codes, "table": self.table, "ids": self.ids,
                  "offsets": self.offsets, "pivots": self.pivots}
        if self.vectors is not None:
            arrays["vectors"] = self.vectors
        if self.scales is not None:
            arrays["scales"] = self.scales
        return arrays

    def save(self, path: PathLike) -> None:
        """Saves to a directory: raw .npy arrays plus header.json (format version, shapes, dtypes,
        sha256). Arrays of a new generation are written and fsynced first, then the header is
        replaced atomically, then the old generation is deleted: a crash at any point leaves
        either the old index or the new one."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        gen = uuid.uuid4().hex[:12]
        entries = {}
        for name, arr in self._arrays().items():
            fname = f"{name}-{gen}.npy"
            atomic_write(root / fname, lambda f, a=arr: np.save(f, np.ascontiguousarray(a),
                                                                 allow_pickle=False))
            entries[name] = {"file": fname, "dtype": str(arr.dtype), "shape": list(arr.shape),
                             "sha256": sha256_array(np.ascontiguousarray(arr))}
        itq_file = f"itq-{gen}.npz"
        self.itq.save(root / itq_file)
        header = {"format": FORMAT, "version": VERSION, "n": len(self), "n_bits": self.n_bits,
                  "dim": self.dim, "n_pivots": int(self.pivots.shape[0]), "levels": self.levels,
                  "store": self.store, "meta": self.meta, "itq": itq_file, "arrays": entries}
        atomic_write(root / HEADER, lambda f: f.write(json.dumps(header, indent=1).encode()))
        keep = {HEADER, itq_file} | {e["file"] for e in entries.values()}
        for p in root.iterdir():  # the previous generation and leftovers of crashed saves
            if p.name not in keep and (p.suffix in (".npy", ".npz", ".tmp")):
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
            raise IndexFormatError(f"{root} is not a hashpivot index (no {HEADER})")
        try:
            header = json.loads(hp.read_bytes().decode())
            fmt, version = header.get("format"), header.get("version")
        except Exception:
            raise IndexFormatError(f"{hp} is corrupt (not JSON)") from None
        if fmt != FORMAT:
            raise IndexFormatError(f"{root} is not a hashpivot index (format {fmt!r})")
        if version != VERSION:
            raise IndexFormatError(
                f"{root} has index format version {version}; this hashpivot reads version "
                f"{VERSION}: upgrade hashpivot or rebuild the index")
        try:
            itq = ITQ.load(root / header["itq"])
            arrays = {}
            for name, e in header["arrays"].items():
                arrays[name] = cls._load_array(root, name, e, mmap, verify)
            index = cls(itq, np.ascontiguousarray(arrays["pivots"]), header["store"],
                        int(header["levels"]), header.get("meta"))
        except IndexFormatError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"{hp} is inconsistent: {e}") from None
        index.codes, index.table, index.ids = arrays["codes"], arrays["table"], arrays["ids"]
        index.offsets = arrays["offsets"]
        index.vectors, index.scales = arrays.get("vectors"), arrays.get("scales")
        index._validate(header)
        return index

    @staticmethod
    def _load_array(root: Path, name: str, e: dict, mmap: bool, verify: bool) -> np.ndarray:
        f = root / e["file"]
        if not f.is_file() or "/" in e["file"] or "\\" in e["file"]:
            raise IndexFormatError(f"{root}: array file for '{name}' is missing")
        try:
            a = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as err:
            raise IndexFormatError(f"{f} is truncated or corrupt: {err}") from None
        if str(a.dtype) != e["dtype"] or list(a.shape) != list(e["shape"]):
            raise IndexFormatError(f"{f}: dtype/shape {a.dtype}{a.shape} do not match the header")
        if verify and sha256_array(a) != e["sha256"]:
            raise IndexFormatError(f"{f}: checksum mismatch (the file is corrupt)")
        return a

    def _validate(self, header: dict) -> None:
        n, nb, P = int(header["n"]), self.n_bits // 8, self.pivots.shape[0]
        ok = (self.codes.shape == (n, nb) and self.table.shape == (n, P) and
              self.ids.shape == (n,) and self.offsets.shape == (self._cells() + 1,) and
              self.pivots.shape[1] == nb and int(header["dim"]) == self.dim and
              self.table.dtype == table_dtype(self.n_bits) and self.ids.dtype == np.int64 and
              self.offsets.dtype == np.int64 and self.codes.dtype == np.uint8)
        if self.vectors is not None:
            ok &= self.vectors.shape == (n, self.dim)
        if self.store == "int8":
            ok &= self.scales is not None and self.scales.shape == (n,)
        if not ok:
            raise IndexFormatError("the index arrays do not agree with each other or the header")
        if self.offsets[0] != 0 or self.offsets[-1] != n or (np.diff(self.offsets) < 0).any():
            raise IndexFormatError("the index's row offsets are inconsistent")
