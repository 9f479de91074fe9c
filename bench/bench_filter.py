"""Filtered search: QPS at 50% / 10% / 0.1% of the documents allowed against unfiltered search,
with faiss IndexBinaryFlat + IDSelectorBatch (on the same ITQ codes) as the peer; one process,
engines timed in turn, one thread (issue 16's targets).

    python bench/bench_filter.py [--n 10000 1000000] [--out bench/FILTER_RESULTS.md]

N=10000 is the shared man-page corpus with its real queries; larger N is the scale corpus
(bench/scale_corpus.py). Recall@10 is measured against the exact filtered top-10.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
import scale_corpus
from common import interleaved_rates, markdown_table
from hashpivot.truth import exact_topk, recall_at

SHARES = (0.5, 0.1, 0.001)
QUERIES = 300


def filtered_truth(x: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int = 10) -> np.ndarray:
    """The exact top-k among the allowed rows (fewer where fewer are allowed), as row ids."""
    return allowed[exact_topk(q, x[allowed], k)]


def run(n: int) -> str:
    import faiss

    if n == 10_000:
        x, q = scale_corpus.shared()
    else:
        x, q, _ = scale_corpus.load(n, scale_corpus.CACHE)
    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.ascontiguousarray(q[:QUERIES], dtype=np.float32)
    index = hp.Index.build(x, n_bits=128)
    codes = np.empty_like(index.codes)
    codes[np.asarray(index.ids)] = index.codes  # by id, for faiss
    qcodes = index.itq.encode(q / np.linalg.norm(q, axis=1, keepdims=True))
    binary = faiss.IndexBinaryFlat(128)
    binary.add(codes)
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    fns = {
        "hashpivot unfiltered": lambda: index.search(q, 10, threads=1),
        "faiss binary unfiltered": lambda: binary.search(qcodes, 10),
    }
    recalls = {}
    for share in SHARES:
        allowed = np.sort(rng.choice(n, max(1, int(share * n)), replace=False))
        filt = hp.IdFilter(allowed)
        sel = faiss.IDSelectorBatch(allowed)
        params = faiss.SearchParameters(sel=sel)
        fns[f"hashpivot {share:.1%}"] = lambda f=filt: index.search(q, 10, threads=1, allowed=f)
        fns[f"faiss binary {share:.1%}"] = lambda p=params: binary.search(qcodes, 10, params=p)
        truth = filtered_truth(
            x / np.linalg.norm(x, axis=1, keepdims=True),
            q / np.linalg.norm(q, axis=1, keepdims=True),
            allowed,
        )
        recalls[f"hashpivot {share:.1%}"] = recall_at(
            index.search(q, 10, allowed=filt)[1], truth, 10
        )
    rates = interleaved_rates(fns, len(q), repeats=5)
    rows = []
    for share in SHARES:
        h, f = rates[f"hashpivot {share:.1%}"], rates[f"faiss binary {share:.1%}"]
        rows.append(
            [
                f"{share:.1%}",
                f"{h:,.0f}",
                f"{h / rates['hashpivot unfiltered']:.2f}x",
                f"{recalls[f'hashpivot {share:.1%}']:.3f}",
                f"{f:,.0f}",
                f"{f / rates['faiss binary unfiltered']:.2f}x",
                f"{h / f:.2f}x",
            ]
        )
    head = (
        f"\n## N = {n:,} ({QUERIES} real queries, one thread)\n\nunfiltered: hashpivot "
        f"{rates['hashpivot unfiltered']:,.0f} QPS, faiss IndexBinaryFlat "
        f"{rates['faiss binary unfiltered']:,.0f} QPS\n\n"
    )
    return head + markdown_table(
        [
            "allowed",
            "hashpivot QPS",
            "vs unfiltered",
            "recall@10",
            "faiss binary+IDSelectorBatch QPS",
            "vs unfiltered",
            "hashpivot / faiss",
        ],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    isa, sizes = hp.cpu_features()["isa"], " ".join(map(str, a.n))
    text = f"# Filtered search ({isa} kernels)\n\n`python bench/bench_filter.py --n {sizes}`\n"
    for n in a.n:
        text += run(n) + "\n"
        print(text, flush=True)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
