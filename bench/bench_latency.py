"""Single-query latency and batched QPS of the default search against faiss HNSW, one process,
timed in turn (issue 12's target; with --scale, issue 19's).

    python bench/bench_latency.py [--data DIR] [--rounds 3]
    python bench/bench_latency.py --scale 100000 [--nprobe 151 --candidates 100 --ef 64]

Data: the shared man-page corpus (10,000 passages, 1,453 real query embeddings,
multilingual-e5-small). hashpivot: flat, 128 bits, default search with candidates=100, one
thread; faiss IndexHNSWFlat M=32, efConstruction=64, efSearch=64, inner product. Latency:
median over every query searched alone; each round times both engines in turn.

--scale N: bench_scale.py's realistic corpus of N rows and its 300 evaluation queries, with the
indexes it caches (built here when absent): hashpivot ivf 256 bits at --nprobe/--candidates
(the 100k setting that reaches recall 0.95) against HNSW at --ef; recall@10 of both printed.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
from common import SHARED, interleaved_rates, markdown_table

DATA = SHARED
LATENCY_QUERIES = 100  # searched one at a time in each round, per engine


def latency_us(search, q: np.ndarray) -> float:
    ts = []
    for i in range(len(q)):
        t0 = time.perf_counter()
        search(q[i : i + 1])
        ts.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(ts)


def scale(a) -> None:
    """Latency at scale: ivf 256 bits against HNSW on bench_scale's realistic corpus."""
    import faiss

    import scale_corpus
    from hashpivot.truth import recall_at

    n, cache = a.scale, scale_corpus.CACHE
    x, q, truth = scale_corpus.load(n, cache, "realistic")
    q, truth = q[scale_corpus.TUNE_QUERIES :], truth[scale_corpus.TUNE_QUERIES :]
    path = cache / f"hp-ivf256-realistic-{n}"  # bench_scale.py's names
    if not path.is_dir():
        hp.Index.build(x, n_bits=256, layout="ivf", extra_bits=0, store="float32").save(path)
    index = hp.Index.load(path)
    hnsw_file = cache / f"hnsw32-realistic-{n}.faiss"
    if hnsw_file.is_file():
        hnsw = faiss.read_index(str(hnsw_file))
    else:  # not written to the cache: bench_scale.py also records its build time there
        hnsw = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 64
        hnsw.add(np.ascontiguousarray(x))
    hnsw.hnsw.efSearch = a.ef
    faiss.omp_set_num_threads(1)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    hp_name = f"hashpivot ivf 256 bits (nprobe={a.nprobe}, candidates={a.candidates})"
    hn_name = f"faiss HNSW M=32 (ef={a.ef})"
    engines = {
        hp_name: (
            lambda v: index.search(v, 10, nprobe=a.nprobe, candidates=a.candidates, threads=1),
            q,
        ),
        hn_name: (lambda v: hnsw.search(v, 10), qn),
    }
    queries = q[: min(len(q), LATENCY_QUERIES)]
    lat: Dict[str, List[float]] = {name: [] for name in engines}
    for _ in range(a.rounds):
        for name, (fn, qs) in engines.items():
            lat[name].append(latency_us(lambda v, fn=fn: fn(v)[1], qs[: len(queries)]))
    rows = []
    for name, (fn, qs) in engines.items():
        ids = np.vstack([fn(qs[i : i + 1])[1] for i in range(len(qs))])
        rows.append(
            [
                name,
                f"{recall_at(ids, truth[:, :10], 10):.3f}",
                " / ".join(f"{v:.1f}" for v in lat[name]),
                f"{statistics.median(lat[name]):.1f}",
            ]
        )
    isa = hp.cpu_features()["isa"]
    print(f"# Latency at scale ({isa} kernels, {n:,} realistic rows, {len(queries)} queries)\n")
    head = ["engine", "recall@10", "median latency µs per round", "median of rounds"]
    print(markdown_table(head, rows))
    ratio = statistics.median(lat[hp_name]) / statistics.median(lat[hn_name])
    print(f"\nhashpivot / HNSW latency: {ratio:.2f}x (target <= 1.00)")


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=int, default=None, help="rows of the realistic corpus")
    ap.add_argument("--nprobe", type=int, default=151)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--ef", type=int, default=64)
    a = ap.parse_args()
    if a.scale:
        scale(a)
        return
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
