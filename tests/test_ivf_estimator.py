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
    index = Index.build(x, n_bits=64, layout="ivf", n_lists=24, store="float32", seed=3)
    return x, q, index


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
    return q @ c.T + beta + a * ((q @ w) @ signs.T)


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

    def rms_error(scores, found):
        ok = found >= 0
        truth = np.take_along_axis(q @ x.T, np.maximum(found, 0), 1)
        return float(np.sqrt(np.mean((scores - truth)[ok] ** 2)))

    with_bias, code_alone = rms_error(S, ids), rms_error(S0, ids0)
    assert with_bias < 0.85 * code_alone, (with_bias, code_alone)  # measured: 0.75


def test_an_index_saved_before_the_biases_loads_and_searches(built, tmp_path):
    x, q, index = built
    index.save(tmp_path)
    h = json.loads((tmp_path / HEADER).read_text())
    (tmp_path / h["arrays"].pop("biases")["file"]).unlink()
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
    codes = index._version.rows.codes
    saved = codes.copy()
    try:
        codes[:] = 0
        after = [index.search(q, k=10, **kw) for kw in searches]
    finally:
        codes[:] = saved
    for (s0, i0), (s1, i1) in zip(before, after):
        np.testing.assert_array_equal(i0, i1)
        np.testing.assert_array_equal(s0, s1)
    copies = index._version.snapshot.copies
    assert copies["codes"] == -(-len(index) // 16) * 16 * codes.shape[1]
