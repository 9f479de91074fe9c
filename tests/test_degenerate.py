"""Silent wrong answers on degenerate data (issue 33, class 1): the error bound never prunes a
row it cannot bound, coincident centres never strand rows, the index owns its arrays; and a
property test over degenerate data (duplicates, identical rows, two points repeated, tiny and
denormal norms, N from 1 to a few thousand, lists up to N and beyond, every layout, metric,
store, extra bits and bound): results are valid, and exhaustive settings equal numpy's brute
force."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hashpivot as hp

warnings.filterwarnings("ignore", category=UserWarning)


def as_metric(a, metric):
    """Rows in float64 as the metric compares them (unit rows under cosine)."""
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True) if metric == "cosine" else a


def brute(x, q, k, metric):
    """numpy's exact top-k scores (the reference): cosine or raw inner products."""
    s = as_metric(q, metric) @ as_metric(x, metric).T
    return -np.sort(-s, axis=1)[:, :k]


def exact_scores(x, q, ids, metric):
    return np.einsum("qd,qkd->qk", as_metric(q, metric), as_metric(x, metric)[ids])


# ---- the bound: a row without a bound is never pruned; the int8 <q, c> is covered ----
@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_bound_on_queries_at_the_centres_equals_no_bound(scale):
    """Queries exactly on list centres (|q - c| = 0); at scale 50 most rows' error is beyond
    the last level ("never pruned"): 0 x inf made a NaN sort key that dropped them."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2000, 64)) * scale).astype(np.float32)
    idx = hp.Index.build(x, layout="ivf", extra_bits=0, metric="ip", n_bits=64)
    q = np.array(idx.centres)
    n, C = len(idx), idx.shape().n_groups
    a = idx.search(q, 10, nprobe=C, candidates=n)
    b = idx.search(q, 10, nprobe=C, candidates=n, bound=3)
    assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])
    s = brute(x, q, 10, "ip")
    assert np.allclose(b[0], s, rtol=1e-4, atol=1e-3 * scale)


# ---- identical and nearly identical rows: coincident centres never strand them ----
@pytest.mark.parametrize("metric", ["cosine", "ip"])
@pytest.mark.parametrize("n,noise", [(400, 0.0), (1000, 0.0), (50, 1e-7), (400, 1e-7)])
def test_identical_rows_are_found_with_default_settings(isa, metric, n, noise):
    rng = np.random.default_rng(n)
    base = rng.standard_normal((1, 384)).astype(np.float32)
    x = np.repeat(base, n, 0) + noise * rng.standard_normal((n, 384)).astype(np.float32)
    for layout in ("ivf", "partitioned"):
        idx = hp.Index.build(x, layout=layout, n_bits=128, metric=metric, seed=n)
        kw = {"nprobe": 1} if layout == "partitioned" else {}
        s, i = idx.search(x[:5], 10, **kw)
        assert (i >= 0).all(), (layout, i)
        assert len(set(i[0])) == 10


# ---- the index owns its arrays ----
def test_the_index_does_not_alias_the_callers_buffer():
    rng = np.random.default_rng(0)
    for layout in ("flat", "ivf"):
        buf = rng.standard_normal((1000, 64)).astype(np.float32)
        idx = hp.Index.build(buf, metric="ip", n_bits=64, layout=layout)
        q = buf[:5].copy()
        before = idx.search(q, 5)
        buf[:] = rng.standard_normal(buf.shape)  # an ingestion loop reusing its buffer
        after = idx.search(q, 5)
        assert np.array_equal(before[1], after[1]) and np.array_equal(before[0], after[0])
        small = rng.standard_normal((100, 64)).astype(np.float32)
        idx.add(small)  # a batch smaller than the segment before it
        q2 = small[:5].copy()
        before = idx.search(q2, 5)
        small[:] = 0
        after = idx.search(q2, 5)
        assert np.array_equal(before[1], after[1]) and np.array_equal(before[0], after[0])
        for name in ("codes", "ids", "offsets", "centres"):  # what it hands out is read-only
            a = getattr(idx, name)
            if isinstance(a, np.ndarray):
                with pytest.raises(ValueError, match="read-only"):
                    a[...] = 0
    flat = hp.Index.build(rng.standard_normal((300, 64)).astype(np.float32), n_bits=64)
    with pytest.raises(ValueError, match="read-only"):
        flat.vectors[:] = 0  # the flat store is one array: handed out read-only too
    assert np.allclose(np.linalg.norm(flat.vectors, axis=1), 1)


# ---- the property test ----
def degenerate_rows(draw, n, d):
    kind = draw(st.sampled_from(["identical", "two", "dups", "tiny", "denormal", "random"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "identical":
        x = np.repeat(rng.standard_normal((1, d)), n, 0)
    elif kind == "two":
        x = rng.standard_normal((2, d))[rng.integers(0, 2, n)]
    elif kind == "dups":
        x = rng.standard_normal((max(1, n // 4), d))[rng.integers(0, max(1, n // 4), n)]
    elif kind == "tiny":
        x = rng.standard_normal((n, d)) * 1e-20
    elif kind == "denormal":
        x = rng.standard_normal((n, d)) * 1e-39  # float32 subnormals
    else:
        x = rng.standard_normal((n, d))
    x = x.astype(np.float32)
    x[~(x != 0).any(axis=1), 0] = np.float32(1e-38)  # no zero rows (a named error)
    return kind, x


@st.composite
def cases(draw):
    n = draw(st.sampled_from([1, 2, 3, 7, 64, 300, 2000]))
    d = 64
    kind, x = degenerate_rows(draw, n, d)
    layout = draw(st.sampled_from(["flat", "partitioned", "ivf"]))
    metric = draw(st.sampled_from(["cosine", "ip"]))
    store = draw(st.sampled_from(["float32", "float16", "int8"]))
    groups = draw(st.sampled_from([None, 1, n, 4 * n + 3]))
    extra = draw(st.sampled_from([0, 2])) if layout == "ivf" else 0
    bound = draw(st.sampled_from([None, 3.0])) if layout == "ivf" else None
    k = draw(st.sampled_from([1, 5, 10]))
    return kind, x, layout, metric, store, groups, extra, bound, k


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_degenerate_data_gives_valid_and_exhaustively_exact_results(case):
    kind, x, layout, metric, store, groups, extra, bound, k = case
    n = len(x)
    kw = {}
    if layout == "ivf":
        kw = {"n_lists": groups, "extra_bits": extra}
    elif layout == "partitioned":
        kw = {"n_partitions": groups}
    too_many = layout != "flat" and groups is not None and groups > n
    if too_many or n < 2:  # more groups than rows, or one row to train on: a named error
        with pytest.raises(hp.HashpivotError):
            hp.Index.build(x, layout=layout, metric=metric, store=store, n_bits=64, **kw)
        return
    idx = hp.Index.build(x, layout=layout, metric=metric, store=store, n_bits=64, **kw)
    q = x[: min(n, 4)] * np.float32(1.5)
    # default settings: valid results (existing ids, sorted scores, none repeated)
    s, i = idx.search(q, k)
    kk = min(k, n)
    assert s.shape == (len(q), kk) and i.shape == (len(q), kk)
    assert ((i >= -1) & (i < n)).all()
    for row_s, row_i in zip(s, i):
        got = row_i[row_i >= 0]
        assert len(set(got)) == len(got)
        assert np.all(np.diff(row_s[row_i >= 0]) <= 1e-6 * (1 + np.abs(row_s).max()))
    # exhaustive settings: numpy brute force (scores; ties may swap ids)
    ex = {"candidates": n}
    if layout != "flat":
        ex["nprobe"] = idx.shape().n_groups
    if bound is not None:  # a bound of 3 sigma is a statistical stop: exact scores, sorted
        bs, bi = idx.search(q, k, bound=bound, **ex)
        assert (bi >= 0).all()
        want = exact_scores(x, q, bi, metric)
        tol = {"float32": 1e-4, "float16": 2e-3, "int8": 2e-2}[store] * 4
        assert np.allclose(bs, want, atol=tol * (np.abs(want).max() + 1e-30), rtol=tol)
        assert (np.diff(bs, axis=1) <= 1e-6 * (1 + np.abs(bs).max())).all()
        ex["bound"] = hp.plan.MAX_BOUND  # a bound no row can break: exhaustive again
    s, i = idx.search(q, k, **ex)
    assert (i >= 0).all()
    ref = brute(np.asarray(idx.vectors if store != "int8" else x, np.float32), q, kk, metric)
    got = exact_scores(x, q, i, metric)
    tol = {"float32": 1e-4, "float16": 2e-3, "int8": 2e-2}[store]
    scale = np.abs(ref).max() + 1e-30
    assert np.allclose(got, brute(x, q, kk, metric), atol=tol * scale * 4, rtol=tol * 4), kind
