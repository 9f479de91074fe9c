"""Argument rules shared by every public function: one place, one message per mistake."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .errors import InvalidInputError, InvalidTypeError, LimitError

INT32_MAX = 2**31 - 1  # counts cross into C++ as int32
SEED_MAX = 2**63 - 1


def is_int(value: object) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def count(value: object, name: str, minimum: int = 0, maximum: int = INT32_MAX) -> int:
    """An integer in [minimum, maximum]; a named error otherwise (never a TypeError from C++)."""
    if not is_int(value):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if v < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {v}")
    if v > maximum:
        raise LimitError(f"{name} must be <= {maximum:,}, got {v:,}")
    return v


def optional_count(
    value: object, name: str, minimum: int = 0, maximum: int = INT32_MAX
) -> Optional[int]:
    return None if value is None else count(value, name, minimum, maximum)


def threads(value: object) -> int:
    """None (all available cores) -> 0, else a positive count."""
    if value is None:
        return 0
    if not is_int(value) or int(value) < 1:
        raise InvalidInputError(f"threads must be a positive integer or None, got {value!r}")
    return count(value, "threads", 1, 4096)


def seed(value: object) -> int:
    return count(value, "seed", 0, SEED_MAX)


def choice(value: object, name: str, options: Sequence[object]) -> object:
    if value not in options or (isinstance(value, bool) and value not in (True, False)):
        raise InvalidInputError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def number(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not low <= v <= high:
        raise InvalidInputError(f"{name} must be from {low} to {high}, got {v}")
    return v


def to_numpy(x: object) -> object:
    """A torch tensor becomes the numpy array sharing its memory (CPU tensors are not copied;
    a GPU tensor is copied to the host); anything else is returned as it is. torch is never
    imported here."""
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x
