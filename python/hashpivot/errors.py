"""Exceptions raised by hashpivot: each says what was wrong and what to do about it."""

from __future__ import annotations


class HashpivotError(Exception):
    """Base class of every error hashpivot raises on purpose."""


class InvalidInputError(HashpivotError, ValueError):
    """An argument has the right type but a value hashpivot cannot use."""


class InvalidTypeError(HashpivotError, TypeError):
    """An argument has the wrong type or dtype."""


class IndexFormatError(HashpivotError, ValueError):
    """A saved file is corrupt, truncated, from an unknown version or not a hashpivot file."""


# Specific errors (each also an InvalidInputError/IndexFormatError, so ValueError):
class DimensionError(InvalidInputError):
    """Embeddings or queries of another dimension than the model or index expects."""


class NonFiniteError(InvalidInputError):
    """NaN or inf in embeddings or queries."""


class ZeroVectorError(InvalidInputError):
    """An all-zero embedding (it has no direction; the encoder probably failed)."""


class DuplicateIdError(InvalidInputError):
    """Ids repeated within one add, or already in the index."""


class UnknownIdError(InvalidInputError):
    """remove() of an id that is not in the index."""


class FormatVersionError(IndexFormatError):
    """A file written by a newer (or unknown) version of hashpivot's format."""


class CorruptFileError(IndexFormatError):
    """A missing, truncated, bit-flipped or inconsistent file."""
