"""Partitioned layout against faiss.IndexBinaryIVF and against the flat scan, same process.

    python bench/bench_partition.py [--n 1000000] [--queries 200]

Data: (a) synthetic ITQ codes: vectors from a Gaussian mixture fitted to the shared real
embeddings (bench_pivot.synthetic), hashed with ITQ (128 bits); queries hashed from the shared
real text-query embeddings' mixture; (b) clustered random codes. Recall@10 is against exact
Hamming search with ties counted by distance (a returned neighbour counts when its distance is
<= the true 10th distance). QPS: batches of queries on one thread, median of 3 runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pivot import SHARED, synthetic  # noqa: E402
from common import markdown_table, median_time  # noqa: E402

import hashpivot as hp  # noqa: E402
from hashpivot import ITQ, Index  # noqa: E402


def recall(D, Dtrue, k=10):
    kth = Dtrue[:, k - 1:k]
    return float(np.mean(np.minimum((D[:, :k] <= kth).sum(1), k) / k))


def run(name, codes, q, args, rows):
    import faiss

    faiss.omp_set_num_threads(1)
    Dtrue, _ = hp.hamming_knn(q, codes, 10, threads=1)
    t_flat = median_time(lambda: hp.hamming_knn(q, codes, 10, threads=1), 3)
    rows.append([name, "hashpivot flat", "-", "1.000", f"{len(q) / t_flat:,.0f}", "1.000"])
    t0 = time.perf_counter()
    index = Index.from_codes(codes, layout="partitioned", n_partitions=args.nlist)
    build = time.perf_counter() - t0
    C = len(index.centres)
    settings = [("exact", None)] + [(f"nprobe={p}", p) for p in (1, 2, 4, 8, 16, 32, 64, 128)]
    for label, p in settings:
        t = median_time(lambda: index.search_codes(q, 10, threads=1, nprobe=p), 3)
        D, _ = index.search_codes(q, 10, threads=1, nprobe=p)
        rows.append([name, f"hashpivot partitioned (C={C})", label, f"{recall(D, Dtrue):.3f}",
                     f"{len(q) / t:,.0f}", f"{index.stats()['last_search_scanned_share']:.3f}"])
    fq = hp.to_faiss_codes(codes)
    quant = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    ivf = faiss.IndexBinaryIVF(quant, codes.shape[1] * 8, C)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    ivf.train(fq[rng.choice(len(fq), min(len(fq), 64 * C), replace=False)])
    ivf.add(fq)
    fbuild = time.perf_counter() - t0
    fqq = hp.to_faiss_codes(q)
    for p in (1, 2, 4, 8, 16, 32, 64, 128):
        ivf.nprobe = p
        t = median_time(lambda: ivf.search(fqq, 10), 3)
        D, _ = ivf.search(fqq, 10)
        rows.append([name, f"faiss IndexBinaryIVF (nlist={C})", f"nprobe={p}",
                     f"{recall(D, Dtrue):.3f}", f"{len(q) / t:,.0f}", ""])
    print(f"{name}: build hashpivot {build:.1f} s, faiss {fbuild:.1f} s", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nlist", type=int, default=None, help="partitions (default 4 sqrt(N))")
    args = ap.parse_args()
    rows = []
    x = np.load(SHARED / "embeddings.npy")
    qe = np.load(SHARED / "query_embeddings.npy")
    xs = synthetic(x, args.n)
    itq = ITQ(128, seed=42).fit(xs)
    codes = itq.encode(xs)
    del xs
    q = itq.encode(synthetic(qe, args.queries, seed=1))
    run("(a) mixture-fitted ITQ", codes, q, args, rows)
    rng = np.random.default_rng(5)
    cent = rng.integers(0, 256, (1000, 16), dtype=np.uint8)
    flips = np.packbits(rng.random((args.n, 128)) < 0.08, axis=1)
    cl = np.ascontiguousarray(cent[rng.integers(0, 1000, args.n)] ^ flips)
    qf = np.packbits(rng.random((args.queries, 128)) < 0.08, axis=1)
    qc = np.ascontiguousarray(cent[rng.integers(0, 1000, args.queries)] ^ qf)
    run("(b) clustered codes", cl, qc, args, rows)
    print(markdown_table(["data", "method", "setting", "recall@10", "QPS (1 thread)",
                          "rows read"], rows))


if __name__ == "__main__":
    main()
