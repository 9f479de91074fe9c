"""Quality on real text: the shared man-page corpus (10,000 passages, 1,453 real queries,
multilingual-e5-small) — recall against exact float search, filtered and tuned. Where the
corpus is not beside the project, a committed sample of it (tests/data/manpages-sample: 1,800
passages, 500 queries, float16) stands in, so a fresh clone runs these too."""

from pathlib import Path

import numpy as np
import pytest

import hashpivot as hp
from hashpivot.truth import recall_at
from hashpivot.tune import exact_topk

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "manpages-ja"


SAMPLE = Path(__file__).resolve().parent / "data" / "manpages-sample"


def unit(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def shared():
    root = SHARED if (SHARED / "embeddings.npy").is_file() else SAMPLE
    return unit(np.load(root / "embeddings.npy")), unit(np.load(root / "query_embeddings.npy"))


@pytest.fixture(scope="module")
def flat(shared):
    return hp.Index.build(shared[0], n_bits=128, layout="flat", extra_bits=0)


def filtered_truth(x, q, allowed, k=10):
    sims = q @ x[allowed].T
    return allowed[np.argsort(-sims, axis=1, kind="stable")[:, :k]]


def test_default_search_keeps_the_exact_top10(shared, flat):
    x, q = shared
    _, ids = flat.search(q, 10)
    assert (
        recall_at(ids, exact_topk(flat, q / np.linalg.norm(q, axis=1, keepdims=True), 10), 10)
        >= 0.95
    )


def test_filtered_recall_holds_at_any_selectivity(shared, flat):
    x, q = shared
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    unfiltered = recall_at(flat.search(q, 10)[1], exact_topk(flat, qn, 10), 10)
    rng = np.random.default_rng(0)
    for share, floor in ((0.10, unfiltered - 0.02), (0.001, 1.0)):
        allowed = np.sort(rng.choice(len(x), int(share * len(x)), replace=False))
        _, ids = flat.search(q, 10, allowed=allowed)
        r = recall_at(ids, filtered_truth(xn, qn, allowed), 10)
        assert r >= floor, (share, r, unfiltered)


def test_the_defaults_tuned_without_queries_hold_on_real_queries(shared):
    """Index.build(x) + tune(0.95) with no queries at all (synthetic queries, aiming above the
    target) keeps >= 0.93 of real queries' exact top-10 (issue 36). On the full corpus the
    queries are those that fitted no constant (bench/bench_defaults.py's evaluation set)."""
    x, q = shared
    if len(q) > 1000:  # the full corpus: leave out the 500 + 500 queries the constants saw
        seen = np.random.default_rng(0).choice(len(q), 500, replace=False)
        seen = np.union1d(seen, np.random.default_rng(1).permutation(len(q))[:500])
        q = q[np.setdiff1d(np.arange(len(q)), seen)]
    index = hp.Index.build(x)
    res = index.tune(target_recall=0.95)
    assert res.reached and res.source == "synthetic queries", res
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    got = recall_at(index.search(q, 10)[1], exact_topk(index, qn, 10), 10)
    assert got >= 0.93, (got, res, index)


@pytest.mark.parametrize("layout", ["flat", "ivf"])
def test_tuning_generalises_to_held_out_queries(shared, flat, layout):
    """Tuned on 200 real queries, measured on 300 others: recall >= target - 0.02."""
    x, q = shared
    index = flat if layout == "flat" else hp.Index.build(x, n_bits=128, layout="ivf", extra_bits=0)
    rng = np.random.default_rng(1)
    pick = rng.permutation(len(q))
    tune_q, held = q[pick[:200]], q[pick[200:500]]
    truth = exact_topk(index, held / np.linalg.norm(held, axis=1, keepdims=True), 10)
    for target in (0.90, 0.95, 0.99):
        res = index.tune(tune_q, target_recall=target, store=False)
        assert res.reached, res
        _, ids = index.search(held, 10, **res.settings)
        assert recall_at(ids, truth, 10) >= target - 0.02, (target, res)


@pytest.mark.parametrize("layout", ["flat", "ivf"])
def test_tune_keeps_no_more_candidates_than_the_target_needs(layout):
    """The kept setting is minimal on the fine ladder: one fine step fewer candidates, at the
    same nprobe, misses the target on the tuning queries (recall only grows with candidates)."""
    from hashpivot.tune import FINE_STEP

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((100, 64))
    x = (centres[rng.integers(0, 100, 6000)] + 0.7 * rng.standard_normal((6000, 64))).astype(
        np.float32
    )
    index = hp.Index.build(x, n_bits=64, layout=layout, n_iter=10)
    q = x[:150] + 0.3 * rng.standard_normal((150, 64)).astype(np.float32)
    truth = exact_topk(index, q / np.linalg.norm(q, axis=1, keepdims=True), 10)
    for target in (0.9, 0.95, 0.99):
        res = index.tune(q, target_recall=target, store=False)
        assert res.reached, res
        fewer = {**res.settings, "candidates": int(res.settings["candidates"] / FINE_STEP)}
        _, ids = index.search(q, 10, **res.settings)
        assert recall_at(ids, truth, 10) >= target
        if fewer["candidates"] >= 10:
            _, ids = index.search(q, 10, **fewer)
            assert recall_at(ids, truth, 10) < target, (res, fewer)
