"""hashpivot: semantic search over compact binary codes.

Embeddings -> ITQ codes (bit-packed) -> candidates (every row, pivot windows, partitions or IVF
lists) -> asymmetric scoring -> exact rerank -> top-k ``(scores, ids)``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .codes import from_faiss_codes, pack_bits, to_faiss_codes, unpack_bits
from .errors import (
    HashpivotError,
    IndexFormatError,
    InvalidInputError,
    InvalidTypeError,
    LimitError,
    StorageError,
)
from .filters import IdFilter
from .index import Index
from .itq import ITQ
from .kernels import (
    asymmetric_knn,
    asymmetric_rescore,
    cpu_features,
    hamming_distances,
    hamming_knn,
    hamming_range,
    pivot_filter,
    pivot_knn,
)
from .pivots import pivot_table, select_pivots
from .tune import TuneResult

try:  # the one place the version lives is the package metadata (pyproject.toml)
    __version__ = _version("hashpivot")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ITQ",
    "HashpivotError",
    "IdFilter",
    "Index",
    "IndexFormatError",
    "InvalidInputError",
    "InvalidTypeError",
    "LimitError",
    "StorageError",
    "TuneResult",
    "asymmetric_knn",
    "asymmetric_rescore",
    "cpu_features",
    "from_faiss_codes",
    "hamming_distances",
    "hamming_knn",
    "hamming_range",
    "pack_bits",
    "pivot_filter",
    "pivot_knn",
    "pivot_table",
    "select_pivots",
    "to_faiss_codes",
    "unpack_bits",
]
