"""The ivf first stage against a numpy reference: a row scores
<q, c> + beta_x + a_x <W^T q, 2b - 1> with a_x = ||y||^2 / sum |y| and
beta_x = <c, r> - a_x <W^T c, 2b - 1> (issue 19's estimator study); the bias makes the estimate
of <q, x> closer to the truth than the code alone; an index saved before the biases loads."""

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import write_header
from hashpivot import Index
from hashpivot.storage import HEADER


def clustered(n, d=64, centres=20, spread=0.35, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d))
    x = c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def built():
    both = clustered(3012)  # queries from the same clusters as the rows, as real queries are
    x, q = both[:3000], both[3000:]
    index = Index.build(
        x, n_bits=64, layout="ivf", extra_bits=0, n_lists=24, store="float32", seed=3
    )
    return x, q, index


def int8_levels(v):
    """Each row as a search rounds it for the centre scores (cpp/centres.h): to 127 levels of
    its largest entry."""
    step = np.abs(v).max(1, keepdims=True) / 127
    return (np.rint(v / step) * step).astype(np.float32)


def reference_scores(index, x, q):
    """Every row's first-stage score, from the model alone (numpy, no hashpivot code)."""
    itq, rows = index.itq, index._version.rows
    c = index.centres[rows.lists]
    r = x[index.ids] - c
    y = (r - itq.mean) @ itq.pca @ itq.rotation
    signs = np.where(y >= 0, 1.0, -1.0)
    a = (y * y).sum(1) / np.abs(y).sum(1)
    w = itq.pca @ itq.rotation
    beta = (c * r).sum(1) - a * ((c @ w) * signs).sum(1)
    return int8_levels(q) @ int8_levels(c).T + beta + a * ((q @ w) @ signs.T)


def test_first_stage_scores_equal_the_numpy_reference(built):
    x, q, index = built
    want = reference_scores(index, x, q)
    S, ids = index.search(q, k=10, rerank=False, nprobe=24, candidates=len(index))
    rows = np.argsort(-want, axis=1, kind="stable")[:, :10]
    np.testing.assert_allclose(S, np.take_along_axis(want, rows, 1), rtol=1e-4, atol=1e-4)
    assert np.mean(ids == index.ids[rows]) > 0.97  # near-ties may swap in float32


def test_the_bias_brings_the_estimate_closer_to_the_truth(built):
    """Over the rows of the list nearest each query (there |q - c| < |q|: the bias helps where
    a search looks; far lists, where |q - c| > |q|, lose a little)."""
    x, q, index = built
    k, probe = len(index), 1
    S, ids = index.search(q, k=k, rerank=False, nprobe=probe, candidates=k)
    rows = index._version.rows
    index._set_rows(replace(rows, biases=np.zeros(rows.n, np.float32)))  # the code alone
    try:
        S0, ids0 = index.search(q, k=k, rerank=False, nprobe=probe, candidates=k)
    finally:
        index._set_rows(rows)

    # the rows of each query's first list (a probe of one list now goes on to k rows): the
    # list of the row the estimate ranks first
    lists = np.asarray(rows.lists)[np.argsort(np.asarray(rows.ids))]
    first = lists[ids[:, 0]]

    def rms_error(scores, found):
        ok = (found >= 0) & (lists[np.maximum(found, 0)] == first[:, None])
        truth = np.take_along_axis(q @ x.T, np.maximum(found, 0), 1)
        return float(np.sqrt(np.mean((scores - truth)[ok] ** 2)))

    with_bias, code_alone = rms_error(S, ids), rms_error(S0, ids0)
    assert with_bias < 0.85 * code_alone, (with_bias, code_alone)  # measured: 0.75


def test_an_index_saved_before_the_biases_loads_and_searches(built, tmp_path):
    x, q, index = built
    index.save(tmp_path)
    h = json.loads((tmp_path / HEADER).read_text())
    for name in ("biases", "list_radii", "errors"):  # arrays of later versions
        (tmp_path / h["arrays"].pop(name)["file"]).unlink()
    h["version"] = 4
    write_header(tmp_path, h)
    old = Index.load(tmp_path)
    assert not old._version.rows.biases.any()
    _, ids = old.search(q, k=5, nprobe=24, candidates=len(old))  # exhaustive: still exact
    exact = index.ids[np.argsort(-(q @ x[index.ids].T), axis=1)[:, :5]]
    np.testing.assert_array_equal(ids, exact)
    old.add(clustered(10, seed=5))  # new rows get their biases, old ones keep zeros
    assert len(old._version.rows.biases) == len(old)


