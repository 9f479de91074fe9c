"""hashpivot: semantic search over compact binary codes.

Embeddings -> ITQ codes (bit-packed) -> pivot band filter -> Hamming ranking -> exact rerank.
"""

from __future__ import annotations

from .codes import from_faiss_codes, pack_bits, to_faiss_codes, unpack_bits
from .errors import HashpivotError, IndexFormatError, InvalidInputError, InvalidTypeError
from .index import Index
from .itq import ITQ
from .pivots import pivot_table, select_pivots
from .hamming import (
    asymmetric_knn,
    asymmetric_rescore,
    cpu_features,
    hamming_distances,
    hamming_knn,
    hamming_range,
    pivot_filter,
    pivot_knn,
)

__version__ = "0.1.0"

__all__ = [
    "asymmetric_knn",
    "asymmetric_rescore",
    "ITQ",
    "Index",
    "HashpivotError",
    "IndexFormatError",
    "InvalidInputError",
    "InvalidTypeError",
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
