"""hashpivot.hamming_knn against faiss.IndexBinaryFlat, same process, same codes.

    python bench/bench_hamming.py            # N = 10k/100k/1M, nq = 1/100/1000, k = 10/100/1000
    python bench/bench_hamming.py --quick    # N = 1M, k = 10 only

Prints QPS (median of --repeats runs) and the ratio hashpivot / faiss for threads 1 and 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

# faiss' OpenMP workers otherwise spin on the second core after each search and starve ours.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
from common import markdown_table, median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--nq", default="1,100,1000")
    ap.add_argument("--k", default="10,100,1000")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--bits", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="N=1M, k=10 only")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--isa", help="force a kernel level: portable, popcnt, avx2, avx512")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.k = "1000000", "10"
    import faiss

    if args.isa:
        from hashpivot import _core

        _core.set_isa(args.isa)

    rng = np.random.default_rng(0)
    nbytes = args.bits // 8
    rows, results = [], []
    print(
        f"# hashpivot {hp.__version__} kernels={hp.cpu_features()['isa']} faiss {faiss.__version__}"
    )
    for n in map(int, args.sizes.split(",")):
        codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
        queries_all = rng.integers(
            0, 256, (max(map(int, args.nq.split(","))), nbytes), dtype=np.uint8
        )
        index = faiss.IndexBinaryFlat(args.bits)
        index.add(hp.to_faiss_codes(codes))
        for nq in map(int, args.nq.split(",")):
            q = queries_all[:nq]
            fq = hp.to_faiss_codes(q)
            for k in map(int, args.k.split(",")):
                if k > n:
                    continue
                for threads in map(int, args.threads.split(",")):
                    faiss.omp_set_num_threads(threads)
                    tf = median_time(lambda: index.search(fq, k), args.repeats)
                    th = median_time(
                        lambda: hp.hamming_knn(q, codes, k, threads=threads), args.repeats
                    )
                    r = dict(
                        n=n,
                        nq=nq,
                        k=k,
                        threads=threads,
                        faiss_qps=nq / tf,
                        hashpivot_qps=nq / th,
                        ratio=tf / th,
                    )
                    results.append(r)
                    rows.append(
                        [
                            f"{n:,}",
                            nq,
                            k,
                            threads,
                            f"{nq / tf:,.0f}",
                            f"{nq / th:,.0f}",
                            f"{tf / th:.2f}x",
                        ]
                    )
                    print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    print(
        markdown_table(
            ["N", "nq", "k", "threads", "faiss QPS", "hashpivot QPS", "hashpivot/faiss"], rows
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
