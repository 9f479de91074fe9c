"""add() appends without copying the stored vectors (issue 21, part 5): the store gains a
segment, rows reach their vector through a slot, a memory-mapped store stays mapped; searches
stay exact against numpy brute force through any sequence of add/remove/save/load."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashpivot import Index, _core
from hashpivot.vectors import Store

LAYOUTS = [("flat", {}), ("flat", {"n_pivots": 8}), ("ivf", {}), ("partitioned", {})]


def unit(n, d=64, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exhaustive(index, q, k):
    """Every row reranked: exact search over the stored vectors."""
    extra = {} if index.layout == "flat" else {"nprobe": 1 << 16}
    return index.search(q, k=k, candidates=max(len(index), 1), **extra)


def brute(x_by_id, q, k):
    ids = np.array(sorted(x_by_id))
    x = np.stack([x_by_id[i] for i in ids])
    return ids[np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]]


@pytest.mark.parametrize("layout,extra", LAYOUTS)
def test_add_keeps_the_stored_segments_it_had(layout, extra):
    x = unit(1500)
    index = Index.build(x[:1000], n_bits=64, layout=layout, store="float32", seed=1, **extra)
    before = index._version.rows.store.segments[0]
    index.add(x[1000:1200])
    after = index._version.rows.store.segments
    assert after[0] is before  # not copied: the same array object
    assert len(after) == 2 and len(after[1]) == 200
    q = unit(20, seed=5)
    _, ids = exhaustive(index, q, 10)
    np.testing.assert_array_equal(ids, brute(dict(enumerate(x[:1200])), q, 10))


def test_a_memory_mapped_store_stays_mapped_after_add(tmp_path):
    x = unit(2000)
    Index.build(x[:1500], n_bits=64, layout="ivf", extra_bits=0, store="float32", seed=1).save(
        tmp_path / "i"
    )
    index = Index.load(tmp_path / "i", mmap=True)
    mapped = index._version.rows.store.segments[0]
    assert isinstance(mapped, np.memmap)
    for s in range(1500, 2000, 100):  # many adds: the mapped segment is never merged away
        index.add(x[s : s + 100])
    segs = index._version.rows.store.segments
    assert segs[0] is mapped and sum(map(len, segs)) == 2000
    q = unit(15, seed=7)
    _, ids = exhaustive(index, q, 10)
    np.testing.assert_array_equal(ids, brute(dict(enumerate(x)), q, 10))
    # saved again: one array in row order, the same answers
    index.save(tmp_path / "j")
    again = Index.load(tmp_path / "j")
    assert again._version.rows.slots is None and len(again._version.rows.store.segments) == 1
    np.testing.assert_array_equal(exhaustive(again, q, 10)[1], ids)


def test_segments_merge_geometrically():
    store = Store.of(np.zeros((0, 4), np.float32), None)
    for _ in range(1000):
        store = store.append(Store.of(np.ones((3, 4), np.float32), None))
    sizes = [len(s) for s in store.segments]
    assert sum(sizes) == 3000
    assert len(sizes) <= int(np.log2(1000)) + 1 and sizes == sorted(sizes, reverse=True)


def test_segments_never_exceed_what_the_core_accepts():
    segs = [np.zeros((1, 2), np.float32) for _ in range(_core.MAX_SEGMENTS)]
    store = Store(segs).append(Store.of(np.zeros((1, 2), np.float32), None))
    assert len(store.segments) <= _core.MAX_SEGMENTS


@pytest.mark.parametrize("store", ["float16", "int8"])
def test_row_vectors_read_through_the_slots(store):
    x = unit(900)
    index = Index.build(x[:600], n_bits=64, layout="ivf", extra_bits=0, store=store, seed=2)
    index.add(x[600:])
    index.remove(np.arange(0, 900, 7))
    rows = index._version.rows
    assert rows.slots is not None and len(rows.store.segments) == 2
    vec = np.asarray(index.vectors, dtype=np.float32)
    if store == "int8":
        vec = vec * np.asarray(index.scales)[:, None]
    np.testing.assert_allclose(vec, x[index.ids], atol=2e-2)
    pick = np.array([3, 0, 17])
    np.testing.assert_array_equal(index.vectors[pick], np.asarray(index.vectors)[pick])
    np.testing.assert_array_equal(index.vectors[5:9], np.asarray(index.vectors)[5:9])


def test_removing_most_rows_frees_their_vectors():
    x = unit(1000)
    index = Index.build(x, n_bits=64, layout="ivf", extra_bits=0, store="float32", seed=3)
    index.add(unit(200, seed=4))
    index.remove(np.arange(0, 900))
    rows = index._version.rows
    assert rows.store.n == len(index) == 300 and rows.slots is None


def test_the_core_refuses_slots_outside_the_store():
    codes = np.zeros((3, 8), np.uint8)
    vec = np.zeros((2, 4), np.float32)
    with pytest.raises(Exception, match="slots must lie in the store"):
        _core.Snapshot(codes, vectors=[vec], slots=np.array([0, 1, 2], np.int64))
    with pytest.raises(Exception, match="one vector a row"):
        _core.Snapshot(codes, vectors=[vec])
    with pytest.raises(Exception, match="same dtype"):
        _core.Snapshot(codes, vectors=[vec, vec.astype(np.float16)], slots=np.zeros(3, np.int64))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(range(len(LAYOUTS))),
    steps=st.lists(
        st.tuples(st.sampled_from(["add", "remove", "reload"]), st.integers(1, 120)),
        min_size=1,
        max_size=8,
    ),
)
def test_any_sequence_of_changes_stays_exact(tmp_path_factory, layout, steps):
    name, extra = LAYOUTS[layout]
    pool = unit(2000, seed=11)
    index = Index.build(pool[:300], n_bits=64, layout=name, store="float32", seed=1, **extra)
    live = dict(enumerate(pool[:300]))
    nxt = 300
    for op, m in steps:
        if op == "add":
            ids = index.add(pool[nxt : nxt + m])
            live.update(zip(ids.tolist(), pool[nxt : nxt + m]))
            nxt += m
        elif op == "remove" and len(live) > m:
            gone = sorted(live)[::3][:m]
            index.remove(gone)
            for i in gone:
                del live[i]
        elif op == "reload":
            d = tmp_path_factory.mktemp("i")
            index.save(d)
            index = Index.load(d, mmap=True)
    q = unit(8, seed=99)
    _, ids = exhaustive(index, q, 10)
    np.testing.assert_array_equal(ids, brute(live, q, 10))
