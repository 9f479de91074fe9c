"""What every layout shares: the rows of one version (:class:`Rows`), the strategy interface
(:class:`Layout`: training, encoding, ordering, the C++ snapshot, the saved arrays, verification,
capabilities) and the registry that maps a layout's name to its class. Nothing outside this
package branches on a layout's name: callers ask :attr:`Layout.capabilities`."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Literal, Optional, Tuple, Type

import numpy as np

from .. import _core
from .._validate import choice, count
from .._validate import seed as check_seed
from ..errors import CorruptFileError, InvalidInputError
from ..itq import ITQ
from ..vectors import RowVectors, Store

if TYPE_CHECKING:  # pragma: no cover
    from ..storage import IndexHeader

Expectation = Dict[str, Tuple[np.dtype, Tuple[int, ...]]]
U8, I32, I64, F32 = np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.float32)
VERIFY_CHUNK = 1 << 20  # rows whose derived arrays a verifying load recomputes at once
# Groups a saved header may declare beyond its rows (remove() can leave more lists than rows;
# 4 * sqrt(N) lists at 10M rows is 12,650).
MAX_GROUPS = _core.MAX_LISTS
GROUPS_PER_SQRT_N = 4  # partitions or lists: C = 4 sqrt(N), faiss' guideline for IVF


def default_groups(n: int) -> int:
    """About 4 sqrt(N) partitions or lists (at least 1, at most N)."""
    return int(max(1, min(n, round(GROUPS_PER_SQRT_N * math.sqrt(max(n, 1))))))


GroupSource = Literal["all", "partitions", "lists"]


@dataclass(frozen=True)
class Rows:
    """One immutable version of the rows, in the layout's order. add/remove make a new one."""

    codes: np.ndarray
    ids: np.ndarray
    store: Optional[Store] = None  # stored vectors (segments, in the order they were added)
    slots: Optional[np.ndarray] = None  # each row's vector in the store (None: the row itself)
    table: Optional[np.ndarray] = None  # with pivots: distances to the pivots (n, P)
    offsets: Optional[np.ndarray] = None  # flat: cell starts; partitioned, ivf: group starts
    parts: Optional[np.ndarray] = None  # partitioned: each row's partition
    radius: Optional[np.ndarray] = None  # partitioned: each partition's covering radius
    cdist: Optional[np.ndarray] = None  # partitioned: each row's distance to its centre
    lists: Optional[np.ndarray] = None  # ivf: each row's list
    factors: Optional[np.ndarray] = None  # ivf: each row's residual scale a_x
    biases: Optional[np.ndarray] = None  # ivf: each row's exact centre share, less its estimate
    errors: Optional[np.ndarray] = None  # ivf: each row's estimate error norm, a one-byte level
    extra: Optional[np.ndarray] = None  # ivf: each row's extra bit planes (the re-estimate)
    extra_factors: Optional[np.ndarray] = None  # ivf: ... their scale
    extra_biases: Optional[np.ndarray] = None  # ivf: ... their exact centre share, less estimate

    def take(self, order: np.ndarray, **changed: Any) -> Rows:
        """These rows in another order (or a subset), with some arrays replaced. The store is
        not copied: the rows' slots follow them."""

        def pick(f: str, a: Optional[np.ndarray]) -> Optional[np.ndarray]:
            if a is None:
                return None
            if f in PER_CANDIDATE and is_mapped(a):  # on disk it stays (add() on an mmap load)
                return mapped_rows([a], order)
            return np.ascontiguousarray(a[order])

        per_row = {f: pick(f, getattr(self, f)) for f in PER_ROW}
        if self.store is not None and self.slots is None:
            per_row["slots"] = np.asarray(order, np.int64)
        per_row.update(changed)
        return replace(self, **per_row).compact()

    def compact(self) -> Rows:
        """Drops the slots where rows are the store's vectors in order; copies the live vectors
        out once most of the store holds removed rows."""
        s, store = self.slots, self.store
        if s is None or store is None:
            return self
        if len(s) == store.n and (len(s) == 0 or (s[0] == 0 and bool(np.all(np.diff(s) == 1)))):
            return replace(self, slots=None)
        if len(s) * 2 < store.n:
            return replace(self, store=Store.of(*store.gather(s)), slots=None)
        return self

    @property
    def vectors(self) -> Any:
        """The stored vectors in row order (an array, or a view gathered as it is read)."""
        return self._row_vectors(0)

    @property
    def scales(self) -> Any:
        """The int8 store's scales in row order (None: not int8)."""
        return None if self.store is None or not self.store.scales else self._row_vectors(1)

    def _row_vectors(self, part: int) -> Any:
        store = self.store
        if store is None:
            return None
        if self.slots is None and len(store.segments) == 1:
            return (store.segments + store.scales)[part]
        return RowVectors(store, self.slots, part)

    def arrays(self) -> Dict[str, np.ndarray]:
        """The per-row and group arrays (not the store)."""
        return {
            f: getattr(self, f)
            for f in self.__dataclass_fields__
            if f != "store" and getattr(self, f) is not None
        }

    def resident(self) -> List[np.ndarray]:
        """Every array the rows hold, the store's segments included."""
        store = self.store
        return list(self.arrays().values()) + (
            [] if store is None else [*store.segments, *store.scales]
        )

    def saved(self) -> Dict[str, np.ndarray]:
        """The arrays an index file holds: the vectors in row order (copied only where the
        store is not already one array in that order)."""
        out = {f: a for f, a in self.arrays().items() if f != "slots"}
        if self.store is not None:
            vectors, scales = self.store.gather(self.slots)
            out["vectors"] = vectors
            if scales is not None:
                out["scales"] = scales
        return out

    @classmethod
    def from_saved(cls, arrays: Dict[str, np.ndarray]) -> Rows:
        vectors = arrays.get("vectors")
        store = None if vectors is None else Store.of(vectors, arrays.get("scales"))
        return cls(
            store=store,
            **{f: arrays.get(f) for f in cls.__dataclass_fields__ if f not in ("store", "slots")},
        )

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    @property
    def extra_bits(self) -> int:
        """ivf: bits a dimension the extra planes hold beyond the sign (0: none)."""
        if self.extra is None or self.codes.shape[1] == 0:
            return 0
        return int(self.extra.shape[1] // self.codes.shape[1]) - 1  # the top plane: the sign

    @classmethod
    def fields(cls) -> Tuple[str, ...]:
        """The names of what an index file holds for its rows."""
        own = [f for f in cls.__dataclass_fields__ if f not in ("store", "slots")]
        return (*own, "vectors", "scales")


PER_ROW = (
    "codes",
    "ids",
    "slots",
    "table",
    "parts",
    "cdist",
    "lists",
    "factors",
    "biases",
    "errors",
    "extra",
    "extra_factors",
    "extra_biases",
)
# Per-row arrays a search reads only for the rows it re-estimates (as the stored vectors for the
# rows it reranks): memory-mapped, they stay on disk but for those rows.
PER_CANDIDATE = ("extra", "extra_factors", "extra_biases")


@dataclass(frozen=True)
class Capabilities:
    """What a layout can do, asked by the planner (hashpivot.plan), the facade and the CLI."""

    source: GroupSource  # what a search scans: every row, probed partitions or probed lists
    scorings: Tuple[str, ...]  # first-stage scorings it supports
    code_input: bool  # built from (and searched with) given packed codes, Hamming
    hamming_shortlist: bool  # an asymmetric search may rank a Hamming shortlist first
    probe_by_default: bool  # without nprobe (or a tuned one) a search probes a share of groups
    group_noun: str = ""  # what its groups are called in stats ("partitions", "lists")


@dataclass(frozen=True)
class TrainOptions:
    """Build options every layout reads what it needs from (hashpivot.Index.build)."""

    n_bits: int
    seed: int = 42
    n_pivots: int = 0
    pivot_method: str = "furthest_first"
    pivot_sample: int = 10000
    n_groups: Optional[int] = None  # partitions or lists (None: about 4 sqrt(N))
    device: str = "auto"
    n_iter: int = 50
    max_train: Optional[int] = None
    progress: Optional[bool] = None
    extra_bits: int = 0  # ivf: bits a dimension beyond the sign, for the re-estimate

    @classmethod
    def checked(
        cls,
        n_bits: int,
        seed: object,
        n_pivots: object,
        pivot_method: object,
        pivot_sample: object,
        n_groups: Optional[int],
    ) -> TrainOptions:
        """Options from a caller's arguments, each checked (one message per mistake)."""
        from ..pivots import MAX_PIVOTS, METHODS  # pivots -> kernels -> plan imports layouts

        choice(pivot_method, "pivot_method", METHODS)
        return cls(
            n_bits=n_bits,
            seed=check_seed(seed),
            n_pivots=count(n_pivots, "n_pivots", 0, MAX_PIVOTS),
            pivot_method=str(pivot_method),
            pivot_sample=count(pivot_sample, "pivot_sample", 1),
            n_groups=n_groups,
        )

    def itq(self) -> ITQ:
        return ITQ(
            n_bits=self.n_bits,
            n_iter=self.n_iter,
            seed=self.seed,
            device=self.device,
            max_train=self.max_train,
        )


def concat(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if b is None:
        return a
    if a is not None and is_mapped(a):  # a memory-mapped array stays on disk: so does a + b
        return mapped_rows([a, b])
    return b if a is None else np.concatenate([a, b])


MAPPED_CHUNK = 1 << 13  # rows copied at once into a mapped array (small: no heap it keeps)


def is_mapped(a: np.ndarray) -> bool:
    """Whether an array's memory is a file's mapping (np.memmap's own, not a copy of one)."""
    return isinstance(a, np.memmap) and getattr(a, "_mmap", None) is not None


def mapped_rows(parts: List[np.ndarray], order: Optional[np.ndarray] = None) -> np.ndarray:
    """The rows of ``parts`` one after the other (then taken in ``order``) as an array on an
    unlinked temporary file beside the first part's file: the per-candidate arrays of an index
    loaded with mmap stay on disk when rows are added, instead of being read into memory. Copied
    a chunk of rows at a time; the file goes when the array does."""
    first = parts[0]
    n = sum(len(p) for p in parts) if order is None else len(order)
    shape, dtype = (n, *first.shape[1:]), first.dtype
    if n == 0 or dtype.itemsize * int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    folder = os.path.dirname(first.filename) if getattr(first, "filename", None) else None
    try:
        f = tempfile.TemporaryFile(dir=folder)
    except OSError:  # a read-only index directory: the system's temporary folder
        f = tempfile.TemporaryFile()
    with f:
        out = np.memmap(f, dtype=dtype, mode="w+", shape=shape)
    ends = np.cumsum([len(p) for p in parts])
    for s in range(0, n, MAPPED_CHUNK):
        at = (
            np.arange(s, min(n, s + MAPPED_CHUNK)) if order is None else order[s : s + MAPPED_CHUNK]
        )
        part = np.searchsorted(ends, at, side="right")
        for g in np.unique(part):
            sel = part == g
            local = at[sel] - (ends[g - 1] if g else 0)
            out[s : s + len(at)][sel] = parts[g][local]
    return out


def starts(groups: np.ndarray, n_groups: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(groups, minlength=n_groups))]).astype(
        np.int64
    )


