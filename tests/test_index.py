"""hashpivot.Index against a brute-force numpy pipeline: filter on/off, rerank on/off, store
types, after add and remove."""

import numpy as np
import pytest

from conftest import band_rows, banded_answer, ref_distances
from hashpivot import Index, InvalidInputError, InvalidTypeError


def data(n=2000, d=64, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((15, d))
    x = centers[rng.integers(0, 15, n)] + 0.7 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def built():
    x = data()
    return x, Index.build(x, n_bits=64, n_pivots=8, store="float32", seed=1)


def ref_hamming(index, q, k, threshold=None):
    """Brute force over the stored rows: (distances, internal rows), ties by row."""
    qc = index.itq.encode(q)
    d = ref_distances(qc, index.codes)
    if threshold is not None:
        qd = ref_distances(qc, index.pivots)  # (nq, P)
        ok = (np.abs(index.table[None].astype(int) - qd[:, None, :]) <= threshold).all(2)
        d = np.where(ok, d, 10**6)
    rows = np.argsort(d, axis=1, kind="stable")[:, :k]
    dist = np.take_along_axis(d, rows, 1)
    rows = np.where(dist < 10**6, rows, -1)
    return np.where(rows >= 0, dist, index.n_bits + 1), rows


def ids_of(index, rows):
    return np.where(rows >= 0, index.ids[np.maximum(rows, 0)], -1)


@pytest.mark.parametrize("threshold", [None, 4, 8, 64])
def test_hamming_search_equals_brute_force(built, threshold):
    x, index = built
    q = data(30, seed=5)
    D, I = index.search(q, k=15, threshold=threshold, rerank=False, scoring="hamming")
    Dr, Rr = ref_hamming(index, q, 15, threshold)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, ids_of(index, Rr))


@pytest.mark.parametrize("threshold", [None, 8])
def test_rerank_equals_brute_force(built, threshold):
    x, index = built
    q = data(20, seed=6)
    S, I = index.search(q, k=10, threshold=threshold, candidates=200, scoring="hamming")
    _, cand = ref_hamming(index, q, 200, threshold)
    for j in range(len(q)):
        rows = cand[j][cand[j] >= 0]
        scores = index.vectors[rows] @ q[j]
        order = np.lexsort((rows, -scores))[:10]
        np.testing.assert_array_equal(I[j], index.ids[rows[order]])
        np.testing.assert_allclose(S[j], scores[order], rtol=1e-5, atol=1e-6)


def test_full_candidates_rerank_is_exact_search(built):
    x, index = built
    q = data(10, seed=7)
    S, I = index.search(q, k=5, candidates=len(index))
    want = np.argsort(-(q @ x.T), axis=1)[:, :5]
    np.testing.assert_array_equal(I, want)  # ids are 0..n-1 in insertion order


@pytest.mark.parametrize("store", ["float16", "int8"])
def test_compressed_stores_rank_close_to_float32(store):
    x = data(1500, seed=2)
    q = data(20, seed=8)
    a = Index.build(x, n_bits=64, store="float32")
    b = Index.build(x, n_bits=64, store=store)
    Sa, Ia = a.search(q, k=10, candidates=1500)
    Sb, Ib = b.search(q, k=10, candidates=1500)
    overlap = np.mean([len(set(u) & set(v)) / 10 for u, v in zip(Ia, Ib)])
    assert overlap >= 0.9
    np.testing.assert_allclose(Sa, Sb, atol=0.02 if store == "int8" else 2e-3)


def test_store_none_returns_hamming(built):
    x = data(500)
    index = Index.build(x, n_bits=64, store=None)
    D, I = index.search(x[:3], k=4, scoring="hamming")
    assert D.dtype == np.int32 and (D[:, 0] == 0).all()
    S, I = index.search(x[:3], k=4)  # asymmetric: float scores, the row itself first
    assert S.dtype == np.float32 and list(I[:, 0]) == [0, 1, 2]


def test_add_and_remove_match_a_fresh_brute_force():
    x = data(1200, seed=3)
    index = Index.build(x[:800], n_bits=64, seed=2, n_pivots=8)
    new_ids = index.add(x[800:1000])
    np.testing.assert_array_equal(new_ids, np.arange(800, 1000))
    index.add(x[1000:], ids=np.arange(5000, 5200))
    assert len(index) == 1200
    removed = np.r_[np.arange(0, 800, 3), np.arange(5000, 5100)]
    assert index.remove(removed) == len(removed)
    assert len(index) == 1200 - len(removed)
    assert not np.isin(removed, index.ids).any()
    q = data(10, seed=9)
    D, I = index.search(q, k=20, threshold=6, rerank=False, scoring="hamming")
    Dr, Rr = ref_hamming(index, q, 20, 6)
    np.testing.assert_array_equal(I, ids_of(index, Rr))
    # the exact rerank over everything is exact search over the remaining vectors
    S, I = index.search(q, k=5, candidates=len(index))
    all_ids = np.r_[np.arange(1000), np.arange(5000, 5200)]
    keep = ~np.isin(all_ids, removed)
    want = all_ids[keep][np.argsort(-(q @ x[keep].T), axis=1)[:, :5]]
    np.testing.assert_array_equal(I, want)


