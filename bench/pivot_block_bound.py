"""An upper bound on what any block layout can save with the pivot filter (issue 3).

    python bench/pivot_block_bound.py

A per-row band check costs about as much as the SIMD Hamming distance it would spare, so the
filter can save time only by skipping whole blocks of rows unread. This orders the rows as the
leaves of a k-d tree over their 8 pivot distances (a tight box around every block, far tighter
than the index's (d0, d1) cells) and counts the rows of the leaves whose bounding box misses
the query's band box entirely: the share of rows such a layout could leave unread, against
the filter's per-row cut. Same data, thresholds and queries as bench_pivot.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pivot import SHARED, synthetic
from hashpivot import Index, hamming_distances


def kd_leaves(table: np.ndarray, leaf: int) -> list:
    """Row groups of at most `leaf` rows: median splits on the widest pivot, recursively."""
    out = []
    stack = [np.arange(len(table))]
    while stack:
        idx = stack.pop()
        if len(idx) <= leaf:
            out.append(idx)
            continue
        sub = table[idx]
        dim = int(np.argmax(sub.max(0).astype(int) - sub.min(0)))
        h = len(idx) // 2
        part = np.argpartition(sub[:, dim], h)
        stack += [idx[part[:h]], idx[part[h:]]]
    return out


def sim(name: str, index: Index, qc: np.ndarray, t: int, leaves=(16, 64, 256)) -> None:
    table = np.asarray(index.table).astype(np.int32)
    qd = hamming_distances(qc, index.pivots).astype(np.int32)
    picks = range(0, len(qc), max(1, len(qc) // 50))  # 50 queries
    cut = np.mean([1 - (np.abs(table - qd[j]) <= t).all(1).mean() for j in picks])
    for leaf in leaves:
        L = kd_leaves(table, leaf)
        lo = np.array([table[i].min(0) for i in L])
        hi = np.array([table[i].max(0) for i in L])
        size = np.array([len(i) for i in L])
        sk = []
        for j in picks:
            miss = ((hi < qd[j] - t) | (lo > qd[j] + t)).any(1)
            sk.append(size[miss].sum() / len(table))
        print(
            f"{name}: t={t}, per-row cut {cut:.3f}; k-d leaves of {leaf} rows: "
            f"rows in skipped leaves {np.mean(sk):.3f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic rows")
    args = ap.parse_args()
    x = np.load(SHARED / "embeddings.npy")
    qe = np.load(SHARED / "query_embeddings.npy")
    index = Index.build(x, store=None, seed=42, progress=False, n_pivots=8)
    sim("manpages, text queries", index, index.itq.encode(qe), 18)
    xs = synthetic(x, args.n)
    index = Index.build(xs, store=None, seed=42, progress=False, n_pivots=8)
    sim(f"synthetic ITQ {args.n:,}", index, index.itq.encode(synthetic(qe, 1000, seed=1)), 13)


if __name__ == "__main__":
    main()
