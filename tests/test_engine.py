"""The engine against an independent reference: numpy brute force over the stored vectors, for
every layout and scoring, with ties, with filters; and the same ids whatever the thread count
and whether a query is searched alone or in a batch (hypothesis)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hashpivot as hp

N, DIM, BITS = 3000, 64, 64


def corpus(seed: int = 0) -> np.ndarray:
    """Clustered rows with exact duplicates, so that many scores tie."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM))
    x = centres[rng.integers(0, 20, N)] + 0.4 * rng.standard_normal((N, DIM))
    x[N // 2 : N // 2 + 300] = x[:300]  # duplicates: tied exact scores, tied codes
    return x.astype(np.float32)


X = corpus()
XN = X / np.linalg.norm(X, axis=1, keepdims=True)
Q = np.concatenate([X[:20], np.random.default_rng(1).standard_normal((20, DIM))]).astype(np.float32)
QN = Q / np.linalg.norm(Q, axis=1, keepdims=True)
LAYOUTS = {"flat": {}, "partitioned": {"n_partitions": 32}, "ivf": {"n_lists": 40}}


@pytest.fixture(scope="module")
def indexes():
    return {name: hp.Index.build(X, n_bits=BITS, layout=name, **kw) for name, kw in LAYOUTS.items()}


def scorings(layout):
    return ("asymmetric",) if layout == "ivf" else ("asymmetric", "hamming")


def exhaustive(index, scoring):
    kw = {"candidates": len(index), "scoring": scoring}
    if index.layout != "flat":
        kw["nprobe"] = index.stats()["n_lists" if index.layout == "ivf" else "n_partitions"]
    return kw


def assert_exact(scores, ids, ref, k):
    """Each returned id's score is its exact score, and the scores are the exact top-k (ties may
    pick any of the tied rows, each once)."""
    for j in range(len(ref)):
        best = np.sort(ref[j])[::-1][:k]
        valid = ids[j] >= 0
        assert len(set(ids[j][valid])) == valid.sum()
        np.testing.assert_allclose(scores[j][valid], ref[j][ids[j][valid]], atol=1e-5)
        np.testing.assert_allclose(scores[j][valid], best[: valid.sum()], atol=1e-5)
        assert valid.sum() == np.isfinite(best).sum()  # -1 only where fewer rows qualify


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_exhaustive_search_equals_brute_force(indexes, layout):
    index = indexes[layout]
    for scoring in scorings(layout):
        scores, ids = index.search(Q, 10, **exhaustive(index, scoring))
        assert_exact(scores, ids, QN @ XN.T, 10)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("share", [0.5, 0.1, 0.01, 0.001, "one"])
def test_filtered_search_equals_filtered_brute_force(indexes, layout, share):
    index = indexes[layout]
    rng = np.random.default_rng(7)
    n_allowed = 1 if share == "one" else max(1, int(share * N))
    allowed = np.sort(rng.choice(N, n_allowed, replace=False))
    ref = QN @ XN.T
    masked = np.full_like(ref, -np.inf)
    masked[:, allowed] = ref[:, allowed]
    for scoring in scorings(layout):
        for form in (allowed, np.isin(np.arange(N), allowed), hp.IdFilter(allowed)):
            scores, ids = index.search(Q, 10, allowed=form, **exhaustive(index, scoring))
            assert np.isin(ids[ids >= 0], allowed).all()
            assert_exact(scores, ids, masked, 10)


@pytest.mark.parametrize("layout", ["flat", "partitioned"])
def test_filtered_search_codes_equals_brute_force(indexes, layout):
    index = indexes[layout]
    codes = np.empty_like(index.codes)
    codes[np.asarray(index.ids)] = index.codes  # by id (rows are stored in cell order)
    allowed = np.arange(0, N, 7)
    d, ids = index.search_codes(codes[:10], 5, allowed=allowed)
    ham = np.unpackbits(codes[:10, None] ^ codes[None, allowed], axis=2).sum(2)
    np.testing.assert_array_equal(d, np.sort(ham, axis=1)[:, :5])
    assert np.isin(ids, allowed).all()


def test_filter_after_remove_and_unknown_ids(tmp_path):
    index = hp.Index.build(X, n_bits=BITS, ids=np.arange(N) * 10)
    index.remove(np.arange(0, 500) * 10)
    allowed = np.concatenate([np.arange(0, 1000) * 10, [-5, 10**12]])  # half removed, 2 unknown
    scores, ids = index.search(Q, 10, allowed=allowed, candidates=N)
    assert np.isin(ids, np.arange(500, 1000) * 10).all()
    index.save(tmp_path / "i")
    mapped = hp.Index.load(tmp_path / "i", mmap=True)
    s2, ids2 = mapped.search(Q, 10, allowed=allowed, candidates=N)
    np.testing.assert_array_equal(ids, ids2)


def test_filter_errors(indexes):
    index = indexes["flat"]
    with pytest.raises(hp.HashpivotError, match="one entry per document"):
        index.search(Q, 10, allowed=np.ones(5, bool))
    with pytest.raises(hp.HashpivotError):
        index.search(Q, 10, allowed=np.array([0.5, 1.5]))
    with pytest.raises(hp.HashpivotError):
        index.search(Q, 10, allowed=np.zeros((2, 2), np.int64))
    s, ids = index.search(Q, 10, allowed=np.array([], np.int64))
    assert (ids == -1).all() and np.isneginf(s).all()


SEARCHES = st.fixed_dictionaries(
    {
        "layout": st.sampled_from(list(LAYOUTS)),
        "scoring": st.sampled_from(["asymmetric", "hamming"]),
        "k": st.integers(1, 30),
        "candidates": st.integers(1, 400),
        "nprobe": st.one_of(st.none(), st.integers(1, 40)),
        "rows": st.lists(st.integers(0, len(Q) - 1), min_size=2, max_size=12),
        "filtered": st.booleans(),
    }
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(s=SEARCHES)
def test_same_ids_whatever_threads_or_batch(indexes, s):
    index = indexes[s["layout"]]
    if s["layout"] == "ivf":
        s["scoring"] = "asymmetric"
    kw = {"candidates": s["candidates"], "scoring": s["scoring"]}
    if s["layout"] != "flat" and s["nprobe"] is not None:
        kw["nprobe"] = s["nprobe"]
    if s["filtered"]:
        kw["allowed"] = np.arange(0, N, 3)
    q = Q[s["rows"]]
    s1, i1 = index.search(q, s["k"], threads=1, **kw)
    s2, i2 = index.search(q, s["k"], threads=2, **kw)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    for j in range(len(q)):
        sj, ij = index.search(q[j : j + 1], s["k"], threads=1, **kw)
        np.testing.assert_array_equal(ij[0], i1[j])
        np.testing.assert_array_equal(sj[0], s1[j])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_empty_and_nearly_empty_indexes_save_and_load(indexes, layout, tmp_path):
    """An empty index with a trained codec (a shard before its rows), and an index with fewer
    rows than lists after remove(), save and load like any other."""
    empty = indexes[layout].empty_like()
    empty.save(tmp_path / "empty")
    loaded = hp.Index.load(tmp_path / "empty")
    assert len(loaded) == 0 and (loaded.search(Q[:2], 3)[1] == -1).all()
    loaded.add(X[:50])
    assert len(loaded) == 50
    few = hp.Index.build(X, n_bits=BITS, layout=layout, **LAYOUTS[layout])
    few.remove(np.arange(5, N))
    few.save(tmp_path / "few")
    back = hp.Index.load(tmp_path / "few")
    np.testing.assert_array_equal(np.sort(back.ids), np.arange(5))
    assert set(
        back.search(Q[:1], 5, candidates=5, **({} if layout == "flat" else {"nprobe": 40}))[1][0]
    ) <= set(range(5))
