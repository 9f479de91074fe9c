"""Every public entry point against bad input: a specific hashpivot exception (a ValueError or
TypeError subclass) whose message says what to do; never a crash or a silent wrong answer."""

import numpy as np
import pytest

import hashpivot as hp
from hashpivot import ITQ, Index, errors
from test_index import data

X = data(400, d=64, seed=1)


@pytest.fixture(scope="module")
def index():
    return Index.build(X, n_bits=64, store="float32")


def nan_rows():
    q = X[:2].copy()
    q[1, 3] = np.nan
    return q


def inf_rows():
    q = X[:2].copy()
    q[0, 0] = np.inf
    return q


# (description, call, exception type, words in the message)
CASES = [
    ("NaN in queries", lambda ix: ix.search(nan_rows()), errors.NonFiniteError, "NaN"),
    ("inf in queries", lambda ix: ix.search(inf_rows()), errors.NonFiniteError, "inf"),
    ("NaN in added embeddings", lambda ix: ix.add(nan_rows()), errors.NonFiniteError, "NaN"),
    (
        "NaN in build embeddings",
        lambda ix: Index.build(nan_rows().repeat(50, 0), n_bits=64),
        errors.NonFiniteError,
        "NaN",
    ),
    (
        "zero query vector",
        lambda ix: ix.search(np.zeros(64, np.float32)),
        errors.ZeroVectorError,
        "zero",
    ),
    (
        "zero vector added",
        lambda ix: ix.add(np.zeros((1, 64), np.float32)),
        errors.ZeroVectorError,
        "zero",
    ),
    (
        "wrong query dimension",
        lambda ix: ix.search(np.ones((2, 65), np.float32)),
        errors.DimensionError,
        "dimension",
    ),
    (
        "1-D query of wrong length",
        lambda ix: ix.search(np.ones(10, np.float32)),
        errors.DimensionError,
        "dimension",
    ),
    (
        "wrong dimension added",
        lambda ix: ix.add(np.ones((2, 32), np.float32)),
        errors.DimensionError,
        "dimension",
    ),
    (
        "integer queries",
        lambda ix: ix.search(np.ones((1, 64), np.int32)),
        errors.InvalidTypeError,
        "float",
    ),
    ("string query", lambda ix: ix.search("ファイル"), errors.InvalidTypeError, "numpy"),
    ("list query", lambda ix: ix.search([0.1] * 64), errors.InvalidTypeError, "numpy"),
    ("object array", lambda ix: ix.search(np.array([None] * 64)), errors.InvalidTypeError, "float"),
    (
        "3-D queries",
        lambda ix: ix.search(np.ones((1, 2, 64), np.float32)),
        errors.InvalidInputError,
        "2-D",
    ),
    ("k = 0", lambda ix: ix.search(X[:1], k=0), errors.InvalidInputError, "k must be >= 1"),
    ("k < 0", lambda ix: ix.search(X[:1], k=-5), errors.InvalidInputError, "k must be >= 1"),
    (
        "k float",
        lambda ix: ix.search(X[:1], k=2.0),
        errors.InvalidTypeError,
        "k must be an integer",
    ),
    (
        "candidates = 0",
        lambda ix: ix.search(X[:1], candidates=0),
        errors.InvalidInputError,
        "candidates",
    ),
    (
        "candidates < 0",
        lambda ix: ix.search(X[:1], candidates=-1),
        errors.InvalidInputError,
        "candidates",
    ),
    (
        "threshold < 0",
        lambda ix: ix.search(X[:1], threshold=-1),
        errors.InvalidInputError,
        "threshold",
    ),
    (
        "threshold > n_bits",
        lambda ix: ix.search(X[:1], threshold=65),
        errors.InvalidInputError,
        "threshold",
    ),
    ("threads = 0", lambda ix: ix.search(X[:1], threads=0), errors.InvalidInputError, "threads"),
    (
        "duplicate ids in add",
        lambda ix: ix.add(X[:2], ids=[9000, 9000]),
        errors.DuplicateIdError,
        "duplicates",
    ),
    (
        "ids already present",
        lambda ix: ix.add(X[:2], ids=[0, 9001]),
        errors.DuplicateIdError,
        "already",
    ),
    ("negative ids", lambda ix: ix.add(X[:1], ids=[-3]), errors.InvalidInputError, ">= 0"),
    (
        "ids count mismatch",
        lambda ix: ix.add(X[:2], ids=[9100]),
        errors.InvalidInputError,
        "ids for",
    ),
    (
        "float ids",
        lambda ix: ix.add(X[:1], ids=np.array([1.5])),
        errors.InvalidTypeError,
        "integers",
    ),
    (
        "unknown id on remove",
        lambda ix: ix.remove([123456]),
        errors.UnknownIdError,
        "not in the index",
    ),
    (
        "bad store",
        lambda ix: Index.build(X, n_bits=64, store="fp8"),
        errors.InvalidInputError,
        "store",
    ),
    (
        "n_bits not /64",
        lambda ix: Index.build(X, n_bits=100),
        errors.InvalidInputError,
        "multiple of 64",
    ),
    ("n_bits > dim", lambda ix: Index.build(X, n_bits=128), errors.InvalidInputError, "dimension"),
    (
        "too many pivots",
        lambda ix: Index.build(X, n_bits=64, n_pivots=17),
        errors.InvalidInputError,
        "n_pivots",
    ),
    (
        "unknown pivot method",
        lambda ix: Index.build(X, n_bits=64, pivot_method="x"),
        errors.InvalidInputError,
        "method",
    ),
    (
        "codes search on embedding index",
        lambda ix: ix.add_codes(np.zeros((1, 8), np.uint8)),
        errors.InvalidInputError,
        "add()",
    ),
    (
        "query codes of other width",
        lambda ix: ix.search_codes(np.zeros((1, 16), np.uint8)),
        errors.DimensionError,
        "bits",
    ),
    (
        "float query codes",
        lambda ix: ix.search_codes(np.zeros((1, 8), np.float32)),
        errors.InvalidTypeError,
        "uint8",
    ),
    ("ITQ encode before fit", lambda ix: ITQ(64).encode(X), errors.InvalidInputError, "not fitted"),
    (
        "kernel: codes float",
        lambda ix: hp.hamming_knn(X[:1], X, 3),
        errors.InvalidTypeError,
        "uint8",
    ),
    (
        "kernel: negative k",
        lambda ix: hp.hamming_knn(ix.codes[:1], ix.codes, -1),
        errors.InvalidInputError,
        "k",
    ),
    (
        "kernel: non-contiguous",
        lambda ix: hp.hamming_knn(ix.codes[:1], ix.codes[::2], 1),
        errors.InvalidInputError,
        "contiguous",
    ),
]


@pytest.mark.parametrize("desc, call, exc, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_specific_error(index, desc, call, exc, words):
    n_before = len(index)
    with pytest.raises(exc, match=words):
        call(index)
    assert len(index) == n_before  # a rejected call changes nothing
    assert issubclass(exc, (ValueError, TypeError)) and issubclass(exc, errors.HashpivotError)


def test_number_of_bad_inputs_tried():
    assert len(CASES) >= 35


def test_not_errors(index):
    S, I = index.search(X[0], k=len(index) + 5)  # 1-D query = one query; k capped at n
    assert S.shape == (1, len(index)) and (I[0] >= 0).all() and np.isfinite(S).all()
    empty = Index.build(X, n_bits=64)
    empty.remove(np.arange(len(X)))
    S, I = empty.search(X[:3], k=4)  # an empty index: no columns
    assert S.shape == I.shape == (3, 0)
    D, I = empty.search(X[:1], k=2, rerank=False, scoring="hamming")
    assert D.shape == (1, 0) and D.dtype == np.int32
