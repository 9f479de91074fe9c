"""Does the pivot filter's cut turn into saved time? Filtered against unfiltered search, one run.

    python bench/bench_pivot.py                 # shared corpus + 1M synthetic ITQ codes
    python bench/bench_pivot.py --synthetic 0   # shared corpus only

For each dataset: the smallest threshold t whose filter recall (share of the exact cosine top-10
of query documents that pass the filter) is >= --target, its cut (share of documents the filter
removes), and the median time of the Hamming candidate stage (L = --candidates) and of the whole
search (with rerank when vectors are stored), filtered and unfiltered, batched, one thread.
The goal: filtered time <= (1 - cut + 0.1) x unfiltered time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, markdown_table, median_time
from hashpivot import Index, hamming_distances, pivot_filter
from hashpivot.truth import exact_topk


def synthetic(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n vectors from a Gaussian mixture fitted to real embeddings: each real vector a component
    centre, noise with the per-dimension residual spread around the nearest of 64 centroids."""
    rng = np.random.default_rng(seed)
    cent = real[rng.choice(len(real), 64, replace=False)]
    resid = real - cent[np.argmax(real @ cent.T, axis=1)]
    sd = resid.std(axis=0) * 0.6
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for s in range(0, n, 1 << 17):
        m = min(n, s + (1 << 17)) - s
        out[s : s + m] = (
            real[rng.integers(0, len(real), m)] + rng.standard_normal((m, real.shape[1])) * sd
        )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def filter_stats(index: Index, x: np.ndarray, qi: np.ndarray, t: int, gt: np.ndarray):
    qd = hamming_distances(index.itq.encode(x[qi]), index.pivots)
    row_of = np.empty(len(index), dtype=np.int64)
    row_of[index.ids] = np.arange(len(index))
    kept = hits = 0
    for j in range(len(qi)):
        rows = pivot_filter(index.table, qd[j], t)
        kept += len(rows)
        hits += np.isin(row_of[gt[j]], rows).sum()
    return 1 - kept / (len(qi) * len(index)), hits / gt.size


def run(name: str, x: np.ndarray, queries: np.ndarray, args, store) -> list:
    index = Index.build(x, n_bits=128, layout="flat", store=store, seed=42, n_pivots=8)
    rng = np.random.default_rng(42)
    qi = np.sort(rng.choice(len(x), args.n_queries, replace=False))
    gt = exact_topk(x[qi], x, 10, exclude=qi)
    t_sel = None
    for t in range(8, index.n_bits + 1):
        cut, frec = filter_stats(index, x, qi, t, gt)
        if frec >= args.target:
            t_sel = t
            break
    qc = index.itq.encode(queries)
    L = args.candidates
    base = median_time(lambda: index.search_codes(qc, L, threads=1), args.repeats)
    filt = median_time(lambda: index.search_codes(qc, L, threshold=t_sel, threads=1), args.repeats)
    before = index.stats()
    index.search_codes(qc, L, threshold=t_sel, threads=1)
    after = index.stats()
    scanned = (after["rows_scanned"] - before["rows_scanned"]) / (
        after["rows_possible"] - before["rows_possible"]
    )
    rows = [
        [
            name,
            f"{len(x):,}",
            t_sel,
            f"{frec:.3f}",
            f"{cut:.3f}",
            f"{scanned:.3f}",
            f"candidates L={L}",
            f"{base * 1e6 / len(qc):.1f}",
            f"{filt * 1e6 / len(qc):.1f}",
            f"{filt / base:.2f}",
            f"{1 - cut + 0.1:.2f}",
            "yes" if filt / base <= 1 - cut + 0.1 else "no",
        ]
    ]
    fb = median_time(lambda: index.search(queries, k=10, candidates=L, threads=1), args.repeats)
    ff = median_time(
        lambda: index.search(queries, k=10, threshold=t_sel, candidates=L, threads=1), args.repeats
    )
    rows.append(
        [
            name,
            f"{len(x):,}",
            t_sel,
            f"{frec:.3f}",
            f"{cut:.3f}",
            f"{scanned:.3f}",
            "search" + (" + rerank" if store else ""),
            f"{fb * 1e6 / len(qc):.1f}",
            f"{ff * 1e6 / len(qc):.1f}",
            f"{ff / fb:.2f}",
            f"{1 - cut + 0.1:.2f}",
            "yes" if ff / fb <= 1 - cut + 0.1 else "no",
        ]
    )
    for r in rows:
        print(" | ".join(map(str, r)), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=str(SHARED))
    ap.add_argument(
        "--synthetic", type=int, default=1_000_000, help="rows of synthetic codes (0: skip)"
    )
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--n-queries", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    x = np.load(Path(args.data) / "embeddings.npy")
    qtext = np.load(Path(args.data) / "query_embeddings.npy")
    rows = run("manpages-ja (text queries)", x, qtext, args, "float32")
    if args.synthetic:
        xs = synthetic(x, args.synthetic)
        qs = synthetic(qtext, 1000, seed=1)
        rows += run("synthetic ITQ", xs, qs, args, None)
    print(
        markdown_table(
            [
                "data",
                "N",
                "t",
                "filter recall",
                "cut",
                "rows read",
                "stage",
                "unfiltered us/q",
                "filtered us/q",
                "ratio",
                "goal <=",
                "met",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
