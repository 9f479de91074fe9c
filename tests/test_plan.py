"""The search plan is a pure function of the options and the index's shape: its rules, tested
without data."""

import pytest

from hashpivot.errors import HashpivotError, InvalidInputError
from hashpivot.layouts import layout_class
from hashpivot.plan import (
    AUTO_FULL_SCAN,
    DEFAULT_CANDIDATES,
    DIRECT_SELECTIVITY,
    SHORTLIST_FACTOR,
    IndexShape,
    default_nprobe,
    make_plan,
    quantized_pool,
)

FLAT = IndexShape(layout_class("flat").capabilities, 10_000, 128, True, True, 0, 8)
BIG = IndexShape(layout_class("flat").capabilities, 2 * AUTO_FULL_SCAN, 128, True, True, 0, 8)
PART = IndexShape(layout_class("partitioned").capabilities, 10_000, 128, True, True, 64, 8)
IVF = IndexShape(layout_class("ivf").capabilities, 10_000, 128, True, True, 400, 0)
CODES = IndexShape(layout_class("flat").capabilities, 10_000, 128, False, False, 0, 8)


def test_defaults_flat():
    p = make_plan(FLAT)
    assert (p.k, p.scoring, p.source, p.candidates) == (10, "asymmetric", "all", DEFAULT_CANDIDATES)
    assert p.pool == quantized_pool(DEFAULT_CANDIDATES) and not p.hamming_first and p.rerank


def test_candidates_win_over_oversample_and_tuned():
    tuned = {"candidates": 77}
    assert make_plan(FLAT, tuned=tuned).candidates == 77
    assert make_plan(FLAT, k=10, oversample=4, tuned=tuned).candidates == 40
    assert make_plan(FLAT, k=10, candidates=50, oversample=4, tuned=tuned).candidates == 50


def test_caps_at_the_rows():
    small = IndexShape(layout_class("flat").capabilities, 100, 128, True, True, 0, 8)
    p = make_plan(small, k=10**9, candidates=10**9)
    assert p.k == 100 and p.candidates == 100 and p.pool == 100
    with pytest.raises(InvalidInputError):
        make_plan(small, k=2**40)


def test_large_flat_index_uses_a_hamming_shortlist():
    p = make_plan(BIG, candidates=100)
    assert p.hamming_first and p.pool == SHORTLIST_FACTOR * 100


def test_ivf_probes_a_share_of_lists_or_the_tuned_setting():
    assert make_plan(IVF).nprobe == default_nprobe(400) and make_plan(IVF).source == "lists"
    assert make_plan(IVF, tuned={"nprobe": 7}).nprobe == 7
    assert make_plan(IVF, nprobe=3, tuned={"nprobe": 7}).nprobe == 3
    with pytest.raises(InvalidInputError, match="asymmetric"):
        make_plan(IVF, scoring="hamming")
    with pytest.raises(InvalidInputError, match="shortlist"):
        make_plan(IVF, shortlist=50)


def test_partitioned_exact_mode_and_nprobe():
    assert make_plan(PART, scoring="hamming").nprobe == 0  # exact pruning
    p = make_plan(PART, nprobe=4)
    assert p.source == "partitions" and p.nprobe == 4 and not p.hamming_first


def test_option_errors():
    for bad in (
        {"scoring": "cosine"},
        {"rerank": 1},
        {"nprobe": 2},
        {"threshold": 129},
        {"shortlist": "many"},
        {"candidates": 0},
        {"oversample": 0.5},
    ):
        with pytest.raises(HashpivotError):
            make_plan(FLAT, **bad)
    with pytest.raises(InvalidInputError, match="shortlist"):
        make_plan(FLAT, threshold=20, shortlist=None)  # the band ranks by Hamming first
    with pytest.raises(InvalidInputError, match="search_codes"):
        make_plan(CODES)


def test_codes_only_index_returns_distances():
    p = make_plan(CODES, scoring="hamming")
    assert p.output == "distances" and not p.rerank and p.candidates == 10


def test_filters_choose_the_source_by_selectivity():
    assert make_plan(FLAT, allowed=5_000).source == "all"
    wide = IndexShape(layout_class("flat").capabilities, 100_000, 128, True, True, 0, 8)
    few = make_plan(wide, allowed=int(DIRECT_SELECTIVITY * wide.n_rows))
    assert few.source == "allowed" and not few.exact_allowed
    tiny = make_plan(FLAT, allowed=50)  # fewer than the candidates: reranked directly
    assert tiny.source == "allowed" and tiny.exact_allowed and tiny.pool == 0
    lists = make_plan(IVF, allowed=5_000)
    assert lists.source == "lists" and lists.probe_rows == 10_000 * lists.nprobe // 400


def test_a_remembered_plan_is_the_plan_and_never_stands_in_for_a_refused_value():
    """Index versions remember plans by their arguments (hashpivot.version): the same options
    give make_plan's plan, a changed tuned setting a new one, and a value make_plan refuses is
    refused even right after an equal value of another type was planned."""
    import numpy as np

    import hashpivot as hp

    x = np.random.default_rng(0).standard_normal((500, 64)).astype(np.float32)
    index = hp.Index.build(x, n_bits=64, n_iter=2)
    for _ in range(2):
        assert index.plan(10, candidates=7) == make_plan(index.shape(), 10, candidates=7)
        index.search(x[:2], 10, candidates=1)
        for bad in (True, 1.0, "1"):
            with pytest.raises(HashpivotError):
                index.search(x[:2], 10, candidates=bad)
    assert index.plan(10).candidates == DEFAULT_CANDIDATES
    index.tuned = {"candidates": 50}
    assert index.plan(10).candidates == 50
    with pytest.raises(HashpivotError):
        index.search(x[:2], 10, candidates=[1])  # unhashable: planned afresh, and refused
