"""Sign-binarised embeddings (sentence-transformers' "ubinary") against hashpivot's ITQ codes on
real text queries: quality per byte.

    python bench/bench_ubinary.py

Data: the man-page corpus (10,000 passages, 1,453 real queries with the passages that answer
them, multilingual-e5-small). hit@10: a relevant passage in the top 10; recall@10: overlap with
the exact float top-10. Rows: exact float search; ubinary Hamming top-10, and its top-40
rescored with the float query against the binary codes (sentence-transformers' rescore, x4);
hashpivot 128-bit ITQ codes: asymmetric top-10 without rerank, and the default search with an
int8 store (300 candidates reranked).
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
import scale_corpus
from common import markdown_table
from hashpivot.truth import recall_at


def main() -> None:
    x, q = scale_corpus.shared()
    corpus = [json.loads(line)["id"] for line in open(scale_corpus.SHARED / "corpus.jsonl")]
    queries = [json.loads(line) for line in open(scale_corpus.SHARED / "queries.jsonl")]
    row = {d: i for i, d in enumerate(corpus)}
    relevant = [{row[r] for r in qq["relevant"] if r in row} for qq in queries]
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]

    def hit(ids):
        return float(np.mean([len(set(ids[j][:10]) & relevant[j]) > 0 for j in range(len(q))]))

    ub = np.packbits(x > 0, axis=1)  # sentence-transformers quantize_embeddings(.., "ubinary")
    qb = np.packbits(q > 0, axis=1)
    ham = np.unpackbits(qb[:, None, :] ^ ub[None], axis=2).sum(2)
    ub_top = np.argsort(ham, axis=1, kind="stable")[:, :40]
    signs = np.unpackbits(ub, axis=1).astype(np.float32) * 2 - 1
    rescored = np.take_along_axis(
        ub_top, np.argsort(-np.einsum("qd,qkd->qk", q, signs[ub_top]), axis=1, kind="stable"), 1
    )
    i8 = hp.Index.build(x, n_bits=128, store="int8")
    rows = [
        ["exact float search (1,536 B/doc)", hit(exact), 1.0],
        ["ubinary 384 bits, Hamming (48 B/doc)", hit(ub_top), recall_at(ub_top, exact, 10)],
        ["ubinary 384 bits, x4 rescore", hit(rescored), recall_at(rescored, exact, 10)],
    ]
    no_rerank = i8.search(q, 10, rerank=False)[1]
    rows.append(
        [
            "hashpivot ITQ 128 bits, asymmetric (16 B/doc)",
            hit(no_rerank),
            recall_at(no_rerank, exact, 10),
        ]
    )
    default = i8.search(q, 10)[1]
    rows.append(
        [
            "hashpivot ITQ 128 bits + int8 rerank (default search)",
            hit(default),
            recall_at(default, exact, 10),
        ]
    )
    print(
        markdown_table(
            ["codes", "hit@10", "recall@10 vs exact"],
            [[r[0], f"{r[1]:.3f}", f"{r[2]:.3f}"] for r in rows],
        )
    )


if __name__ == "__main__":
    main()
