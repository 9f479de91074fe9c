"""Engine A/B: the same searches with two builds of hashpivot, timed in turn.

    python bench/bench_engine.py --builds OLD_DIR NEW_DIR [--rounds 7] [--out FILE]

Each DIR holds an importable ``hashpivot`` package (its compiled ``_core`` inside). One worker
process per build builds the same indexes (same data, same seeds), then the parent asks the
workers for one timing at a time, alternating builds and settings, and reports the ratio of
the medians (new / old QPS) per setting: the way to see whether an engine change costs speed
on a machine whose speed drifts by tens of percent between seconds. Results equal between
builds are checked too (ids of every setting).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, SMOKE

SAMPLE_SECONDS = 0.0 if SMOKE else 0.2  # each timing repeats its search (once at least) this long
SYNTH_ROWS = 3_000 if SMOKE else 100_000


def data():
    """The shared real corpus and queries (or clustered stand-ins), and a 100k mixture."""
    if (SHARED / "embeddings.npy").is_file():
        x = np.load(SHARED / "embeddings.npy")
        q = np.load(SHARED / "query_embeddings.npy")[:500]
    else:
        rng = np.random.default_rng(0)
        c = rng.standard_normal((50, 384))
        x = (c[rng.integers(0, 50, 10_000)] + 0.5 * rng.standard_normal((10_000, 384))).astype(
            np.float32
        )
        q = (c[rng.integers(0, 50, 500)] + 0.5 * rng.standard_normal((500, 384))).astype(np.float32)
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((400, 384))
    big = centres[rng.integers(0, 400, SYNTH_ROWS)] + 0.7 * rng.standard_normal((SYNTH_ROWS, 384))
    return x, q, big.astype(np.float32)


def settings(hp, x, q, big):
    """(name, callable) pairs: each callable runs one batch search and returns its ids."""
    flat = hp.Index.build(x, n_bits=128, n_pivots=8)
    flat64 = hp.Index.build(x, n_bits=64, n_pivots=8)
    flat256 = hp.Index.build(x, n_bits=256, n_pivots=8)
    ivf = hp.Index.build(big, n_bits=128, layout="ivf", extra_bits=0)
    codes = flat.codes[np.argsort(flat.ids)]
    part = hp.Index.from_codes(np.ascontiguousarray(codes), layout="partitioned", n_pivots=8)
    qc = flat.itq.encode(q)
    allowed = np.arange(0, len(x), 10)

    def run(index, threads=1, **kw):
        return lambda: index.search(q, 10, threads=threads, **kw)[1]

    return [
        ("flat 128 asym, 300 reranked", run(flat)),
        ("flat 128 asym, 100, no rerank", run(flat, candidates=100, rerank=False)),
        ("flat 128 hamming, no rerank", run(flat, scoring="hamming", rerank=False)),
        ("flat 128 asym, 10% allowed", run(flat, allowed=allowed)),
        ("flat 128 pivot band t=20", run(flat, threshold=20, shortlist=1000)),
        ("flat 64 asym", run(flat64)),
        ("flat 256 asym", run(flat256)),
        ("ivf 128, 100k, nprobe 32", run(ivf, nprobe=32)),
        ("partitioned codes exact", lambda: part.search_codes(qc, 10, threads=1)[1]),
        ("flat 128 asym, 2 threads", run(flat, threads=2)),
    ]


def worker() -> None:
    import hashpivot as hp

    x, q, big = data()
    runs = settings(hp, x, q, big)
    print(json.dumps({"names": [n for n, _ in runs], "isa": hp.cpu_features()}), flush=True)
    for line in sys.stdin:
        i = int(line)
        fn = runs[i][1]
        ids = fn()  # warm
        t0, n = time.perf_counter(), 0
        while n == 0 or time.perf_counter() - t0 < SAMPLE_SECONDS:
            fn()
            n += 1
        qps = n * len(q) / (time.perf_counter() - t0)
        print(
            json.dumps({"qps": qps, "ids": int(np.asarray(ids, np.int64).sum() % (1 << 61))}),
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builds", nargs=2, required=True, metavar=("OLD", "NEW"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    procs = []
    for path in a.builds:
        env = dict(os.environ, PYTHONPATH=str(Path(path).resolve()), HASHPIVOT_NUM_THREADS="2")
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    heads = [json.loads(p.stdout.readline()) for p in procs]
    names = heads[0]["names"]
    qps = {(b, i): [] for b in range(2) for i in range(len(names))}
    same = {i: True for i in range(len(names))}
    for r in range(a.rounds):
        for i in range(len(names)):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            got = {}
            for b in order:
                procs[b].stdin.write(f"{i}\n")
                procs[b].stdin.flush()
                got[b] = json.loads(procs[b].stdout.readline())
                qps[(b, i)].append(got[b]["qps"])
            same[i] &= got[0]["ids"] == got[1]["ids"]
    for p in procs:
        p.stdin.close()
        p.wait()
    lines = [
        f"ISA: {heads[1]['isa']}; {a.rounds} rounds, builds in turn, one thread unless said",
        "",
        "| setting | old QPS | new QPS | new / old | same ids |",
        "|---|---|---|---|---|",
    ]
    for i, name in enumerate(names):
        o, n = np.median(qps[(0, i)]), np.median(qps[(1, i)])
        lines.append(
            f"| {name} | {o:,.0f} | {n:,.0f} | {n / o:.2f} | {'yes' if same[i] else 'NO'} |"
        )
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        main()
