"""Recall and speed from 10k to 1M documents: hashpivot (flat and ivf, 128 and 256 bits, swept
and tuned) against faiss IndexFlatIP, IndexHNSWFlat (M=32, efConstruction=64, efSearch swept)
and IndexIVFScalarQuantizer (SQ8), in one process, engines timed in turn.

    python bench/bench_scale.py --n 10000 100000 1000000 --out bench/SCALE_RESULTS.md \\
        --plot docs/scale_bench.png

Data (bench/scale_corpus.py): N=10000 is the shared corpus itself (real passages); 100k and 1M
add draws from a Gaussian mixture fitted to it. Queries: 500 real text queries; truth: exact
inner-product top-10. Tuning uses the first 200 queries, every figure is measured on the other
300. Reported per setting: recall@10, batched QPS with 1 and 2 threads (median of 3 rounds, all
settings of all engines timed in turn each round), single-query latency (median over 100
queries one at a time, one thread), build time, and the bytes per document that must stay in
memory when the stored vectors are memory-mapped (hashpivot reranks from an mmap; faiss' HNSW
and IVF keep their vectors or codes in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle faiss threads must not spin
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
import scale_corpus
from common import markdown_table
from hashpivot.truth import recall_at

K = 10
TUNE_QUERIES = 200
ROUNDS = 3
LATENCY_QUERIES = 100


class Setting:
    def __init__(
        self,
        engine: str,
        label: str,
        search: Callable[[np.ndarray, int], np.ndarray],
        build_s: float,
        bytes_per_doc: float,
    ):
        self.engine, self.label, self.search = engine, label, search
        self.build_s, self.bytes_per_doc = build_s, bytes_per_doc
        self.recall = 0.0
        self.qps: Dict[int, List[float]] = {1: [], 2: []}
        self.latency_us = 0.0


def faiss_threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(n)


def faiss_engines(x: np.ndarray, cache: Path, n: int, quick: bool) -> List[Setting]:
    import faiss

    out = []
    d = x.shape[1]
    flat = faiss.IndexFlatIP(d)
    t0 = time.perf_counter()
    flat.add(np.ascontiguousarray(x))
    out.append(
        Setting(
            "faiss FlatIP",
            "exact",
            lambda q, t: flat.search(q, K)[1],
            time.perf_counter() - t0,
            4 * d,
        )
    )

    def cached(name: str, make: Callable[[], faiss.Index]):
        f, meta = cache / f"{name}-{n}.faiss", cache / f"{name}-{n}.json"
        if f.is_file() and meta.is_file():
            return faiss.read_index(str(f)), json.loads(meta.read_text())["build_s"]
        faiss_threads(2)
        t0 = time.perf_counter()
        idx = make()
        build = time.perf_counter() - t0
        faiss.write_index(idx, str(f))
        meta.write_text(json.dumps({"build_s": build}))
        return idx, build

    def hnsw_make():
        h = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = 64
        h.add(np.ascontiguousarray(x))
        return h

    hnsw, hnsw_build = cached("hnsw32", hnsw_make)
    hnsw_bytes = faiss.serialize_index(hnsw).nbytes / n
    for ef in [64, 256] if quick else [16, 32, 64, 128, 256, 512, 1024, 2048]:

        def s(q, t, ef=ef):
            hnsw.hnsw.efSearch = ef
            return hnsw.search(q, K)[1]

        out.append(Setting("faiss HNSW", f"ef={ef}", s, hnsw_build, hnsw_bytes))

    from hashpivot.layouts.ivf import default_lists

    nlist = default_lists(n)

    def sq_make():
        q = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFScalarQuantizer(
            q, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        ivf.train(
            np.ascontiguousarray(
                x[np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)]
            )
        )
        ivf.add(np.ascontiguousarray(x))
        return ivf

    sq, sq_build = cached("ivfsq8", sq_make)
    for nprobe in [16] if quick else [4, 16, 64, 256]:
        if nprobe > nlist:
            continue

        def s(q, t, p=nprobe):
            sq.nprobe = p
            return sq.search(q, K)[1]

        out.append(
            Setting("faiss IVF-SQ8", f"nprobe={nprobe}", s, sq_build, d + 8 + 4 * d * nlist / n)
        )
    return out


def hashpivot_engines(
    x: np.ndarray, n: int, tune_q: np.ndarray, quick: bool, cache: Path
) -> List[Setting]:
    out = []
    configs = (
        [("flat", 128), ("ivf", 128), ("ivf", 256)]
        if n > 10_000
        else [("flat", 128), ("flat", 256), ("ivf", 128)]
    )
    if quick:
        configs = configs[:2]
    for layout, bits in configs:
        t0 = time.perf_counter()
        index = hp.Index.build(x, n_bits=bits, layout=layout, store="float32")
        build = time.perf_counter() - t0
        path = cache / f"hp-{layout}{bits}-{n}"
        index.save(path)  # searched memory-mapped, as a user would run it
        index = hp.Index.load(path, mmap=True, verify=False)
        st = index.stats()
        name = f"hashpivot {layout} {bits}b"
        cands = [100, 300, 1000] if quick else [30, 100, 300, 1000, 3000]
        probes = (
            [None]
            if layout == "flat"
            else (
                [index.stats()["n_lists"] // 8]
                if quick
                else [max(1, int(index.stats()["n_lists"] * s)) for s in (0.03, 0.06, 0.12, 0.25)]
            )
        )
        for p in probes:
            for c in cands:
                if c > n:
                    continue
                kw = {"candidates": c, **({} if p is None else {"nprobe": p})}
                out.append(
                    Setting(
                        name,
                        ", ".join(f"{k}={v}" for k, v in kw.items()),
                        lambda q, t, kw=kw, index=index: index.search(q, K, threads=t, **kw)[1],
                        build,
                        st["index_bytes_per_doc"],
                    )
                )
        for target in (0.90, 0.95):
            res = index.tune(tune_q, target_recall=target, k=K, store=False)
            kw = dict(res.settings)
            out.append(
                Setting(
                    name,
                    f"tuned {target:.2f}: " + ", ".join(f"{k}={v}" for k, v in kw.items()),
                    lambda q, t, kw=kw, index=index: index.search(q, K, threads=t, **kw)[1],
                    build,
                    st["index_bytes_per_doc"],
                )
            )
    return out


def measure(settings: List[Setting], q: np.ndarray, truth: np.ndarray) -> None:
    import faiss

    for s in settings:
        s.recall = recall_at(s.search(q, 1), truth, K)
    for _ in range(ROUNDS):  # every setting once per round: a slow spell hits all alike
        for threads in (1, 2):
            faiss_threads(threads)
            for s in settings:
                t0 = time.perf_counter()
                s.search(q, threads)
                s.qps[threads].append(len(q) / (time.perf_counter() - t0))
    faiss.omp_set_num_threads(1)
    one = q[:LATENCY_QUERIES]
    for s in settings:
        ts = []
        for i in range(len(one)):
            t0 = time.perf_counter()
            s.search(one[i : i + 1], 1)
            ts.append(time.perf_counter() - t0)
        s.latency_us = 1e6 * statistics.median(ts)


def best_at(settings: List[Setting], engine_prefix: str, target: float, threads: int = 1):
    ok = [s for s in settings if s.engine.startswith(engine_prefix) and s.recall >= target]
    return max(ok, key=lambda s: statistics.median(s.qps[threads]), default=None)


def run(n: int, args) -> Dict:
    cache = Path(args.cache)
    if n == 10_000:
        x, q_all = scale_corpus.shared()
        q = (
            np.load(cache / "queries.npy")
            if (cache / "queries.npy").is_file()
            else scale_corpus.load(100_000, cache)[1]
        )
        truth = scale_corpus.exact_truth(q, x)
    else:
        x, q, truth = scale_corpus.load(n, cache)
    tune_q, q_eval, truth_eval = q[:TUNE_QUERIES], q[TUNE_QUERIES:], truth[TUNE_QUERIES:]
    print(f"N={n}: {len(q_eval)} evaluation queries, {len(tune_q)} for tuning", file=sys.stderr)
    settings = hashpivot_engines(x, n, tune_q, args.quick, cache)
    settings += faiss_engines(np.asarray(x), cache, n, args.quick)
    measure(settings, q_eval, truth_eval)
    rows = [
        [
            s.engine,
            s.label,
            f"{s.recall:.3f}",
            f"{statistics.median(s.qps[1]):,.0f}",
            f"{statistics.median(s.qps[2]):,.0f}",
            f"{s.latency_us:,.0f}",
            f"{s.build_s:.1f}",
            f"{s.bytes_per_doc:,.0f}",
        ]
        for s in settings
    ]
    table = markdown_table(
        [
            "engine",
            "setting",
            "recall@10",
            "QPS 1 thread",
            "QPS 2 threads",
            "latency µs",
            "build s",
            "resident B/doc",
        ],
        rows,
    )
    summary = []
    for target in (0.90, 0.95):
        h = best_at(settings, "hashpivot", target)
        w = best_at(settings, "faiss HNSW", target)
        if h and w:
            ratio = statistics.median(h.qps[1]) / statistics.median(w.qps[1])
            summary.append(
                f"- recall@10 >= {target:.2f}, one thread: hashpivot {h.engine} "
                f"({h.label}) {h.recall:.3f} at {statistics.median(h.qps[1]):,.0f} QPS; "
                f"HNSW {w.label} {w.recall:.3f} at {statistics.median(w.qps[1]):,.0f} "
                f"QPS: {ratio:.2f}x; build {h.build_s:.0f} s vs {w.build_s:.0f} s; "
                f"{h.bytes_per_doc:.0f} vs {w.bytes_per_doc:,.0f} resident B/doc"
            )
        elif h:
            top = max((s for s in settings if s.engine == "faiss HNSW"), key=lambda s: s.recall)
            summary.append(
                f"- recall@10 >= {target:.2f}, one thread: hashpivot {h.engine} "
                f"({h.label}) {h.recall:.3f} at {statistics.median(h.qps[1]):,.0f} "
                f"QPS; no HNSW setting reached it (best: {top.label} {top.recall:.3f} "
                f"at {statistics.median(top.qps[1]):,.0f} QPS)"
            )
        elif w:
            summary.append(
                f"- recall@10 >= {target:.2f}: no hashpivot setting reached it; HNSW "
                f"{w.label} {w.recall:.3f}"
            )
    return {"n": n, "table": table, "summary": summary, "settings": settings}


def frontier(points: List[tuple]) -> List[tuple]:
    """The (recall, QPS) points no other point beats on both."""
    out: List[tuple] = []
    for r, q in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not out or q > out[-1][1]:
            out.append((r, q))
    return sorted(out)


def plot(panels: List[tuple], path: Path) -> None:
    """panels: (N, {engine: [(recall, QPS one thread), ...]}). Each engine's best trade-offs as
    a line, every setting as a faint dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    names = sorted({name for _, engines in panels for name in engines})
    for ax, (n, engines) in zip(axes[0], panels):
        for name, pts in sorted(engines.items()):
            color = f"C{names.index(name)}"  # one colour per engine across the panels
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", color=color, alpha=0.3)
            best = frontier(pts)
            ax.plot([p[0] for p in best], [p[1] for p in best], "o-", color=color, ms=3, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 (300 real queries)")
        ax.set_ylabel("QPS, one thread")
        ax.set_title(f"N = {n:,}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def panels_of(results: List[Dict]) -> List[tuple]:
    out = []
    for r in results:
        engines: Dict[str, List[tuple]] = {}
        for s in r["settings"]:
            engines.setdefault(s.engine, []).append((s.recall, statistics.median(s.qps[1])))
        out.append((r["n"], engines))
    return out


def panels_from_report(path: Path) -> List[tuple]:
    """The same panels read back from a report this script wrote (to redraw without rerunning)."""
    out: List[tuple] = []
    for line in path.read_text().splitlines():
        if line.startswith("## N = "):
            out.append((int(line[7:].replace(",", "")), {}))
        elif line.startswith("| ") and out and not line.startswith("| engine"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[-1][1].setdefault(cells[0], []).append(
                (float(cells[2]), float(cells[3].replace(",", "")))
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--cache", default=str(scale_corpus.CACHE))
    ap.add_argument("--out", default=None, help="write the Markdown report here")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--quick", action="store_true", help="a few settings (a smoke test)")
    ap.add_argument("--replot", default=None, help="redraw --plot from this report and exit")
    a = ap.parse_args()
    if a.replot:
        plot(panels_from_report(Path(a.replot)), Path(a.plot or "scale_bench.png"))
        return
    isa = hp.cpu_features()["isa"]
    text = [
        f"# Scale benchmark ({isa} kernels)\n",
        f"`python bench/bench_scale.py --n {' '.join(map(str, a.n))}`\n",
    ]
    results = []
    for n in a.n:  # the report is rewritten after each N: a long run keeps what it measured
        r = run(n, a)
        results.append(r)
        text += [f"\n## N = {r['n']:,}\n", *r["summary"], "", r["table"]]
        out = "\n".join(text)
        print(out, flush=True)
        if a.out:
            Path(a.out).write_text(out + "\n")
    if a.plot:
        plot(panels_of(results), Path(a.plot))


if __name__ == "__main__":
    main()
