"""Partitioned layout against faiss.IndexBinaryIVF and against the flat scan, same process.

    python bench/bench_partition.py [--n 1000000] [--queries 200] [--threads 1,2]
                                    [--plot docs/partition_bench.png]
    python bench/bench_partition.py --n 10000000 --data a --train-per-list 16

Data: (a) a Gaussian mixture fitted to the shared real embeddings (256 diagonal components,
the count with the best held-out log-likelihood, see --components), N + queries vectors drawn
from it, ITQ-hashed to 128 bits; the queries are held-out draws from the same mixture.
(b) clustered random codes (1000 centres, 8% of bits flipped). Then (c) the shared corpus
through the whole pipeline: its 1,453 real text queries, asymmetric scoring, exact rerank.

Recall@10 is against exact Hamming search with ties counted by distance (a returned neighbour
counts when its distance is <= the true 10th distance). QPS: the batch of queries, median of
5 samples of at least 0.2 s, hashpivot and faiss at the same nprobe timed in turn (this shared
VM's speed drifts by tens of percent between seconds); both libraries use the same number of
threads and of partitions (nlist).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle faiss threads must not spin
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
from bench_pivot import SHARED
from common import interleaved_rates, markdown_table
from hashpivot import ITQ, Index
from hashpivot.layouts.base import default_groups

ITQ_TRAIN = 200_000  # mixture draws the ITQ rotation learns from
NPROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)


def fit_mixture(x: np.ndarray, components: int, seed: int = 0):
    from sklearn.mixture import GaussianMixture  # sentence-transformers brings scikit-learn

    return GaussianMixture(
        components, covariance_type="diag", random_state=seed, max_iter=50, reg_covar=1e-6
    ).fit(x)


def mixture_codes(g, n: int, itq: ITQ, rng, chunk: int = 1 << 17) -> np.ndarray:
    """n draws from the mixture, L2-normalised and hashed chunk by chunk (10M x 384 floats
    would need 15 GB)."""
    out = np.empty((n, itq.n_bits // 8), dtype=np.uint8)
    for s in range(0, n, chunk):
        out[s : s + chunk] = itq.encode(mixture_draw(g, min(chunk, n - s), rng))
    return out


def mixture_draw(g, n: int, rng) -> np.ndarray:
    comp = rng.choice(len(g.weights_), n, p=g.weights_)
    x = (
        g.means_[comp] + rng.standard_normal((n, g.means_.shape[1])) * np.sqrt(g.covariances_[comp])
    ).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(D: np.ndarray, Dtrue: np.ndarray, k: int = 10) -> float:
    kth = Dtrue[:, k - 1 : k]
    return float(np.mean(np.minimum((D[:, :k] <= kth).sum(1), k) / k))


def scanned_share(before: dict, after: dict) -> float:
    """The share of rows read by the searches between two ``stats()`` readings."""
    rows = after["rows_possible"] - before["rows_possible"]
    return (after["rows_scanned"] - before["rows_scanned"]) / rows


def run(name: str, codes: np.ndarray, q: np.ndarray, args, rows: list, curves: dict) -> None:
    import faiss

    C = args.nlist or default_groups(len(codes))
    t0 = time.perf_counter()
    index = Index.from_codes(codes, layout="partitioned", n_partitions=C)
    build = time.perf_counter() - t0
    fq, fqq = hp.to_faiss_codes(codes), hp.to_faiss_codes(q)
    ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(codes.shape[1] * 8), codes.shape[1] * 8, C)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    ivf.train(fq[rng.choice(len(fq), min(len(fq), args.train_per_list * C), replace=False)])
    ivf.add(fq)
    fbuild = time.perf_counter() - t0
    print(f"{name}: build hashpivot {build:.1f} s, faiss {fbuild:.1f} s", file=sys.stderr)
    Dtrue, _ = hp.hamming_knn(q, codes, 10)
    for th in args.threads:
        faiss.omp_set_num_threads(th)
        frows = []  # faiss' rows follow hashpivot's in the table
        r = interleaved_rates({"flat": lambda: hp.hamming_knn(q, codes, 10, threads=th)}, len(q))
        rows.append([name, th, "hashpivot flat", "-", "1.000", f"{r['flat']:,.0f}", "1.000"])
        for label, p in [("exact", None)] + [(f"nprobe={p}", p) for p in NPROBES]:
            before = index.stats()
            D, _ = index.search_codes(q, 10, threads=th, nprobe=p)
            rec, share = recall(D, Dtrue), scanned_share(before, index.stats())
            fns = {"hp": lambda: index.search_codes(q, 10, threads=th, nprobe=p)}
            if p is not None:  # faiss timed in turn with hashpivot at the same nprobe
                ivf.nprobe = p
                D, _ = ivf.search(fqq, 10)
                frec = recall(D, Dtrue)
                fns["faiss"] = lambda: ivf.search(fqq, 10)
            r = interleaved_rates(fns, len(q))
            rows.append(
                [
                    name,
                    th,
                    f"hashpivot partitioned (C={C})",
                    label,
                    f"{rec:.3f}",
                    f"{r['hp']:,.0f}",
                    f"{share:.3f}",
                ]
            )
            curves.setdefault((name, th, "hashpivot partitioned"), []).append((rec, r["hp"], label))
            if p is not None:
                frows.append(
                    [
                        name,
                        th,
                        f"faiss IndexBinaryIVF (nlist={C})",
                        label,
                        f"{frec:.3f}",
                        f"{r['faiss']:,.0f}",
                        "",
                    ]
                )
                curves.setdefault((name, th, "faiss IndexBinaryIVF"), []).append(
                    (frec, r["faiss"], label)
                )
        rows.extend(frows)


def best_at(curve, target: float):
    ok = [c for c in curve if c[0] >= target]
    return max(ok, key=lambda c: c[1]) if ok else None


def pipeline(args) -> str:
    """The shared corpus with its real text queries, flat against partitioned, rerank on."""
    from hashpivot.evaluate import real_queries, to_markdown

    x = np.load(SHARED / "embeddings.npy")
    qe = np.load(SHARED / "query_embeddings.npy")
    row_of = {
        json.loads(line)["id"]: i
        for i, line in enumerate(open(SHARED / "corpus.jsonl", encoding="utf-8"))
    }
    rel = [
        [row_of[r] for r in json.loads(line)["relevant"]]
        for line in open(SHARED / "queries.jsonl", encoding="utf-8")
    ]
    out = []
    for layout, modes in [
        ("flat", [{"scoring": "asymmetric"}]),
        (
            "partitioned",
            [
                {"scoring": "asymmetric"},
                {"scoring": "asymmetric", "nprobe": 64},
                {"scoring": "asymmetric", "nprobe": 16},
                {"scoring": "hamming", "nprobe": 16},
            ],
        ),
    ]:
        index = Index.build(x, n_bits=128, seed=42, layout=layout, progress=False)
        for row in real_queries(index, qe, x, rel, limits=(100, 300), modes=modes):
            if layout == "partitioned" and row["method"] == "exact float":
                continue
            row["method"] = f"{layout} {row['method']}"
            out.append(row)
    return to_markdown(out)


def plot(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k[0] for k in curves})
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for (n, th, method), pts in sorted(curves.items()):
            if n != name:
                continue
            pts = [p for p in pts if p[2] != "exact"]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "o-" if "hashpivot" in method else "s--",
                label=f"{method}, {th} thread{'s' * (th > 1)}",
            )
        ax.set_yscale("log")
        ax.axvline(0.95, color="grey", lw=0.8)
        ax.set_xlabel("recall@10 (vs exact Hamming)")
        ax.set_ylabel("queries per second")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nlist", type=int, default=None, help="partitions (default 4 sqrt(N))")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument(
        "--train-per-list",
        type=int,
        default=64,
        help="faiss trains its coarse quantizer on this many codes per list (its "
        "k-means in float space dominates the build at 10M: use 16 there)",
    )
    ap.add_argument(
        "--components",
        type=int,
        default=256,
        help="mixture components (held-out log-likelihood per point on the shared "
        "embeddings: 16: 969.7, 64: 983.3, 256: 993.1, 512: 988.8, 1024: 965.5)",
    )
    ap.add_argument("--data", default="a,b,c", help="which parts to run")
    ap.add_argument("--plot", default=None, help="write a recall/QPS plot here")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    parts = args.data.split(",")
    rows: list = []
    curves: dict = {}
    if "a" in parts:
        x = np.load(SHARED / "embeddings.npy")
        g = fit_mixture(x, args.components)
        rng = np.random.default_rng(1)
        itq = ITQ(128, seed=42).fit(mixture_draw(g, min(ITQ_TRAIN, args.n), rng), progress=False)
        q = mixture_codes(g, args.queries, itq, rng)
        codes = mixture_codes(g, args.n, itq, rng)
        run("(a) mixture-fitted ITQ", codes, q, args, rows, curves)
        del codes
    if "b" in parts:
        rng = np.random.default_rng(5)
        cent = rng.integers(0, 256, (1000, 16), dtype=np.uint8)
        cl = np.empty((args.n, 16), dtype=np.uint8)
        for s in range(0, args.n, 1 << 20):
            m = min(args.n, s + (1 << 20)) - s
            cl[s : s + m] = cent[rng.integers(0, 1000, m)] ^ np.packbits(
                rng.random((m, 128)) < 0.08, axis=1
            )
        qf = np.packbits(rng.random((args.queries, 128)) < 0.08, axis=1)
        qc = np.ascontiguousarray(cent[rng.integers(0, 1000, args.queries)] ^ qf)
        run("(b) clustered codes", cl, qc, args, rows, curves)
        del cl
    print(f"N = {args.n:,}, {args.queries} queries\n")
    print(
        markdown_table(
            ["data", "threads", "method", "setting", "recall@10", "QPS", "rows read"], rows
        )
    )
    summary = []
    for (name, th, method), curve in sorted(curves.items()):
        if method != "hashpivot partitioned":
            continue
        mine, theirs = (
            best_at(curve, 0.95),
            best_at(curves[(name, th, "faiss IndexBinaryIVF")], 0.95),
        )
        exact = next(c for c in curve if c[2] == "exact")
        summary.append(
            [
                name,
                th,
                f"{mine[2]} {mine[0]:.3f} @ {mine[1]:,.0f}" if mine else "-",
                f"{theirs[2]} {theirs[0]:.3f} @ {theirs[1]:,.0f}" if theirs else "-",
                f"{mine[1] / theirs[1]:.2f}x" if mine and theirs else "-",
                f"{exact[1]:,.0f}",
            ]
        )
    print("\nBest QPS at recall@10 >= 0.95 (setting recall @ QPS):\n")
    print(
        markdown_table(
            [
                "data",
                "threads",
                "hashpivot partitioned",
                "faiss IndexBinaryIVF",
                "ratio",
                "hashpivot exact mode QPS",
            ],
            summary,
        )
    )
    if args.plot and curves:
        plot(curves, args.plot)
    if "c" in parts:
        print("\n(c) shared corpus, 1,453 real text queries, whole pipeline (rerank on):\n")
        print(pipeline(args))


if __name__ == "__main__":
    main()
