"""The ivf rerank's error bound against its theory and a numpy reference. A row's estimate of
<q, x> is off by <q - c, v>, v = a W (2b - 1) - r; for a direction of q - c uniform on the
sphere (RaBitQ's random rotation) that error's standard deviation is sigma = |q - c| |v| /
sqrt(dim), so it falls below -eps sigma about as often as a Gaussian does (a little less: the
sphere's tails are lighter, and |v| is kept rounded up). search(bound=eps) reranks candidates
in order of estimate + eps sigma and stops at the first that cannot beat the k-th exact score:
a true top-k row is then missed only where its error fell below -eps sigma."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_header
from hashpivot import Index, _core
from hashpivot.errors import CorruptFileError, InvalidInputError, InvalidTypeError
from hashpivot.storage import HEADER

LEVEL_STEP = 2 ** (1 / 8)  # one level: cpp/snapshot.h's kErrorLevelsPerOctave = 8
RADIUS = 0.5  # |q - c| of the theory's queries


def gaussian_tail(eps: float) -> float:
    return 0.5 * math.erfc(eps / math.sqrt(2))


def clustered(n, d, seed=0, centres=20, spread=0.6):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d))
    x = c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(d, bits, n=4000, seed=1):
    """metric='ip': queries are searched as given (the theory's q - c is not renormalised)."""
    x = clustered(n, d)
    index = Index.build(
        x,
        n_bits=bits,
        layout="ivf",
        extra_bits=0,
        store="float32",
        n_lists=16,
        seed=seed,
        metric="ip",
    )
    return x, index


def reference(index, x):
    """Per row, from the model alone (numpy): the list centre, the estimate's pieces and v."""
    itq, rows = index.itq, index._version.rows
    c = index.centres[rows.lists]
    r = x[index.ids] - c
    w = itq.pca @ itq.rotation
    y = (r - itq.mean) @ w
    signs = np.where(y >= 0, 1.0, -1.0)
    a = (y * y).sum(1) / np.abs(y).sum(1)
    beta = (c * r).sum(1) - a * ((c @ w) * signs).sum(1)
    v = a[:, None] * (signs @ w.T) - r
    return {"c": c, "signs": signs, "a": a, "beta": beta, "v": v, "w": w}


def estimate(ref, q):
    """Each row's estimate of <q, x> for one query (exact centre scores)."""
    return ref["c"] @ q + ref["beta"] + ref["a"] * (ref["signs"] @ (q @ ref["w"]))


def theory_queries(index, count, seed):
    """Queries q = c + RADIUS u, u uniform on the sphere, c a random list's centre."""
    rng = np.random.default_rng(seed)
    lists = rng.integers(0, len(index.centres), count)
    u = rng.standard_normal((count, index.dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return (index.centres[lists] + RADIUS * u).astype(np.float32), lists


@given(st.floats(min_value=1e-7, max_value=200.0, allow_nan=False, allow_infinity=False))
@settings(max_examples=300, deadline=None)
def test_an_error_level_rounds_its_norm_up_by_at_most_one_step(v):
    level = _core.error_levels(np.array([v], np.float32))
    norm = float(_core.error_norms(level)[0])
    v32 = float(np.float32(v))
    assert v32 <= norm <= v32 * LEVEL_STEP * (1 + 1e-6)


def test_error_levels_at_the_edges():
    levels = _core.error_levels(np.array([0.0, 1e-30, 1e9, np.inf, np.nan], np.float32))
    norms = _core.error_norms(levels)
    assert levels[0] == levels[1] == 0 and norms[0] > 0  # below the first level: the first
    assert list(levels[2:]) == [_core.ERROR_LEVEL_NONE] * 3  # beyond the last: no bound
    assert np.isinf(norms[2:]).all()


@pytest.mark.parametrize("d,bits", [(64, 64), (128, 64)])
def test_each_rows_level_is_the_norm_of_its_error_vector(d, bits):
    x, index = build(d, bits)
    ref = reference(index, x)
    want = np.linalg.norm(ref["v"], axis=1)
    got = _core.error_norms(index._version.rows.errors)
    assert (got >= want * (1 - 1e-4)).all()
    assert (got <= want * LEVEL_STEP * (1 + 1e-4)).all()


def test_the_estimates_error_is_its_inner_product_with_the_error_vector():
    x, index = build(64, 64)
    ref = reference(index, x)
    q, _ = theory_queries(index, 20, seed=4)
    for qi in q:
        err = estimate(ref, qi) - x[index.ids] @ qi
        want = ((qi - ref["c"]) * ref["v"]).sum(1)
        np.testing.assert_allclose(err, want, atol=2e-5)


@pytest.mark.parametrize("d,bits", [(64, 64), (128, 64), (128, 128)])
def test_the_error_falls_below_minus_eps_sigma_as_often_as_theory_says(d, bits):
    """Over 400 queries of the theory's kind, every row of the query's list: the share with
    error < -eps sigma is at most the Gaussian tail (the sphere's is lighter; levels round up)
    and not far below the tail at eps one level wider (the bound is no looser than that)."""
    x, index = build(d, bits)
    ref = reference(index, x)
    rows = index._version.rows
    sigma_unit = _core.error_norms(rows.errors) / np.sqrt(d)
    q, lists = theory_queries(index, 400, seed=5)
    eps = (1.0, 2.0, 3.0)
    below = dict.fromkeys(eps, 0)
    total = 0
    for qi, g in zip(q, lists):
        rr = np.arange(rows.offsets[g], rows.offsets[g + 1])
        err = estimate(ref, qi)[rr] - x[index.ids[rr]] @ qi
        sigma = np.linalg.norm(qi - index.centres[g]) * sigma_unit[rr]
        for e in eps:
            below[e] += int((err < -e * sigma).sum())
        total += len(rr)
    for e in eps:
        rate = below[e] / total
        assert rate <= gaussian_tail(e) * 1.1 + 2e-4, (e, rate)
        assert rate >= 0.5 * gaussian_tail(e * LEVEL_STEP), (e, rate)


@pytest.fixture(scope="module")
def exact_index():
    """dim = n_bits: no PCA truncation, so the estimate is unbiased for the top rows too."""
    return build(64, 64, n=5000, seed=2)


def test_a_bounded_search_misses_only_rows_whose_error_broke_the_bound(exact_index):
    """Every list probed, every row a candidate: the bounded search returns exact scores, and
    each true top-k row it misses has an upper bound (numpy) at most the k-th score returned
    (the stop rule), which happens about as often as the theory's tail."""
    x, index = exact_index
    ref = reference(index, x)
    rows = index._version.rows
    sigma_unit = _core.error_norms(rows.errors) / np.sqrt(index.dim)
    q, _ = theory_queries(index, 300, seed=6)
    k, eps = 10, 2.0
    before = index.stats()["rows_reranked"]
    S, ids = index.search(q, k, nprobe=len(index.centres), candidates=len(index), bound=eps)
    reranked = index.stats()["rows_reranked"] - before
    xs = x[index.ids]
    missed, want_reranked = 0, 0
    for i, qi in enumerate(q):
        exact = xs @ qi
        np.testing.assert_allclose(S[i], x[ids[i]] @ qi, rtol=1e-5, atol=1e-5)
        sigma = np.linalg.norm(qi - ref["c"], axis=1) * sigma_unit
        upper = estimate(ref, qi) + eps * sigma
        top = np.argsort(-exact)[:k]
        lost = top[~np.isin(index.ids[top], ids[i])]
        assert (upper[lost] <= S[i, -1] + 5e-3).all()  # int8 centre scores: a small margin
        missed += len(lost)
        # the reference's stop: the first in upper-bound order that cannot beat the k-th
        order = np.argsort(-upper)
        best = np.full(k, -np.inf)
        for m, row in enumerate(order):
            if m >= k and upper[row] <= best.min():
                break
            best[np.argmin(best)] = max(best.min(), exact[row])
        want_reranked += m
    assert missed / (k * len(q)) <= gaussian_tail(eps) + 0.01
    assert abs(reranked - want_reranked) <= 0.02 * want_reranked  # the same stop as numpy's
    assert reranked < 0.2 * len(q) * len(index)


def test_an_unreachable_bound_reranks_every_candidate(exact_index):
    x, index = exact_index
    q, _ = theory_queries(index, 50, seed=7)
    plain = index.search(q, 10, nprobe=len(index.centres), candidates=len(index))
    wide = index.search(q, 10, nprobe=len(index.centres), candidates=len(index), bound=1e6)
    np.testing.assert_array_equal(plain[1], wide[1])
    truth = np.argsort(-(x @ q.T).T, axis=1)[:, :10]  # exhaustive settings: brute force
    np.testing.assert_array_equal(plain[1], truth)


def test_a_bounded_search_is_the_same_alone_batched_and_threaded(exact_index):
    _, index = exact_index
    q, _ = theory_queries(index, 40, seed=8)
    kw = dict(nprobe=6, candidates=200, bound=2.0)
    batched = index.search(q, 10, threads=1, **kw)
    threaded = index.search(q, 10, threads=2, **kw)
    alone = [index.search(q[i : i + 1], 10, **kw) for i in range(len(q))]
    np.testing.assert_array_equal(batched[1], threaded[1])
    np.testing.assert_array_equal(batched[1], np.vstack([a[1] for a in alone]))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 2e6])
def test_a_bad_bound_is_a_named_error(exact_index, bad):
    _, index = exact_index
    with pytest.raises(InvalidInputError):
        index.search(np.ones((1, 64), np.float32), bound=bad)


def test_a_bound_needs_a_number_and_an_ivf_index(exact_index):
    _, index = exact_index
    with pytest.raises(InvalidTypeError):
        index.search(np.ones((1, 64), np.float32), bound="2")
    flat = Index.build(clustered(500, 64), n_bits=64, store="float32")
    with pytest.raises(InvalidInputError, match="ivf"):
        flat.search(np.ones((1, 64), np.float32), bound=2.0)


def test_tune_tries_the_bound_and_a_tuned_bound_survives_a_save(exact_index, tmp_path):
    x, index = exact_index
    q, _ = theory_queries(index, 200, seed=9)
    result = index.tune(q[:100], target_recall=0.9)
    assert any("bound" in t for t in result.tried)
    assert result.reached
    for key, value in result.settings.items():
        assert index.tuned[key] == value
    index.tuned = {**index.tuned, "bound": 2.5}
    index.save(tmp_path / "i")
    back = Index.load(tmp_path / "i")
    assert back.tuned["bound"] == 2.5
    h = json.loads((tmp_path / "i" / HEADER).read_text())
    h["tuned"]["bound"] = -3
    write_header(tmp_path / "i", h)
    with pytest.raises(CorruptFileError):
        Index.load(tmp_path / "i")


def test_an_index_saved_before_the_error_levels_loads_unbounded(exact_index, tmp_path):
    x, index = exact_index
    index.save(tmp_path)
    h = json.loads((tmp_path / HEADER).read_text())
    (tmp_path / h["arrays"].pop("errors")["file"]).unlink()
    h["version"] = 6
    write_header(tmp_path, h)
    old = Index.load(tmp_path)
    assert (old._version.rows.errors == _core.ERROR_LEVEL_NONE).all()
    q, _ = theory_queries(index, 20, seed=10)
    kw = dict(nprobe=4, candidates=100)
    np.testing.assert_array_equal(old.search(q, **kw, bound=2.0)[1], index.search(q, **kw)[1])
