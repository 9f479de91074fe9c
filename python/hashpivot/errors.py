"""Exceptions raised by hashpivot: each says what was wrong and what to do about it.

Every error hashpivot raises on purpose is a :class:`HashpivotError`; each is also the standard
exception a caller would catch without knowing hashpivot (``ValueError``, ``TypeError``,
``OSError``, ``FileNotFoundError``).
"""

from __future__ import annotations


def one_line(e: BaseException) -> str:
    """An error's message on one line, as valid text (a lone surrogate replaced): what the CLI
    prints and the server answers."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text.encode("utf-8", "replace").decode("utf-8")


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


class LimitError(InvalidInputError):
    """A count, id or size beyond what hashpivot supports (say 2**31 candidates)."""


class FormatVersionError(IndexFormatError):
    """A file written by a newer (or unknown) version of hashpivot's format."""


class CorruptFileError(IndexFormatError):
    """A missing, truncated, bit-flipped, inconsistent or unsafe (symlinked) file."""


class MissingFileError(CorruptFileError, FileNotFoundError):
    """A file that should exist (an ITQ model, an index member) does not."""


class IndexDirectoryError(HashpivotError, OSError):
    """A save into a directory that holds files but no hashpivot index: refused, nothing is
    touched."""


class StorageError(HashpivotError, OSError):
    """Writing an index failed (disk full, permissions); what this save wrote is removed and
    the previous index, if any, is intact."""


class ConfigurationError(HashpivotError, RuntimeError):
    """An optional dependency or resource is missing (a model, a package, a GPU)."""
