"""What add() costs on a memory-mapped index, and what a segmented store costs a search.

    python bench/bench_add.py

A 200k x 384 ivf index (128 bits, float32 store, Gaussian rows) is saved and loaded
memory-mapped twice; one copy takes five add() calls of 200 rows. Printed: the median add()
time, whether the first store segment is still an np.memmap, what copying the whole store
(what add() did before the segmented store) takes, and the search speed of the two copies
(300 queries, nprobe 64, 800 candidates, one thread, 7 rounds timed in turn: a ratio of
medians).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import hashpivot as hp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import rounds

DIM, ADDS, ADD_ROWS, ROUNDS = 384, 5, 200, 7


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="rows of the saved index")
    N = ap.parse_args().n
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N + ADDS * ADD_ROWS, DIM)).astype(np.float32)
    path = tempfile.mkdtemp()
    hp.Index.build(
        x[:N], n_bits=128, layout="ivf", extra_bits=0, store="float32", max_train=20000
    ).save(path)
    plain, added = hp.Index.load(path, mmap=True), hp.Index.load(path, mmap=True)
    ts = []
    for i in range(ADDS):
        t0 = time.perf_counter()
        added.add(x[N + i * ADD_ROWS : N + (i + 1) * ADD_ROWS])
        ts.append(time.perf_counter() - t0)
    segments = added._version.rows.store.segments
    print(
        f"add({ADD_ROWS} rows) to a {N:,}-row mmapped ivf index: median "
        f"{1e3 * statistics.median(ts):.1f} ms; segments {[len(s) for s in segments]}; the "
        f"first still mapped: {isinstance(segments[0], np.memmap)}"
    )
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        np.concatenate([np.asarray(plain.vectors), x[N : N + ADD_ROWS]])
        ts.append(time.perf_counter() - t0)
    print(f"copying the store, as add() did before: median {1e3 * statistics.median(ts):.1f} ms")
    q = rng.standard_normal((300, DIM)).astype(np.float32)
    times = {"plain": [], "added": []}
    for _ in range(rounds(ROUNDS)):
        for name, index in (("plain", plain), ("added", added)):
            t0 = time.perf_counter()
            index.search(q, k=10, candidates=800, nprobe=64, threads=1)
            times[name].append(time.perf_counter() - t0)
    a, b = statistics.median(times["plain"]), statistics.median(times["added"])
    print(
        f"search QPS: one segment, no slots {len(q) / a:,.0f}; after the adds (slots, "
        f"{len(segments)} segments) {len(q) / b:,.0f}: {a / b:.2f}x"
    )


if __name__ == "__main__":
    main()
