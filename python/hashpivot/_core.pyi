"""The compiled core (cpp/bindings.cpp): a Snapshot per version of an index's rows, checked once
when made, whose ``search`` runs a whole plan in one GIL-free call; and the kernels on packed
codes that :mod:`hashpivot.kernels` wraps."""

from typing import Dict, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

MIN_BITS: int
MAX_BITS: int
MAX_PIVOTS: int
MAX_DIM: int
MAX_SEGMENTS: int
MAX_SORTED_LEVELS: int
MAX_LISTS: int
ERROR_LEVEL_NONE: int
MAX_EXTRA_BITS: int
NARROW_TABLE_MAX_BITS: int

class CpuFeatures(TypedDict):
    isa: str  # the engine in use: portable, popcnt, avx2 or avx512
    best_isa: str
    popcnt: bool
    avx2: bool
    avx512_vpopcntdq: bool
    avx512_vnni: bool
    threads: int  # the pool's threads (CPU affinity, HASHPIVOT_NUM_THREADS)

def cpu_features() -> CpuFeatures: ...
def error_levels(norms: npt.ArrayLike) -> npt.NDArray[np.uint8]: ...
def error_norms(levels: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
def set_isa(name: str) -> None: ...

class Scoring:
    hamming: Scoring
    asymmetric: Scoring

class Source:
    all: Source
    band: Source
    partitions: Source
    lists: Source
    allowed: Source

class Plan:
    """One search's settings, as hashpivot.plan.make_plan makes them."""

    k: int
    scoring: Scoring
    source: Source
    pool: int
    candidates: int
    hamming_first: bool
    threshold: int  # -1: no pivot band
    nprobe: int
    probe_rows: int
    probe_spread: float
    bound: float
    reestimate: int
    rerank: bool
    exact_allowed: bool
    quantized_only: bool
    threads: int
    def __init__(self) -> None: ...

class Snapshot:
    """An immutable version of an index's rows, validated once."""

    normalize: bool  # queries scaled to unit length (metric="cosine")
    @property
    def n(self) -> int: ...
    @property
    def n_bits(self) -> int: ...
    @property
    def copies(self) -> Dict[str, int]:
        """Bytes of the arrays held in the snapshot's own layout (ivf: the codes in scan blocks,
        the centres in int16 levels), by the name of the input that a search then never reads."""
    def __init__(
        self,
        codes: npt.NDArray[np.uint8],
        ids: Optional[npt.NDArray[np.int64]] = None,
        mean: Optional[npt.NDArray[np.float32]] = None,
        projection: Optional[npt.NDArray[np.float32]] = None,
        pivots: Optional[npt.NDArray[np.uint8]] = None,
        table: Optional[np.ndarray] = None,
        cells: Optional[npt.NDArray[np.int64]] = None,
        levels: int = 0,
        centres: Optional[npt.NDArray[np.uint8]] = None,
        part_offsets: Optional[npt.NDArray[np.int64]] = None,
        radius: Optional[np.ndarray] = None,
        cdist: Optional[np.ndarray] = None,
        list_centres: Optional[npt.NDArray[np.float32]] = None,
        list_offsets: Optional[npt.NDArray[np.int64]] = None,
        factors: Optional[npt.NDArray[np.float32]] = None,
        lists: Optional[npt.NDArray[np.int32]] = None,
        vectors: Union[np.ndarray, Sequence[np.ndarray], None] = None,
        scales: Union[npt.NDArray[np.float32], Sequence[npt.NDArray[np.float32]], None] = None,
        slots: Optional[npt.NDArray[np.int64]] = None,
        biases: Optional[npt.NDArray[np.float32]] = None,
        list_radii: Optional[npt.NDArray[np.float32]] = None,
        error_levels: Optional[npt.NDArray[np.uint8]] = None,
        extra: Optional[npt.NDArray[np.uint8]] = None,
        extra_factors: Optional[npt.NDArray[np.float32]] = None,
        extra_biases: Optional[npt.NDArray[np.float32]] = None,
    ) -> None: ...
    def search(
        self,
        queries: np.ndarray,
        plan: Plan,
        filter_bits: Optional[npt.NDArray[np.uint64]] = None,
        filter_rows: Optional[npt.NDArray[np.int64]] = None,
    ) -> Tuple[np.ndarray, npt.NDArray[np.int64], int, int]:
        """(scores float32 or distances int32, ids, rows scanned, vectors reranked)."""

def knn(
    queries: npt.NDArray[np.uint8],
    codes: npt.NDArray[np.uint8],
    k: int,
    threads: int = 0,
    pivots: Optional[npt.NDArray[np.uint8]] = None,
    table: Optional[np.ndarray] = None,
    lo: Optional[np.ndarray] = None,
    hi: Optional[np.ndarray] = None,
) -> Tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
def cell_keys(table: np.ndarray, levels: int, n_bits: int) -> npt.NDArray[np.int64]: ...
def range_search(
    queries: npt.NDArray[np.uint8], codes: npt.NDArray[np.uint8], radius: int, threads: int = 0
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
def distances(
    queries: npt.NDArray[np.uint8], codes: npt.NDArray[np.uint8], threads: int = 0
) -> npt.NDArray[np.int32]: ...
def pivot_filter(
    table: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    begin: int = 0,
    end: int = -1,
    threads: int = 0,
) -> npt.NDArray[np.int64]: ...
def encode(
    x: npt.NDArray[np.float32],
    mean: Optional[npt.NDArray[np.float32]],
    projection: npt.NDArray[np.float32],
    want_z: bool = False,
    want_codes: bool = True,
    threads: int = 0,
) -> Tuple[Optional[npt.NDArray[np.float32]], Optional[npt.NDArray[np.uint8]]]: ...
def asym_knn(
    projections: npt.NDArray[np.float32],
    codes: npt.NDArray[np.uint8],
    k: int,
    pool: int,
    threads: int = 0,
    exact: bool = True,
) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def asym_rescore(
    projections: npt.NDArray[np.float32],
    codes: npt.NDArray[np.uint8],
    candidates: npt.NDArray[np.int64],
    k: int,
    threads: int = 0,
) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
