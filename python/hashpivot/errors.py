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
