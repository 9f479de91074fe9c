"""Many threads searching one index while another adds and removes: every result equals a
serial search of the index as it was before or after a change; nothing crashes."""

import threading
import time

import numpy as np

from hashpivot import Index
from test_index import data


def test_parallel_searches_equal_serial_ones():
    x = data(6000, seed=21)
    index = Index.build(x, n_bits=64, n_pivots=8)
    q = data(64, seed=22)
    want = [index.search(q[i : i + 1], k=10, threshold=(8 if i % 2 else None)) for i in range(64)]
    errors, done = [], [0]

    def worker(tid):
        rng = np.random.default_rng(tid)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            i = int(rng.integers(64))
            s, ids = index.search(q[i : i + 1], k=10, threshold=(8 if i % 2 else None))
            if not (np.array_equal(ids, want[i][1]) and np.array_equal(s, want[i][0])):
                errors.append(i)
            done[0] += 1

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and done[0] > 100


def test_add_remove_while_searching_is_safe():
    x = data(5000, seed=23)
    extra = data(300, seed=24)
    index = Index.build(x, n_bits=64)
    extra_ids = np.arange(100000, 100300)
    q = data(16, seed=25)
    before = index.search(q, k=10)
    index.add(extra, ids=extra_ids)
    after = index.search(q, k=10)
    index.remove(extra_ids)
    stop = threading.Event()
    failures, searches = [], [0]

    def writer():
        while not stop.is_set():
            index.add(extra, ids=extra_ids)
            index.remove(extra_ids)

    def reader(tid):
        while not stop.is_set():
            s, ids = index.search(q, k=10)
            for j in range(len(q)):  # each query sees one consistent version
                ok = any(
                    np.array_equal(ids[j], w[1][j]) and np.allclose(s[j], w[0][j])
                    for w in (before, after)
                )
                if not ok:
                    failures.append(j)
            searches[0] += 1

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(t,)) for t in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(2.5)
    stop.set()
    for t in threads:
        t.join()
    assert not failures and searches[0] > 10
    assert len(index) in (5000, 5300)