def test_an_ivf_search_reads_its_own_blocks_not_the_row_major_codes(built):
    """The snapshot scans (and re-scores, and filters) its blocked copy of the codes: with the
    row-major codes overwritten after it was made, every search gives the same scores and ids
    (what lets an mmap-loaded index leave them on disk, and stats() count the copy instead)."""
    x, q, index = built
    allowed = index.ids[::7]
    searches = [
        dict(rerank=False, nprobe=5, candidates=40),
        dict(nprobe=3, candidates=30),
        dict(nprobe=24, candidates=len(index), rerank=False),
        dict(nprobe=4, candidates=20, allowed=allowed),
        dict(nprobe=4, candidates=20, allowed=allowed[:30]),
    ]
    before = [index.search(q, k=10, **kw) for kw in searches]
    codes, ids = index._version.rows.codes, index._version.rows.ids
    saved, saved_ids = codes.copy(), ids.copy()
    try:
        codes[:] = 0
        after = [index.search(q, k=10, **kw) for kw in searches]
        ids[:] = 0  # and its int32 copy of the ids (a filter still maps ids to rows in Python)
        after += [index.search(q, k=10, **kw) for kw in searches[:3]]
        before += before[:3]
    finally:
        codes[:] = saved
        ids[:] = saved_ids
    for (s0, i0), (s1, i1) in zip(before, after):
        np.testing.assert_array_equal(i0, i1)
        np.testing.assert_array_equal(s0, s1)
    copies = index._version.snapshot.copies
    assert copies["codes"] == -(-len(index) // 16) * 16 * codes.shape[1]
    assert copies["ids"] == 4 * len(index)


def test_ids_beyond_int32_are_returned_whole(built):
    x, q, _ = built
    big = np.arange(len(x), dtype=np.int64) * 3 + (1 << 40)
    index = Index.build(
        x, n_bits=64, layout="ivf", extra_bits=0, n_lists=24, store="float32", seed=3, ids=big
    )
    assert "ids" not in index._version.snapshot.copies  # no int32 copy: they do not fit
    _, ids = index.search(q, k=5, nprobe=24, candidates=len(index))
    exact = big[np.argsort(-(q @ x.T), axis=1)[:, :5]]
    np.testing.assert_array_equal(ids, exact)


def test_each_lists_radius_is_its_rms_residual_norm(built):
    x, _, index = built
    rows = index._version.rows
    r = x[index.ids] - index.centres[rows.lists]
    sq = np.bincount(rows.lists, (r * r).sum(1), minlength=len(index.centres))
    want = np.sqrt(sq / np.maximum(np.bincount(rows.lists, minlength=len(index.centres)), 1))
    np.testing.assert_allclose(index._layout._radii, want, rtol=1e-5, atol=1e-6)


def probed_lists(index, q, nprobe, spread):
    """Each query's nprobe lists by <q, c> + spread |q| r (numpy, the query and the centres
    rounded as a search rounds them), and whether the cut is clear of float rounding."""
    radius = spread * np.linalg.norm(q, axis=1)[:, None] * index._layout._radii
    key = int8_levels(q) @ int8_levels(index.centres).T + radius
    order = np.argsort(-key, axis=1)
    cut = np.take_along_axis(key, order[:, nprobe - 1 : nprobe + 1], 1)
    return order[:, :nprobe], cut[:, 0] - cut[:, 1] > 1e-3


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_lists_are_probed_by_centre_score_plus_spread_times_radius(built, metric):
    """Every row of the probed lists reranked: the exact top-k of the lists numpy picks by
    <q, c> + PROBE_SPREAD |q| r (k larger than a list, so that every probed list counts), which
    differ from the lists <q, c> alone picks."""
    from hashpivot.plan import PROBE_SPREAD

    x, _, index = built
    q = clustered(100, seed=7)
    if metric == "ip":  # queries as given: |q| scales the spread as it scales <q, c>
        index = Index.build(
            x, n_bits=64, layout="ivf", extra_bits=0, n_lists=24, metric="ip", seed=3
        )
        q = q * np.float32(0.2)
    nprobe, k = 4, 200
    lists, clear = probed_lists(index, q, nprobe, PROBE_SPREAD)
    plain, _ = probed_lists(index, q, nprobe, 0.0)
    assert sum(set(a) != set(b) for a, b in zip(lists, plain)) >= 10  # the spread matters
    _, ids = index.search(q, k=k, nprobe=nprobe, candidates=len(index))
    row_lists = index._version.rows.lists
    for i in np.flatnonzero(clear):
        rows = np.flatnonzero(np.isin(row_lists, lists[i]))
        exact = rows[np.argsort(-(x[index.ids[rows]] @ q[i]))[:k]]
        assert set(ids[i][ids[i] >= 0]) == set(index.ids[exact])
    assert clear.sum() >= len(q) // 2


def test_an_index_saved_before_the_radii_loads_and_probes_by_centre_score(built, tmp_path):
    x, q, index = built
    index.save(tmp_path)
    h = json.loads((tmp_path / HEADER).read_text())
    for name in ("list_radii", "errors"):  # arrays of later versions
        (tmp_path / h["arrays"].pop(name)["file"]).unlink()
    h["version"] = 5
    write_header(tmp_path, h)
    old = Index.load(tmp_path)
    assert not old._layout._radii.any()
    lists, clear = probed_lists(old, q, 4, 0.0)
    _, ids = old.search(q, k=10, nprobe=4, candidates=len(old))
    row_lists = old._version.rows.lists
    for i in np.flatnonzero(clear):
        rows = np.flatnonzero(np.isin(row_lists, lists[i]))
        exact = rows[np.argsort(-(x[old.ids[rows]] @ q[i]))[:10]]
        np.testing.assert_array_equal(ids[i], old.ids[exact])
    old.save(tmp_path / "again")  # saved again at this version, zero radii and all
    assert not Index.load(tmp_path / "again")._layout._radii.any()
