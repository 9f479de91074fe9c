"""``hashpivot.Index``: the facade. It validates input and plans a search (hashpivot.plan); a
layout strategy (hashpivot.layouts) holds the model and orders the rows; each version of the
rows has one C++ snapshot, validated once, that runs a whole search in one call; saving and
loading are hashpivot.storage's.

Thread safety: any number of threads may search while one adds or removes; a search sees the
rows as they were when it started (the version and its snapshot are swapped in one assignment).
add/remove calls are serialised by a lock.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Dict, Literal, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._validate import choice, count
from .codes import as_codes, check_n_bits
from .defaults import choose_build
from .documents import DocStore
from .errors import (
    CorruptFileError,
    InvalidInputError,
    InvalidTypeError,
    LimitError,
    UnknownIdError,
)
from .filters import IdFilter
from .ids import id_set, new_ids
from .itq import ITQ, as_embeddings
from .layouts import Layout, Rows, TrainOptions, check_build_options, layout_class
from .options import LAYOUTS, MAX_ROWS, METRICS, STORES, LayoutName, Metric, ScoringName, StoreName
from .plan import IndexShape, Plan
from .storage import load_index, save_index
from .vectors import Store, prepare, quantize
from .version import SearchTotals, Version

PathLike = Union[str, "os.PathLike[str]"]  # noqa: F821


class Index:
    """A searchable index of embeddings (or of packed codes). Create it with :meth:`build`,
    :meth:`from_codes` or :meth:`load`; search it with :meth:`search` (``(scores, ids)``, like
    faiss)."""

    def __init__(
        self,
        layout: Layout,
        store: Optional[str],
        metric: str,
        rows: Rows,
        meta: Optional[Dict[str, Any]] = None,
        tuned: Optional[Dict[str, Any]] = None,
    ) -> None:
        self._layout = layout
        self.store = store
        self.metric = metric
        self.meta: Dict[str, Any] = dict(meta or {})
        self.tuned: Dict[str, Any] = dict(tuned or {})
        self.documents: Optional[DocStore] = None  # what `hashpivot build` stores beside the rows
        self._write_lock = threading.Lock()
        self._totals = SearchTotals()
        if store is not None and rows.store is None and layout.itq is not None:
            # an empty index still has a typed store: it saves and loads like any other
            rows = replace(rows, store=Store.of(*quantize(np.zeros((0, layout.itq.dim)), store)))
        self._set_rows(rows)

    def _set_rows(self, rows: Rows) -> None:
        self._version = Version(self._layout, rows, self.metric == "cosine")

    # ---- what it is (arrays as read-only views: a stray write cannot change the index) ----
    layout = property(lambda self: self._layout.name, doc="'flat', 'partitioned' or 'ivf'")
    n_bits = property(lambda self: self._layout.n_bits, doc="bits per code")
    itq = property(lambda self: self._layout.itq, doc="the ITQ model (None: built from codes)")
    codes = property(lambda self: _read_only(self._version.rows.codes), doc="packed codes")
    ids = property(lambda self: _read_only(self._version.rows.ids), doc="user id of each row")
    table = property(lambda self: _read_only(self._version.rows.table), doc="pivot distances")
    offsets = property(lambda self: _read_only(self._version.rows.offsets), doc="group starts")
    vectors = property(lambda self: _read_only(self._version.rows.vectors), doc="stored vectors")
    scales = property(lambda self: _read_only(self._version.rows.scales), doc="int8 scales")

    pivots = property(lambda self: _read_only(self._layout.pivots), doc="pivot codes (or None)")
    centres = property(lambda self: _read_only(self._layout.centres), doc="group centres")
    levels = property(lambda self: self._layout.levels, doc="pivots the rows are sorted by")
    capabilities = property(lambda self: self._layout.capabilities, doc="what the layout can do")

    dim = property(lambda self: None if self.itq is None else self.itq.dim, doc="vector size")

    def __len__(self) -> int:
        return self._version.rows.n

    def __repr__(self) -> str:
        extra = f", groups={self._layout.n_groups}" if self._layout.n_groups else ""
        extra_bits = self.shape().extra_bits
        if extra_bits:
            extra += f", extra_bits={extra_bits}"
        chosen = (self.meta or {}).get("defaults")
        if isinstance(chosen, dict) and chosen.get("chosen"):
            names = ", ".join(map(str, chosen["chosen"]))
            extra += f"; {names} chosen for {chosen.get('rows', 0):,} rows"
        return (
            f"hashpivot.Index(layout={self.layout!r}, rows={len(self):,}, "
            f"n_bits={self.n_bits}, store={self.store!r}, metric={self.metric!r}{extra})"
        )

    def __reduce__(self):
        raise InvalidTypeError(
            "a hashpivot.Index cannot be pickled: save() it and load() it "
            "(memory-mapped, so processes share one copy)"
        )

    # ---- construction ----
    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        n_bits: Optional[int] = None,
        n_pivots: int = 0,
        store: Optional[StoreName] = "float32",
        seed: int = 42,
        device: str = "auto",
        ids: Optional[Sequence[int]] = None,
        pivot_method: Literal["furthest_first", "incremental"] = "furthest_first",
        pivot_sample: int = 10000,
        n_iter: int = 50,
        max_train: Optional[int] = None,
        meta: Optional[Dict[str, Any]] = None,
        progress: Optional[bool] = None,
        layout: Optional[LayoutName] = None,
        n_partitions: Optional[int] = None,
        n_lists: Optional[int] = None,
        metric: Metric = "cosine",
        extra_bits: Optional[int] = None,
    ) -> Index:
        """Trains the codes on the embeddings and adds every row.

        ``layout``, ``n_bits``, ``extra_bits``: None (the default) chooses them from the number
        of rows (:mod:`hashpivot.defaults`: flat below 10,000 rows, else ivf with 2 extra bits;
        256 bits), and ``repr`` says what was chosen. ``layout``: "flat" (every row scanned),
        "partitioned" (Hamming centres, exact pruning or ``nprobe``), "ivf" (float k-means lists
        of residual codes: recall that holds at millions of rows; tune it with :meth:`tune`).
        ``metric``: "cosine" normalises the embeddings (and queries) to unit length; "ip" keeps
        them as they are and scores raw inner products. ``store``: how vectors are kept for the
        exact rerank ("float32", "float16", "int8" with a scale per row, or None for codes only).
        ``n_pivots``: a pivot table for the research band (``threshold``); off by default, as it
        costs P bytes a row and saves no time on current CPUs (bench/PIVOT_RESULTS.md).
        ``extra_bits`` (ivf): bits a dimension kept beyond the sign code, on disk beside the
        stored vectors, for a re-estimate of the best rows before the rerank (Extended RaBitQ;
        ``search(reestimate=...)``).
        """
        if layout is not None:
            choice(layout, "layout", LAYOUTS)
        if extra_bits is not None:
            extra_bits = count(extra_bits, "extra_bits", 0, _core.MAX_EXTRA_BITS)
        choice(store, "store", STORES)
        choice(metric, "metric", METRICS)
        embeddings = as_embeddings(embeddings, convert=False)
        picked = choose_build(
            len(embeddings),
            embeddings.shape[1],
            store,
            layout,
            n_bits,
            extra_bits,
            n_pivots=n_pivots,
            n_partitions=n_partitions,
            n_lists=n_lists,
        )
        layout, n_bits, extra_bits = picked.layout, picked.n_bits, picked.extra_bits
        if picked.chosen:
            meta = {**(meta or {}), "defaults": picked.meta()}
        check_build_options(
            layout,
            dim=embeddings.shape[1],
            n_bits=check_n_bits(n_bits),
            n_pivots=n_pivots,
            n_partitions=n_partitions,
            n_lists=n_lists,
            extra_bits=extra_bits,
        )
        groups = n_partitions if n_partitions is not None else n_lists
        opts = replace(
            TrainOptions.checked(
                check_n_bits(n_bits), seed, n_pivots, pivot_method, pivot_sample, groups
            ),
            device=device,
            n_iter=n_iter,
            max_train=max_train,
            progress=progress,
            extra_bits=extra_bits,
        )
        x = prepare(embeddings, metric)
        lay, codes, derived = layout_class(layout).train(x, opts)
        rows, _ = _grown(lay, store, lay.empty(), x, codes, derived, ids)
        return cls(lay, store, metric, rows, meta)

    def empty_like(self) -> Index:
        """An empty index with this one's trained codec (ITQ model, pivots or centres), store
        and metric: rows added to it are coded exactly as here (the shards of one index)."""
        return Index(
            self._layout, self.store, self.metric, self._layout.empty(), self.meta, self.tuned
        )

    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray,
        ids: Optional[Sequence[int]] = None,
        n_pivots: int = 0,
        seed: int = 42,
        pivot_method: Literal["furthest_first", "incremental"] = "furthest_first",
        pivot_sample: int = 10000,
        meta: Optional[Dict[str, Any]] = None,
        layout: Literal["flat", "partitioned"] = "flat",
        n_partitions: Optional[int] = None,
    ) -> Index:
        """An index of packed codes you already have (sentence-transformers "ubinary", or
        faiss codes through :func:`hashpivot.from_faiss_codes`): no vectors, no ITQ. Search
        it with :meth:`search_codes`."""
        choice(layout, "layout", [n for n in LAYOUTS if layout_class(n).capabilities.code_input])
        codes = as_codes(codes)
        opts = TrainOptions.checked(
            codes.shape[1] * 8, seed, n_pivots, pivot_method, pivot_sample, n_partitions
        )
        lay = layout_class(layout).from_codes(codes, None, opts)
        rows, _ = _grown(lay, None, lay.empty(), None, codes, lay.derive(codes, None), ids)
        return cls(lay, None, "ip", rows, meta)

    def _append(
        self,
        x: Optional[np.ndarray],
        codes: np.ndarray,
        derived: Dict[str, np.ndarray],
        ids: Optional[Sequence[int]],
    ) -> np.ndarray:
        with self._write_lock:
            rows, new = _grown(self._layout, self.store, self._version.rows, x, codes, derived, ids)
            self._set_rows(rows)
            return new

    def add(self, embeddings: np.ndarray, ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """Adds rows; ``ids`` default to max(id) + 1, + 2, ... Returns the ids given."""
        itq = self._require_itq()
        x = prepare(as_embeddings(embeddings, "embeddings", itq.dim, convert=False), self.metric)
        codes, derived = self._layout.encode(x)
        return self._append(x, codes, derived, ids)

    def add_codes(self, codes: np.ndarray, ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """Adds packed codes to an index made by :meth:`from_codes`."""
        if self.itq is not None:
            raise InvalidInputError("this index encodes embeddings itself: use add()")
        codes = as_codes(codes, n_bits=self.n_bits)
        return self._append(None, codes, self._layout.derive(codes, None), ids)

    def remove(self, ids: Sequence[int]) -> int:
        """Removes the rows with these ids (every id must be present). Returns how many."""
        arr = id_set(ids)
        with self._write_lock:
            old = self._version.rows
            missing = ~np.isin(arr, old.ids)
            if missing.any():
                raise UnknownIdError(
                    f"{int(missing.sum())} id(s) are not in the index (e.g. {int(arr[missing][0])})"
                )
            self._set_rows(self._layout.remove(old, ~np.isin(old.ids, arr)))
        return int(arr.size)

    def _require_itq(self) -> ITQ:
        if self.itq is None:
            raise InvalidInputError(
                "this index was built from codes (no ITQ model): use add_codes() and search_codes()"
            )
        return self.itq

    # ---- search ----
    def shape(self) -> IndexShape:
        """What a search plan needs to know about this index (hashpivot.plan)."""
        return self._version.shape()

    def plan(self, k: int = 10, **options: Any) -> Plan:
        """The plan :meth:`search` would run with these options (for inspection)."""
        version = self._version
        filt = version.allowed(options.pop("allowed", None))
        return version.plan(k, filt, tuned=self.tuned, **options)

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        candidates: Optional[int] = None,
        oversample: Optional[float] = None,
        rerank: bool = True,
        scoring: ScoringName = "asymmetric",
        shortlist: Union[int, str, None] = "auto",
        nprobe: Optional[int] = None,
        bound: Optional[float] = None,
        reestimate: Optional[int] = None,
        threshold: Optional[int] = None,
        threads: Optional[int] = None,
        allowed: Union[np.ndarray, Sequence[int], IdFilter, None] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """The k best documents for each query: ``(scores, ids)``, each (nq, min(k, rows)).

        ``candidates``: rows reranked exactly with the stored vectors (absolute; it wins over
        ``oversample``, a factor of k as Qdrant's ``oversampling``); default the tuned setting
        (:meth:`tune`), else 300. ``scoring``: "asymmetric" ranks codes by the float query
        projection against their +-1 bits (the default), "hamming" by Hamming distance.
        ``nprobe``: partitions or lists probed (partitioned: default exact; ivf: the tuned
        setting, else 1/8 of the lists). ``bound`` (ivf): the rerank takes the candidates in
        order of estimate + bound sigma (sigma: the estimate's error scale, |q - c| |v| /
        sqrt(dim)) and stops at the first that cannot beat the k-th exact score; 0 reranks all
        (default: the tuned bound with the tuned candidates, else 0). ``reestimate`` (ivf built
        with ``extra_bits``): rows re-estimated with the extra bits before the best
        ``candidates`` of them are reranked (0: none; default the tuned value, else 5 x
        candidates). ``threshold``: the
        research pivot band (an index built with ``n_pivots > 0``; with asymmetric scoring it
        needs a Hamming ``shortlist=M``).
        ``allowed``: ids (or a mask, or an :class:`IdFilter`) the results may hold, applied
        inside the scan.

        What ``scores`` holds: with rerank and stored vectors, exact similarities (cosine under
        metric="cosine", inner products under "ip"), descending; with ``rerank=False``,
        asymmetric estimates (float, descending) or Hamming distances (int32, ascending). Ids are
        -1 (scores -inf, distances n_bits + 1) where fewer than k documents qualify.
        """
        itq = self._require_itq()
        # finiteness, zero vectors and the cosine normalisation: checked in C++, in one pass
        q = as_embeddings(queries, "queries", itq.dim, check_finite=False)
        options = dict(candidates=candidates, oversample=oversample, rerank=rerank)
        options.update(scoring=scoring, shortlist=shortlist, nprobe=nprobe, threshold=threshold)
        options.update(bound=bound, reestimate=reestimate)
        return self._search(q, k, allowed, threads=threads, **options)

    def search_codes(
        self,
        query_codes: np.ndarray,
        k: int = 10,
        threshold: Optional[int] = None,
        threads: Optional[int] = None,
        nprobe: Optional[int] = None,
        allowed: Union[np.ndarray, Sequence[int], IdFilter, None] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Hamming search with packed query codes: ``(distances int32, ids int64)``."""
        if not self.capabilities.code_input:
            raise InvalidInputError(
                f"a {self.layout} index holds residual codes: search it with embeddings (search())"
            )
        qc = as_codes(query_codes, "query codes", allow_1d=True, n_bits=self.n_bits)
        options = dict(threshold=threshold, threads=threads, nprobe=nprobe, query_codes=True)
        return self._search(qc, k, allowed, store=False, **options)

    def _search(
        self, q: np.ndarray, k: int, allowed: object, store: bool = True, **options: Any
    ) -> Tuple[np.ndarray, np.ndarray]:
        version = self._version  # one version for the whole search
        filt = version.allowed(allowed)
        plan = version.plan(k, filt, store, tuned=self.tuned, **options)
        out, ids, scanned, reranked = version.run(q, plan, filt)
        self._totals.record(q.shape[0], scanned, version.rows.n, reranked)
        return out, ids

    # ---- tuning ----
    def tune(
        self,
        queries: Optional[np.ndarray] = None,
        target_recall: float = 0.95,
        k: int = 10,
        sample: int = 200,
        **budget: Any,
    ) -> TuneResult:  # noqa: F821
        """Finds the cheapest search settings (nprobe, candidates) whose recall@k against exact
        search reaches ``target_recall`` on ``queries`` (a held-out sample of your real
        queries: best), or without queries on ``sample`` synthetic queries made from the stored
        vectors, aiming above the target (0.98 for 0.95) as they only stand in for real ones;
        stores them (saved with the index) so that :meth:`search` uses them when the caller
        gives none. See :func:`hashpivot.tune.tune`."""
        from .tune import tune

        return tune(self, queries, target_recall=target_recall, k=k, sample=sample, **budget)

    # ---- information ----
    def stats(self) -> Dict[str, Any]:
        """Sizes (bytes per document, everything resident counted) and search totals."""
        info = dict(metric=self.metric, store=self.store, tuned=dict(self.tuned))
        return {**self._version.stats(), **info, **self._totals.as_dict()}

    # ---- persistence ----
    def save(self, path: PathLike, documents: Optional[Sequence[Dict[str, Any]]] = None) -> None:
        """Saves to a directory: ``header.json`` plus the arrays (raw .npy, checksummed) and the
        ITQ model it names. Only files that a previous save of an index wrote there are ever
        removed; a directory holding other files but no index is refused (hashpivot.storage).

        ``documents``: one JSON-able dict per id (row i = id i; titles, text, fields to filter
        on), saved in the same generation as the index: a reader sees both or neither. Without
        it the index's own :attr:`documents` (those it was loaded with) are saved again."""
        docs = DocStore.from_records(documents) if documents is not None else self.documents
        info = dict(store=self.store, metric=self.metric, meta=self.meta, tuned=self.tuned)
        save_index(path, self._layout, self._version.rows, docs, **info)
        if documents is not None:
            self.documents = docs

    @classmethod
    def load(cls, path: PathLike, mmap: bool = True, verify: bool = True) -> Index:
        """Loads a saved index; ``mmap`` maps the arrays read-only (shared between processes).
        Refuses an unknown version, a missing, truncated, symlinked or corrupt file (checksums
        and the layout's derived arrays when ``verify``). Nothing is ever unpickled."""
        h, layout, rows, documents = load_index(path, mmap, verify)
        try:
            index = cls(layout, h.store, h.metric, rows, h.meta, h.tuned)
        except (InvalidInputError, InvalidTypeError) as e:  # the snapshot's own checks
            raise CorruptFileError(f"{path}: the index arrays are inconsistent: {e}") from None
        if verify:
            layout.verify(rows)
        index.documents = documents
        return index


def _read_only(a: Any) -> Any:
    """A read-only view of an array the index holds (anything else as it is)."""
    if not isinstance(a, np.ndarray):
        return a
    view = a.view()
    view.flags.writeable = False
    return view


def _grown(
    layout: Layout,
    store: Optional[str],
    old: Rows,
    x: Optional[np.ndarray],
    codes: np.ndarray,
    derived: Dict[str, np.ndarray],
    ids: Optional[Sequence[int]],
) -> Tuple[Rows, np.ndarray]:
    """The rows with new ones appended, and the new rows' ids: what add() stores, and what
    build() and from_codes() construct with (one snapshot, never one of zero rows first)."""
    n = codes.shape[0]
    if old.n + n > MAX_ROWS:
        raise LimitError(f"an index holds at most {MAX_ROWS:,} rows")
    new = new_ids(old.ids, n, ids)
    added = None if x is None or store is None else Store.of(*quantize(x, store))
    return layout.append(old, Rows(codes, new, added), derived), new
