"""Single-query latency and batched QPS of the default search against faiss HNSW, one process,
timed in turn (issue 12's target).

    python bench/bench_latency.py [--data DIR] [--rounds 3]

Data: the shared man-page corpus (10,000 passages, 1,453 real query embeddings,
multilingual-e5-small). hashpivot: flat, 128 bits, default search with candidates=100, one
thread; faiss IndexHNSWFlat M=32, efConstruction=64, efSearch=64, inner product. Latency:
median over every query searched alone; each round times both engines in turn.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
from common import SHARED, interleaved_rates, markdown_table

DATA = SHARED


def latency_us(search, q: np.ndarray) -> float:
    ts = []
    for i in range(len(q)):
        t0 = time.perf_counter()
        search(q[i : i + 1])
        ts.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(ts)


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    x = np.load(Path(a.data) / "embeddings.npy")
    q = np.load(Path(a.data) / "query_embeddings.npy")
    index = hp.Index.build(x, n_bits=128, seed=42)
    hnsw = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 64
    hnsw.add(x)
    hnsw.hnsw.efSearch = 64
    faiss.omp_set_num_threads(1)
    engines = {
        "hashpivot (candidates=100)": lambda v: index.search(v, 10, candidates=100, threads=1),
        "faiss HNSW (ef=64)": lambda v: hnsw.search(v, 10),
    }
    lat = {name: [] for name in engines}
    for _ in range(a.rounds):
        for name, fn in engines.items():
            lat[name].append(latency_us(fn, q))
    batched = {
        "hashpivot default (candidates=300), 1 thread": lambda: index.search(q, 10, threads=1),
        "hashpivot default, 2 threads": lambda: index.search(q, 10, threads=2),
        "hashpivot candidates=100, 1 thread": lambda: index.search(
            q, 10, candidates=100, threads=1
        ),
        "faiss HNSW ef=64, 1 thread": lambda: hnsw.search(q, 10),
    }
    rates = interleaved_rates(batched, len(q))
    hp_lat = statistics.median(lat["hashpivot (candidates=100)"])
    hn_lat = statistics.median(lat["faiss HNSW (ef=64)"])
    print(f"# Latency ({hp.cpu_features()['isa']} kernels, {len(x):,} rows, {len(q):,} queries)\n")
    print(
        markdown_table(
            ["engine", "median latency µs (median of rounds)"],
            [[n, f"{statistics.median(v):.1f}"] for n, v in lat.items()],
        )
    )
    print(f"\nhashpivot / HNSW latency: {hp_lat / hn_lat:.2f}x (target <= 1.00)\n")
    print(markdown_table(["batched search", "QPS"], [[n, f"{r:,.0f}"] for n, r in rates.items()]))


if __name__ == "__main__":
    main()