def test_offsets_describe_sorted_cells(built):
    _, index = built
    B = index.n_bits + 1
    key = index.table[:, 0].astype(int) * B + index.table[:, 1]
    assert (np.diff(key) >= 0).all()
    for cell in np.unique(key)[:20]:
        rows = np.flatnonzero(key == cell)
        assert index.offsets[cell] == rows[0] and index.offsets[cell + 1] == rows[-1] + 1


def test_edge_cases():
    x = data(50)
    index = Index.build(x, n_bits=64)
    S, I = index.search(x[0], k=80)  # 1-D query, k > n: capped at the rows
    assert S.shape == (1, 50) and (I[0] >= 0).all() and np.isfinite(S[0]).all()
    index.remove(np.arange(50))
    S, I = index.search(x[:2], k=3)  # empty index
    assert (I == -1).all()
    one = Index.build(x[:2], n_bits=64)
    one.remove([0])
    S, I = one.search(x[:1], k=1)
    assert I[0, 0] == 1
    assert one.stats()["n"] == 1


def test_bad_input(built):
    x, index = built
    with pytest.raises(InvalidInputError, match="dimension"):
        index.search(np.zeros((1, 32), np.float32))
    with pytest.raises(InvalidInputError, match="zero vector"):
        index.search(np.zeros((1, 64), np.float32))
    with pytest.raises(InvalidTypeError):
        index.search("query")
    with pytest.raises(InvalidInputError, match="threshold"):
        index.search(x[:1], threshold=65)
    with pytest.raises(InvalidInputError):
        index.search(x[:1], k=-1)
    with pytest.raises(InvalidInputError):
        index.search(x[:1], candidates=0)
    with pytest.raises(InvalidInputError, match="not in the index"):
        index.remove([10**9])
    with pytest.raises(InvalidInputError, match="already in the index"):
        index.add(x[:2], ids=[0, 1])
    with pytest.raises(InvalidInputError, match="duplicates"):
        index.add(x[:2], ids=[7000, 7000])
    with pytest.raises(InvalidInputError, match="store"):
        Index.build(x, n_bits=64, store="float8")


@pytest.mark.parametrize("nbytes,n", [(16, 40_000), (32, 20_000)])  # 5 blocks of L2-sized rows
@pytest.mark.parametrize("k", [10, 100])  # heap and counting top-k
@pytest.mark.parametrize("threads", [1, 2])
def test_banded_batch_over_many_blocks_equals_brute_force(nbytes, n, k, threads):
    """Batched pivot-filtered search (chunks of queries share each block of codes) equals the
    band filter + brute force, also when windows span several blocks."""
    rng = np.random.default_rng(nbytes + k)
    cent = rng.integers(0, 256, (40, nbytes), dtype=np.uint8)
    flips = np.packbits(rng.random((n, nbytes * 8)) < 0.1, axis=1)
    codes = np.ascontiguousarray(cent[rng.integers(0, 40, n)] ^ flips)
    index = Index.from_codes(codes, seed=3, n_pivots=8)
    q = np.ascontiguousarray(codes[rng.integers(0, n, 70)] ^ np.uint8(3))
    t = 3 * nbytes // 2
    D, I = index.search_codes(q, k, threshold=t, threads=threads)
    kept = sum(len(r) for r in band_rows(index, q, t)) / (len(q) * n)
    assert 0.05 < kept < 0.95  # the band cuts, and keeps
    Dr, Ir = banded_answer(index, q, k, t)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_pivot_table_is_off_by_default():
    """A default index has no pivot table: rows stay in insertion order (an add only appends),
    8 bytes a row are saved, and the research band asks for pivots by name."""
    x = data(600, seed=21)
    plain = Index.build(x[:400], n_bits=64, seed=5)
    banded = Index.build(x[:400], n_bits=64, seed=5, n_pivots=8)
    assert plain.pivots is None and plain.table is None and plain.levels == 0
    assert banded.pivots.shape == (8, 8) and banded.table.shape == (400, 8)
    plain.add(x[400:])
    np.testing.assert_array_equal(plain.ids, np.arange(600))  # insertion order
    np.testing.assert_array_equal(plain.codes, plain.itq.encode(x))
    gap = (
        banded.stats()["index_bytes_per_doc"]
        - Index.build(x[:400], n_bits=64, seed=5).stats()["index_bytes_per_doc"]
    )
    assert gap >= 8  # the table's P bytes a row, at least
    with pytest.raises(ValueError, match="n_pivots > 0"):
        plain.search(x[:1], threshold=5, shortlist=50)