def require(ok: bool, what: str) -> None:
    if not ok:
        raise CorruptFileError(f"the index arrays do not agree with each other: {what}")


Derived = Dict[str, np.ndarray]


class Layout:
    """A layout strategy: the model that places rows, and their order."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    # the Index.build options this layout reads beyond the shared ones: giving another is an error
    build_options: ClassVar[Tuple[str, ...]] = ()
    # extra_bits when Index.build is given none and the vectors are stored (hashpivot.defaults)
    default_extra_bits: ClassVar[int] = 0
    first_version: ClassVar[int]  # the index format version that introduced the layout
    group_array: ClassVar[Optional[str]] = None  # the model array with one row per group

    def __init__(self, n_bits: int, itq: Optional[ITQ]) -> None:
        self.n_bits = n_bits
        self.itq = itq  # encodes rows and queries (None: an index of given codes)

    # ---- training ----
    @classmethod
    def train(cls, x: np.ndarray, opts: TrainOptions) -> Tuple[Layout, np.ndarray, Derived]:
        """The layout's model trained on float rows: (layout, codes of x, derived arrays)."""
        itq = opts.itq().fit(x, progress=opts.progress)
        codes = itq.encode(x)
        layout = cls.from_codes(codes, itq, opts)
        return layout, codes, layout.derive(codes, x)

    @classmethod
    def from_codes(cls, codes: np.ndarray, itq: Optional[ITQ], opts: TrainOptions) -> Layout:
        """The layout's model for rows given as codes (only where ``code_input``)."""
        raise InvalidInputError(f"layout {cls.name!r} cannot be built from packed codes")

    # ---- the model ----
    def model_arrays(self) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def model_bytes(self) -> int:
        """Resident bytes of the model: the layout's arrays and the ITQ model's."""
        itq = self.itq
        arrays = list(self.model_arrays().values())
        if itq is not None:
            arrays += [itq.mean, itq.pca, itq.rotation, itq.projection]
        return sum(a.nbytes for a in arrays)

    @property
    def pivots(self) -> Optional[np.ndarray]:
        return None

    @property
    def centres(self) -> Optional[np.ndarray]:
        return None

    @property
    def n_pivots(self) -> int:
        return 0

    @property
    def n_groups(self) -> int:
        return 0

    @property
    def levels(self) -> int:
        return 0

    # ---- rows ----
    def empty(self) -> Rows:
        codes = np.zeros((0, self.n_bits // 8), np.uint8)
        return self.order(Rows(codes, np.zeros(0, np.int64)), self.derive(codes, None))

    def encode(self, x: np.ndarray) -> Tuple[np.ndarray, Derived]:
        """Codes of float rows (and any other per-row arrays the layout derives from them)."""
        codes = self.itq.encode(x)
        return codes, self.derive(codes, x)

    def derive(self, codes: np.ndarray, x: Optional[np.ndarray]) -> Derived:
        """Per-row arrays of new codes (pivot distances, partition...)."""
        raise NotImplementedError

    def append(self, rows: Rows, new: Rows, derived: Derived) -> Rows:
        """The rows with new ones added: the store gains a segment (nothing before it is copied),
        the new rows' slots point into it."""
        store, slots = rows.store, rows.slots
        if new.store is not None:
            base = 0 if store is None else store.n
            old = np.arange(rows.n, dtype=np.int64) if slots is None else slots
            slots = np.concatenate([old, base + np.arange(new.n, dtype=np.int64)])
            store = new.store if store is None else store.append(new.store)
        both = Rows(
            concat(rows.codes, new.codes),
            concat(rows.ids, new.ids),
            store=store,
            slots=slots,
            radius=rows.radius,
        ).compact()
        return self.order(both, {f: concat(getattr(rows, f), derived.get(f)) for f in derived})

    def order(self, rows: Rows, derived: Derived) -> Rows:
        """Sorts rows (with their derived arrays) into the layout's order; sets the offsets."""
        raise NotImplementedError

    def remove(self, rows: Rows, keep: np.ndarray) -> Rows:
        return self.order(rows.take(np.flatnonzero(keep)), {})

    # ---- search ----
    def snapshot(self, rows: Rows) -> _core.Snapshot:
        raise NotImplementedError

    def common(self, rows: Rows, centre_queries: bool = True) -> Dict[str, Any]:
        """The snapshot arguments every layout passes."""
        itq = self.itq
        return dict(
            codes=rows.codes,
            ids=rows.ids,
            mean=None if itq is None or not centre_queries else itq.mean,
            projection=None if itq is None else itq.projection,
            vectors=None if rows.store is None else list(rows.store.segments),
            scales=None if rows.store is None or not rows.store.scales else list(rows.store.scales),
            slots=rows.slots,
        )

    # ---- files ----
    def header(self) -> Dict[str, int]:
        """The layout's own header fields."""
        return {"levels": self.levels, "n_pivots": self.n_pivots, "groups": self.n_groups}

    @classmethod
    def from_header(
        cls, header: IndexHeader, itq: Optional[ITQ], model: Dict[str, np.ndarray]
    ) -> Layout:
        raise NotImplementedError

    @classmethod
    def check_header(cls, header: IndexHeader) -> Optional[str]:
        """What is wrong with a header of this layout (None: nothing)."""
        return None

    @classmethod
    def expect(cls, header: IndexHeader) -> Expectation:
        """dtype and shape of each saved layout array (model and derived rows)."""
        raise NotImplementedError

    @classmethod
    def group_count(cls, entries: Dict[str, Any], n: int) -> int:
        """Groups of a saved index (from its group array's entry), bounded before anything is
        allocated."""
        if cls.group_array is None:
            return 0
        try:
            return count(entries[cls.group_array]["shape"][0], "groups", 1, max(n, MAX_GROUPS))
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise CorruptFileError(f"the header's {cls.group_array} are malformed ({e})") from None

    def upgrade(self, rows: Rows) -> Rows:
        """Rows loaded from an older format version, completed to this one's arrays."""
        return rows

    def verify(self, rows: Rows) -> None:
        """Recomputes what the rows' derived arrays must hold (a verifying load)."""


SHARED_BUILD_DEFAULTS = {"n_pivots": 0, "n_partitions": None, "n_lists": None, "extra_bits": 0}


def check_build_options(layout: str, dim: Optional[int] = None, **options: Any) -> None:
    """Index.build's layout options checked before any work (the CLI calls it before it embeds
    a corpus): each one given (not at its default) must be one the layout reads, and n_bits
    must fit the embedding dimension when it is known."""
    cls = layout_class(layout)
    for name, value in options.items():
        if name == "n_bits":
            continue
        if value != SHARED_BUILD_DEFAULTS.get(name) and name not in cls.build_options:
            takes = ", ".join(cls.build_options) or "none"
            owners = " or ".join(repr(n) for n, c in REGISTRY.items() if name in c.build_options)
            raise InvalidInputError(
                f"{name}={value!r} is not an option of layout={layout!r} (its options: {takes}); "
                f"build with layout={owners}"
            )
    n_bits = options.get("n_bits")
    if dim is not None and n_bits is not None and n_bits > dim:
        hint = f"use n_bits <= {dim - dim % 64}" if dim >= 64 else "use embeddings of >= 64 dims"
        raise InvalidInputError(
            f"n_bits={n_bits} is more than the embedding dimension {dim}; "
            f"PCA can give at most {dim} bits: {hint}"
        )


REGISTRY: Dict[str, Type[Layout]] = {}


def register(cls: Type[Layout]) -> Type[Layout]:
    REGISTRY[cls.name] = cls
    return cls


def layout_class(name: str) -> Type[Layout]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidInputError(
            f"layout must be one of {', '.join(map(repr, REGISTRY))}, got {name!r}"
        ) from None
