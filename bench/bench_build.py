"""Build time at 1M rows: hashpivot ivf (128 and 256 bits) against faiss IndexHNSWFlat (M=32,
efConstruction=64), both on 2 threads, one after the other on an otherwise idle machine.

    python bench/bench_build.py [--n 1000000]

Data: the scale corpus (bench/scale_corpus.py). Recall and QPS of these indexes are in
bench/SCALE_RESULTS.md.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
import scale_corpus
from common import markdown_table


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    a = ap.parse_args()
    x = np.ascontiguousarray(scale_corpus.load(a.n, scale_corpus.CACHE)[0], dtype=np.float32)
    rows = []
    for bits in (256, 128):
        t0 = time.perf_counter()
        hp.Index.build(x, n_bits=bits, layout="ivf", extra_bits=0)
        rows.append([f"hashpivot ivf {bits} bits", f"{time.perf_counter() - t0:.1f}"])
        print(rows[-1], flush=True)
    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    h = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    h.hnsw.efConstruction = 64
    h.add(x)
    rows.append(["faiss HNSW M=32 efC=64", f"{time.perf_counter() - t0:.1f}"])
    print(f"# Build time, N = {a.n:,} ({hp.cpu_features()['isa']} kernels, 2 threads)\n")
    print(markdown_table(["index", "build s"], rows))


if __name__ == "__main__":
    main()
