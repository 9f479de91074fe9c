"""Asymmetric scoring: the quantized scan and the exact re-scoring against numpy, on every
instruction set and width; the index's scoring modes against brute force."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hashpivot as hp
from hashpivot import Index, _core
from test_index import data

WIDTHS = [64, 128, 192, 256, 512, 1024]


def exact_scores(z, codes):
    """z . (2 b - 1): the asymmetric score, plain numpy."""
    return z @ (2.0 * np.unpackbits(codes, axis=1).astype(np.float64) - 1).T


def quantized_distances(z, codes):
    """The kernel's integer distance: 7 n - (sum_j v_j b_j - 8 popcount(b)), v = round(z/step)+8."""
    n = codes.shape[1] * 8
    step = np.abs(z).max(axis=1, keepdims=True) / np.float32(7.5)
    v = np.clip(np.round(z / step) + 8, 0, 15)
    b = np.unpackbits(codes, axis=1).astype(np.int64)
    return (7 * n - (v.astype(np.int64) @ b.T - 8 * b.sum(1)[None, :])).astype(np.int64)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 300),
    nq=st.integers(1, 3),
    n_bits=st.sampled_from(WIDTHS),
    k=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantized_scan_matches_numpy(isa, n, nq, n_bits, k, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8)
    z = rng.standard_normal((nq, n_bits)).astype(np.float32)
    D, I = _core.asym_knn(z, codes, k, k, exact=False)  # the quantized scan alone
    ref = quantized_distances(z, codes)
    for j in range(nq):
        order = np.lexsort((np.arange(n), ref[j]))[:k]
        m = len(order)
        np.testing.assert_array_equal(D[j, :m], ref[j, order])
        # ties in the rare rounding-boundary cases aside, the rows are the same
        assert (I[j, :m] == order).mean() > 0.95
        assert (I[j, m:] == -1).all()


@pytest.mark.parametrize("n_bits", WIDTHS)
def test_rescore_is_exact(isa, n_bits):
    rng = np.random.default_rng(n_bits)
    codes = rng.integers(0, 256, (500, n_bits // 8), dtype=np.uint8)
    z = rng.standard_normal((3, n_bits)).astype(np.float32)
    cand = np.stack([rng.permutation(500)[:200] for _ in range(3)]).astype(np.int64)
    cand[1, 50:] = -1
    S, R = hp.asymmetric_rescore(z, codes, cand, 20)
    ref = exact_scores(z, codes)
    for j in range(3):
        c = cand[j][cand[j] >= 0]
        want = c[np.lexsort((c, -ref[j, c]))][:20]
        np.testing.assert_array_equal(R[j], want)
        np.testing.assert_allclose(S[j], ref[j, want], rtol=1e-4, atol=1e-3)


def test_quantization_error_is_bounded():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (2000, 16), dtype=np.uint8)
    z = rng.standard_normal((5, 128)).astype(np.float32)
    step = np.abs(z).max(1) / 7.5
    approx = (7 * 128 - quantized_distances(z, codes)) * 2  # 2 sum u b - ... up to a constant
    exact = exact_scores(z, codes)
    for j in range(
        5
    ):  # |z_j - step u_j| <= step / 2 on every bit: the score moves <= n step / 2 * 2
        u_sum = np.clip(np.round(z[j] / step[j]), -8, 7).sum()
        err = np.abs(step[j] * (approx[j] - u_sum) - exact[j])
        assert err.max() <= 128 * step[j] / 2 * 2 + 1e-3


def test_full_scan_with_exact_rescore_finds_exact_top(isa):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (5000, 16), dtype=np.uint8)
    z = rng.standard_normal((4, 128)).astype(np.float32)
    S, I = hp.asymmetric_knn(z, codes, 10)
    ref = exact_scores(z, codes)
    for j in range(4):
        want = np.argsort(-ref[j])[:10]
        assert len(set(I[j]) & set(want)) >= 8  # quantized first stage, exact scores returned
        np.testing.assert_allclose(S[j], ref[j, I[j]], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shortlist", [None, 150, "auto"])
def test_index_asymmetric_equals_brute_force(shortlist):
    x = data(1500, seed=51)
    index = Index.build(x, n_bits=64)
    q = data(6, seed=52)
    S, I = index.search(
        q,
        k=10,
        rerank=False,
        scoring="asymmetric",
        shortlist=shortlist,
        candidates=1500 if shortlist is None else 10,
    )
    z = index.itq.project(q)
    ref = exact_scores(z, index.codes)
    if shortlist == 150:  # the Hamming shortlist, as rows
        _, pool_ids = index.search_codes(index.itq.encode(q), 150)
        row_of = np.empty(len(index), np.int64)
        row_of[index.ids] = np.arange(len(index))
        pool = row_of[pool_ids]
    for j in range(6):
        rows = np.arange(len(index)) if shortlist != 150 else pool[j]
        want = rows[np.lexsort((rows, -ref[j, rows]))][:10]
        np.testing.assert_allclose(S[j], ref[j, want], rtol=1e-4, atol=1e-3)
    assert S.dtype == np.float32


def test_index_rejects_bad_scoring():
    x = data(300, seed=53)
    index = Index.build(x, n_bits=64, n_pivots=8)
    with pytest.raises(ValueError, match="scoring"):
        index.search(x[:1], scoring="cosine")
    with pytest.raises(ValueError, match="shortlist"):
        index.search(x[:1], scoring="hamming", shortlist=100)
    with pytest.raises(ValueError, match="shortlist"):
        index.search(x[:1], threshold=5, shortlist=None)
    with pytest.raises(ValueError, match="projections"):
        hp.asymmetric_knn(np.zeros((1, 60), np.float32), index.codes, 3)
