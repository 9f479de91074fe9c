"""The ivf layout's second stages against none: the rerank's error bound (``bound``) and the extra
bits' re-estimate (``extra_bits=2``, ``reestimate``), on the realistic scale corpus, 300 real
queries, one thread, every setting of both indexes timed in turn in each round (medians).

    python bench/bench_second_stage.py --n 100000 --nprobe 157
    python bench/bench_second_stage.py --n 1000000 --nprobe 120

Two ivf 256-bit indexes built as bench_scale.py builds them (float32 store, saved and searched
memory-mapped): plain, and with 2 extra bits. Reported per setting: recall@10, µs a query, QPS
and the stored vectors the rerank read a query (``stats()["rows_reranked"]``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
import scale_corpus
from common import markdown_table
from hashpivot.plan import TUNED_BOUND as TUNED_BOUND_PLAN
from hashpivot.truth import recall_at

K = 10
BITS = 256
EXTRA_BITS = 2
TUNED_BOUND = TUNED_BOUND_PLAN  # what tune() tries
QUERIES = slice(scale_corpus.TUNE_QUERIES, scale_corpus.N_QUERIES)  # the evaluation queries
PLAIN_CANDIDATES = (60, 75, 100, 150)
EXTRA_CANDIDATES = ((20, 100), (30, 150), (40, 200))  # (candidates, reestimate)


def index_of(x, n: int, extra: int, cache: Path) -> Tuple[hp.Index, float]:
    path = cache / f"hp-ivf{BITS}x{extra}-realistic-{n}"
    t0 = time.perf_counter()
    index = hp.Index.build(x, n_bits=BITS, layout="ivf", store="float32", extra_bits=extra)
    build = time.perf_counter() - t0
    index.save(path)
    return hp.Index.load(path, mmap=True, verify=False), build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--nprobe", type=int, default=157)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=scale_corpus.CACHE)
    a = ap.parse_args()
    x, q, truth = scale_corpus.load(a.n, cache=a.cache, kind="realistic")
    q, truth = q[QUERIES], truth[QUERIES]
    a.cache.mkdir(parents=True, exist_ok=True)
    plain, plain_s = index_of(x, a.n, 0, a.cache)
    extra, extra_s = index_of(x, a.n, EXTRA_BITS, a.cache)
    nprobe = min(a.nprobe, plain.stats()["n_lists"])
    settings: List[Tuple[str, hp.Index, Dict]] = []
    for L in PLAIN_CANDIDATES:
        for bound in (0.0, TUNED_BOUND):
            kw = {"candidates": L, "bound": bound}
            settings.append(("ivf 256b", plain, kw))
    for L, M in EXTRA_CANDIDATES:
        settings.append((f"ivf 256b +{EXTRA_BITS}", extra, {"candidates": L, "reestimate": M}))
    recall, reranked = {}, {}
    for i, (_, index, kw) in enumerate(settings):  # also warms each setting
        before = index.stats()["rows_reranked"]
        _, ids = index.search(q, K, nprobe=nprobe, threads=1, **kw)
        reranked[i] = (index.stats()["rows_reranked"] - before) / len(q)
        recall[i] = recall_at(ids, truth, K)
    times: Dict[int, List[float]] = {i: [] for i in range(len(settings))}
    for _ in range(a.rounds):
        for i, (_, index, kw) in enumerate(settings):
            t0 = time.perf_counter()
            index.search(q, K, nprobe=nprobe, threads=1, **kw)
            times[i].append((time.perf_counter() - t0) / len(q) * 1e6)
    rows = []
    for i, (name, _, kw) in enumerate(settings):
        us = statistics.median(times[i])
        setting = ", ".join(f"{k}={v}" for k, v in kw.items() if v)
        row = [name, f"nprobe={nprobe}, {setting}", f"{recall[i]:.3f}", f"{us:.1f}"]
        rows.append([*row, f"{1e6 / us:,.0f}", f"{reranked[i]:.1f}"])
    print(f"# Second stages: N={a.n:,} realistic, {len(q)} real queries, one thread\n")
    print(f"build: plain {plain_s:.1f} s, +{EXTRA_BITS} extra bits {extra_s:.1f} s\n")
    head = ["index", "setting", "recall@10", "µs a query", "QPS", "vectors reranked a query"]
    print(markdown_table(head, rows))


if __name__ == "__main__":
    main()
