"""Asymmetric scoring against Hamming ranking: quality with real text queries, and speed.

    python bench/bench_asymmetric.py

1. The shared man-page corpus with its 1,453 text queries: for each scoring mode and L
   candidates (exact rerank of L): overlap of the top-10 with exact float search, hit@10, MRR@10,
   QPS (batched, all threads).
2. 1M random 128-bit codes, one thread: full-scan codes per second, asymmetric vs Hamming (k=100).
3. 1M synthetic ITQ codes (a Gaussian mixture fitted to the real embeddings, bench_pivot.py),
   one thread, 200 queries, L = 100: two-stage (Hamming shortlist -> asymmetric -> rerank) and
   the full asymmetric scan against Hamming-only, time per query.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pivot import SHARED, synthetic
from common import markdown_table, median_time
from hashpivot import Index, asymmetric_knn, cpu_features, hamming_knn
from hashpivot.evaluate import real_queries, to_markdown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="rows of parts 2 and 3")
    args = ap.parse_args()
    x = np.load(SHARED / "embeddings.npy")
    qe = np.load(SHARED / "query_embeddings.npy")
    ids = [json.loads(line)["id"] for line in open(SHARED / "corpus.jsonl", encoding="utf-8")]
    row_of = {d: i for i, d in enumerate(ids)}
    rel = [
        [row_of[r] for r in json.loads(line)["relevant"] if r in row_of]
        for line in open(SHARED / "queries.jsonl", encoding="utf-8")
    ]
    index = Index.build(x, n_bits=128, layout="flat", seed=42)
    modes = (
        {"scoring": "hamming"},
        {"scoring": "asymmetric", "shortlist": None},
        {"scoring": "asymmetric", "shortlist": 300},
        {"scoring": "asymmetric", "shortlist": 1000},
    )
    print("## Real text queries, manpages-ja (10,000 passages, 1,453 queries)\n")
    print(to_markdown(real_queries(index, qe, x, rel, modes=modes)))

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (args.n, 16), dtype=np.uint8)
    z = rng.standard_normal((1, 128)).astype(np.float32)
    th = median_time(lambda: hamming_knn(codes[:1].copy(), codes, 100, threads=1), 7)
    ta = median_time(lambda: asymmetric_knn(z, codes, 100, threads=1), 7)
    isa = cpu_features()["isa"]
    print(f"\n## Full scan, {args.n:,} codes, one thread, k = 100 (kernels: {isa})\n")
    print(
        markdown_table(
            ["scoring", "codes/s", "relative"],
            [
                ["hamming", f"{args.n / th / 1e9:.2f} G", "1.00"],
                ["asymmetric", f"{args.n / ta / 1e9:.2f} G", f"{th / ta:.2f}"],
            ],
        )
    )

    xs = synthetic(x, args.n)
    qs = synthetic(qe, 200, seed=1)
    big = Index.build(xs, n_bits=128, layout="flat", store="float32", seed=42)
    del xs
    rows = []
    for name, kw in (
        ("hamming only", {"scoring": "hamming"}),
        ("two-stage (shortlist 300 = 3L)", {"scoring": "asymmetric", "shortlist": 300}),
        ("two-stage (shortlist 1000)", {"scoring": "asymmetric", "shortlist": 1000}),
        ("asymmetric full scan", {"scoring": "asymmetric", "shortlist": None}),
    ):
        t = median_time(lambda: big.search(qs, k=10, candidates=100, threads=1, **kw), 5)
        rows.append([name, f"{t * 1e6 / len(qs):.0f}"])
    base = float(rows[0][1])
    for r in rows:
        r.append(f"{float(r[1]) / base:.2f}")
    print("\n## 1M synthetic ITQ codes, one thread, L = 100, rerank on\n")
    print(markdown_table(["path", "us/query", "relative"], rows))


if __name__ == "__main__":
    main()
