"""Packed binary codes: the one format every hashpivot function takes.

A code is a row of ``n_bits // 8`` uint8 bytes in ``np.packbits`` order (most significant bit
first), the layout of sentence-transformers' ``quantize_embeddings(..., "ubinary")``. faiss packs
the same bits least significant first: convert with :func:`from_faiss_codes` /
:func:`to_faiss_codes`. ``n_bits`` is a multiple of 64 from 64 to 1024.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import _core
from ._validate import to_numpy
from .errors import DimensionError, InvalidInputError, InvalidTypeError

MIN_BITS: int = _core.MIN_BITS  # the limits live in the C++ core (cpp/codes.h)
MAX_BITS: int = _core.MAX_BITS

# Reverses the bit order inside a byte (MSB-first <-> LSB-first).
_REVERSE_BITS = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)


def check_n_bits(n_bits: int) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)):
        raise InvalidTypeError(f"n_bits must be an integer, got {type(n_bits).__name__}")
    n_bits = int(n_bits)
    if n_bits % 64 or not MIN_BITS <= n_bits <= MAX_BITS:
        raise InvalidInputError(
            f"n_bits must be a multiple of 64 from {MIN_BITS} to {MAX_BITS}, got {n_bits}"
        )
    return n_bits


def as_codes(
    x: object, name: str = "codes", *, allow_1d: bool = False, n_bits: Optional[int] = None
) -> np.ndarray:
    """Checks packed codes without copying; a 1-D row becomes one query when ``allow_1d``;
    ``n_bits``: the width they must have (an index's)."""
    x = to_numpy(x)
    if not isinstance(x, np.ndarray):
        raise InvalidTypeError(
            f"{name} must be a numpy uint8 array of packed bits, got {type(x).__name__}; "
            "build one with hashpivot.pack_bits(bits)"
        )
    if x.dtype != np.uint8:
        raise InvalidTypeError(
            f"{name} must have dtype uint8 (packed bits, n_bits // 8 bytes a row), got {x.dtype}; "
            "pack 0/1 or bool arrays with hashpivot.pack_bits"
        )
    if x.ndim == 1 and allow_1d:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (n, n_bits // 8), got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise InvalidInputError(
            f"{name} is not C-contiguous; hashpivot never copies silently: "
            "pass np.ascontiguousarray(...)"
        )
    check_n_bits(x.shape[1] * 8)
    if n_bits is not None and x.shape[1] * 8 != n_bits:
        raise DimensionError(f"{name} have {x.shape[1] * 8} bits; the index has {n_bits}")
    return x


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Packs an (n, n_bits) array of 0/1 or bool into (n, n_bits // 8) uint8 codes (MSB first)."""
    if not isinstance(bits, np.ndarray):
        raise InvalidTypeError(f"bits must be a numpy array, got {type(bits).__name__}")
    if bits.ndim != 2:
        raise InvalidInputError(f"bits must be 2-D (n, n_bits), got shape {bits.shape}")
    if bits.dtype != np.bool_:
        if not np.issubdtype(bits.dtype, np.integer):
            raise InvalidTypeError(f"bits must be bool or integer 0/1, got {bits.dtype}")
        if bits.size and (bits.min() < 0 or bits.max() > 1):
            raise InvalidInputError("bits must contain only 0 and 1")
    check_n_bits(bits.shape[1])
    return np.ascontiguousarray(np.packbits(bits.astype(bool, copy=False), axis=1))


def unpack_bits(codes: np.ndarray) -> np.ndarray:
    """Unpacks (n, n_bits // 8) uint8 codes into an (n, n_bits) uint8 array of 0/1."""
    codes = as_codes(codes)
    return np.unpackbits(codes, axis=1)


def from_faiss_codes(codes: np.ndarray) -> np.ndarray:
    """Converts faiss' LSB-first packed codes to hashpivot's (np.packbits) layout."""
    return _REVERSE_BITS[as_codes(codes)]


def to_faiss_codes(codes: np.ndarray) -> np.ndarray:
    """Converts hashpivot codes to the LSB-first layout of faiss' binary indexes."""
    return _REVERSE_BITS[as_codes(codes)]
