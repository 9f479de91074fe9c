"""Bad input to the kernels: a clear ValueError/TypeError subclass, never a crash or a copy."""

import numpy as np
import pytest

import hashpivot as hp
from hashpivot import InvalidInputError, InvalidTypeError

rng = np.random.default_rng(0)
CODES = rng.integers(0, 256, (100, 16), dtype=np.uint8)
Q = rng.integers(0, 256, (3, 16), dtype=np.uint8)


@pytest.mark.parametrize(
    "queries, codes, k, exc, words",
    [
        (Q.astype(np.int64), CODES, 5, InvalidTypeError, "dtype uint8"),
        (Q, CODES.astype(np.float32), 5, InvalidTypeError, "dtype uint8"),
        (Q.tolist(), CODES, 5, InvalidTypeError, "numpy uint8 array"),
        ("abc", CODES, 5, InvalidTypeError, "numpy uint8 array"),
        (Q, CODES[:, :12].copy(), 5, InvalidInputError, "multiple of 64"),
        (Q, CODES[:, :8].copy(), 5, InvalidInputError, "bits"),  # width mismatch
        (Q, CODES[::2], 5, InvalidInputError, "C-contiguous"),
        (Q, np.asfortranarray(CODES), 5, InvalidInputError, "C-contiguous"),
        (Q, CODES.reshape(100, 2, 8), 5, InvalidInputError, "2-D"),
        (Q, CODES, -1, InvalidInputError, "k must be >= 0"),
        (Q, CODES, 2.5, InvalidTypeError, "k must be an integer"),
    ],
)
def test_knn_rejects(queries, codes, k, exc, words):
    with pytest.raises(exc, match=words):
        hp.hamming_knn(queries, codes, k)


def test_errors_are_standard_exception_types():
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(InvalidTypeError, TypeError)


def test_negative_radius_and_bad_threads():
    with pytest.raises(InvalidInputError, match="radius"):
        hp.hamming_range(Q[0], CODES, -1)
    with pytest.raises(InvalidInputError, match="threads"):
        hp.hamming_knn(Q, CODES, 3, threads=0)


def test_core_rejects_bad_arrays_without_python_layer():
    from hashpivot import _core

    with pytest.raises(TypeError):
        _core.knn(Q.astype(np.int32), CODES, 3)
    with pytest.raises(ValueError):
        _core.knn(Q, CODES[::2], 3)
    with pytest.raises(ValueError):
        _core.knn(Q, CODES, -3)


def test_pivot_inputs():
    table = rng.integers(0, 100, (100, 8)).astype(np.uint8)
    with pytest.raises(InvalidTypeError):
        hp.pivot_filter(table.astype(np.int32), np.zeros(8, int), 3)
    with pytest.raises(InvalidInputError, match="8 columns"):
        hp.pivot_filter(table, np.zeros(7, int), 3)
    with pytest.raises(InvalidTypeError):
        hp.pivot_filter(table, np.zeros(8), 3)
    with pytest.raises(InvalidInputError):
        hp.pivot_filter(table, np.zeros(8, int), -1)
    with pytest.raises(InvalidInputError):
        hp.pivot_knn(Q, CODES, 3, table[:50].copy(), np.zeros((3, 8), int), 3)


def test_pack_bits_rejects():
    with pytest.raises(InvalidInputError, match="0 and 1"):
        hp.pack_bits(np.full((2, 64), 2))
    with pytest.raises(InvalidInputError, match="multiple of 64"):
        hp.pack_bits(np.zeros((2, 60), dtype=bool))
    with pytest.raises(InvalidTypeError):
        hp.pack_bits(np.zeros((2, 64), dtype=np.float32))


def test_edge_cases_are_not_errors():
    D, I = hp.hamming_knn(Q, CODES[:0], 4)  # empty database
    assert (I == -1).all() and (D == 129).all()
    D, I = hp.hamming_knn(Q[:0], CODES, 4)  # no queries
    assert D.shape == (0, 4)
    D, I = hp.hamming_knn(Q, CODES, 0)
    assert D.shape == (3, 0)
    D, I = hp.hamming_knn(Q, CODES[:2], 5)  # k > n
    assert (I[:, 2:] == -1).all() and (I[:, :2] >= 0).all()
