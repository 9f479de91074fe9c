"""Recall and speed from 10k to 1M documents: hashpivot (flat and ivf, 128 and 256 bits, ivf 256
bits with 2 extra bits, swept and tuned) against faiss IndexFlatIP, IndexHNSWFlat (M=32,
efConstruction=64, efSearch swept), IndexIVFScalarQuantizer (SQ8), IVF-RaBitQ + Refine(Flat)
(1 bit with qb 0/4/8, fast-scan, 4 bits; nprobe and k_factor swept), ScaNN (tree + AH +
reorder) and usearch HNSW, in one process, engines timed in turn.

    python bench/bench_scale.py --n 10000 100000 1000000 --kind realistic mixture \\
        --out bench/SCALE_RESULTS.md --plot docs/scale_bench.png

Data (bench/scale_corpus.py): N=10000 is the shared corpus itself (real passages); 100k and 1M
add rows made from it: ``realistic`` (between a passage and its real neighbours: text-like
neighbourhoods) or ``mixture`` (Gaussian mixture draws: a stress test that flatters scans).
Queries: 500 real text queries; truth: exact inner-product top-10. Tuning uses the first 200
queries, every figure is measured on the other 300. Reported per setting: recall@10, batched QPS
with 1 and 2 threads (median of 3 rounds, all settings of all engines timed in turn each round),
single-query latency (median over 100 queries one at a time, one thread), build time, and the
bytes per document that must stay in memory when the stored vectors are memory-mapped
(hashpivot reranks from an mmap; faiss' HNSW, IVF and RaBitQ + Refine, ScaNN's reorder and
usearch keep their vectors or codes in memory). Then, per recall target, each engine's best
one-thread QPS, hashpivot's best against the best peer's (a ratio of medians), and hashpivot's
query by stage at its best setting.
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
from common import SMOKE, markdown_table, rounds
from hashpivot.layouts.base import default_groups
from hashpivot.truth import recall_at

K = 10
TARGETS = (0.90, 0.95, 0.99)
EXTRA_BITS = 2  # the ivf variant with extra bits: 3 a dimension in all (estimator_study.py)
TUNE_QUERIES = scale_corpus.TUNE_QUERIES
ROUNDS = 3
LATENCY_QUERIES = 100
# queries an untimed search runs just before each timed one: the previous engine has evicted this
# index's arrays, and the first setting of each index measured cold without it
WARM_QUERIES = 10


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
        self.profile: Callable[[np.ndarray], Dict[str, float]] = lambda q: {}


def faiss_threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(n)


def faiss_engines(x: np.ndarray, cache: Path, n: int, quick: bool, kind: str) -> List[Setting]:
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
        f, meta = cache / f"{name}-{kind}-{n}.faiss", cache / f"{name}-{kind}-{n}.json"
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

    nlist = default_groups(n)

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
    return out + rabitq_engines(x, cached, n, quick)


# faiss IVF-RaBitQ + Refine(Flat): (factory code, nprobes, k_factors, qbs; None: not settable)
RABITQ = {
    "faiss IVF-RaBitQ": ("RaBitQ", (32, 64, 128), (2, 4, 8), (0, 4, 8)),
    "faiss IVF-RaBitQ fast-scan": ("RaBitQfs", (32, 64, 128), (2, 4, 8), (None,)),
    "faiss IVF-RaBitQ 4-bit": ("RaBitQ4", (32, 64, 128), (1, 2, 4), (0, 8)),
}


def rabitq_engines(x: np.ndarray, cached: Callable, n: int, quick: bool) -> List[Setting]:
    """IVF-RaBitQ with a random rotation first (RR) and an exact rerank from float vectors held
    in memory (Refine(Flat)): resident bytes count both, as faiss keeps both."""
    import faiss

    d, nlist = x.shape[1], default_groups(n)
    out = []
    for engine, (code, probes, factors, qbs) in RABITQ.items():

        def make(code=code):
            idx = faiss.index_factory(
                d, f"RR{d},IVF{nlist},{code},Refine(Flat)", faiss.METRIC_INNER_PRODUCT
            )
            rows = np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)
            idx.train(np.ascontiguousarray(x[np.sort(rows)]))
            idx.add(np.ascontiguousarray(x))
            return idx

        idx, build = cached(f"ivf-{code}", make)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(idx))
        per_doc = faiss.serialize_index(idx).nbytes / n
        grid = [(p, f, b) for p in probes for f in factors for b in qbs]
        for p, f, b in grid[:: max(1, len(grid) // 3)] if quick else grid:
            if p > nlist:
                continue

            def s(q, t, p=p, f=f, b=b, idx=idx, ivf=ivf):
                ivf.nprobe, idx.k_factor = p, f
                if b is not None:
                    ivf.qb = b
                return idx.search(q, K)[1]

            label = f"nprobe={p}, k_factor={f}" + ("" if b is None else f", qb={b}")
            out.append(Setting(engine, label, s, build, per_doc))
    return out


def scann_engines(x: np.ndarray, n: int, quick: bool) -> List[Setting]:
    """ScaNN 1.4: a k-means tree (about sqrt(N) leaves), anisotropic hashing (2 dims a 4-bit
    code), exact reorder from float vectors in memory; leaves searched and reorder swept."""
    try:
        import scann
    except ImportError:
        print("ScaNN is not installed (pip install scann): skipped", file=sys.stderr)
        return []
    leaves = max(16, int(2 * np.sqrt(n)))
    t0 = time.perf_counter()
    searcher = (
        scann.scann_ops_pybind.builder(np.ascontiguousarray(x), K, "dot_product")
        .tree(
            num_leaves=leaves,
            num_leaves_to_search=leaves // 10,
            training_sample_size=min(n, 250_000),
        )
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(100)
        .build()
    )
    build = time.perf_counter() - t0
    per_doc = x.shape[1] * 4 + x.shape[1] / 2 / 2 + 4  # reorder floats + AH codes + ids
    out = []
    shares = (0.05,) if quick else (0.02, 0.05, 0.1, 0.2)
    reorders = (100,) if quick else (30, 100, 300)
    for share in shares:
        for ro in reorders:
            ls = max(1, int(leaves * share))

            def s(q, t, ls=ls, ro=ro):
                return searcher.search_batched(
                    q, final_num_neighbors=K, leaves_to_search=ls, pre_reorder_num_neighbors=ro
                )[0]

            out.append(Setting("ScaNN", f"leaves={ls}/{leaves}, reorder={ro}", s, build, per_doc))
    return out


def usearch_engines(x: np.ndarray, n: int, quick: bool) -> List[Setting]:
    """usearch HNSW (connectivity 32, expansion_add 64, float32), expansion_search swept."""
    try:
        from usearch.index import Index as UIndex
    except ImportError:
        print("usearch is not installed (pip install usearch): skipped", file=sys.stderr)
        return []
    u = UIndex(ndim=x.shape[1], metric="ip", dtype="f32", connectivity=32, expansion_add=64)
    t0 = time.perf_counter()
    u.add(np.arange(n), np.ascontiguousarray(x), threads=2)
    build = time.perf_counter() - t0
    per_doc = u.memory_usage / n
    out = []
    for ef in [64] if quick else [16, 32, 64, 128, 256]:

        def s(q, t, ef=ef):
            u.expansion_search = ef
            return u.search(q, K, threads=t).keys.astype(np.int64)

        out.append(Setting("usearch HNSW", f"ef={ef}", s, build, per_doc))
    return out


def hashpivot_engines(
    x: np.ndarray, n: int, tune_q: np.ndarray, quick: bool, cache: Path, kind: str
) -> List[Setting]:
    out = []
    configs = (  # layout, bits, extra bits
        [("flat", 128, 0), ("ivf", 128, 0), ("ivf", 256, 0), ("ivf", 256, EXTRA_BITS)]
        if n > 10_000
        else [("flat", 128, 0), ("flat", 256, 0), ("ivf", 128, 0)]
    )
    if quick:
        configs = [configs[0], ("ivf", 128, EXTRA_BITS)]
    for layout, bits, extra in configs:
        t0 = time.perf_counter()
        index = hp.Index.build(x, n_bits=bits, layout=layout, store="float32", extra_bits=extra)
        build = time.perf_counter() - t0
        path = cache / f"hp-{layout}{bits}x{extra}-{kind}-{n}"
        index.save(path)  # searched memory-mapped, as a user would run it
        index = hp.Index.load(path, mmap=True, verify=False)
        st = index.stats()
        name = f"hashpivot {layout} {bits}b" + (f" +{extra}" if extra else "")
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
                setting = Setting(
                    name,
                    ", ".join(f"{k}={v}" for k, v in kw.items()),
                    lambda q, t, kw=kw, index=index: index.search(q, K, threads=t, **kw)[1],
                    build,
                    st["index_bytes_per_doc"],
                )
                setting.profile = lambda q, kw=kw, index=index: profile(index, q, kw)
                out.append(setting)
        for target in TARGETS:
            res = index.tune(tune_q, target_recall=target, k=K, store=False)
            kw = dict(res.settings)
            setting = Setting(
                name,
                f"tuned {target:.2f}: " + ", ".join(f"{k}={v}" for k, v in kw.items()),
                lambda q, t, kw=kw, index=index: index.search(q, K, threads=t, **kw)[1],
                build,
                st["index_bytes_per_doc"],
            )
            setting.profile = lambda q, kw=kw, index=index: profile(index, q, kw)
            out.append(setting)
    return out


def profile(index: hp.Index, q: np.ndarray, kw: Dict) -> Dict[str, float]:
    """µs a query in each stage, one thread, by subtraction (medians of 3): list choice (one
    list probed), the list scan (the setting's nprobe, a minimal pool), the exact re-score of
    the pool, the rerank from the stored vectors."""
    nprobe = kw.get("nprobe")
    cands = kw.get("candidates", 300)
    probe = {} if nprobe is None else {"nprobe": nprobe}
    steps = {
        **({} if nprobe is None else {"centres": dict(rerank=False, candidates=K, nprobe=1)}),
        "scan": dict(rerank=False, candidates=K, **probe),
        "re-score": dict(rerank=False, candidates=cands, **probe),
        "rerank": dict(candidates=cands, **probe),
    }
    at, prev = {}, 0.0
    for name, opts in steps.items():
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            index.search(q, K, threads=1, **opts)
            ts.append(time.perf_counter() - t0)
        total = 1e6 * statistics.median(ts) / len(q)
        at[name], prev = max(0.0, total - prev), total
    at["total"] = prev
    at.setdefault("centres", 0.0)
    return at


def measure(settings: List[Setting], q: np.ndarray, truth: np.ndarray) -> None:
    import faiss

    for s in settings:
        s.recall = recall_at(s.search(q, 1), truth, K)
    for _ in range(rounds(ROUNDS)):  # every setting once per round: a slow spell hits all alike
        for threads in (1, 2):
            faiss_threads(threads)
            for s in settings:
                s.search(q[:WARM_QUERIES], threads)
                t0 = time.perf_counter()
                s.search(q, threads)
                s.qps[threads].append(len(q) / (time.perf_counter() - t0))
    faiss.omp_set_num_threads(1)
    one = q[: 1 if SMOKE else LATENCY_QUERIES]
    for s in settings:
        ts = []
        for i in range(len(one)):
            t0 = time.perf_counter()
            s.search(one[i : i + 1], 1)
            ts.append(time.perf_counter() - t0)
        s.latency_us = 1e6 * statistics.median(ts)


def best_at(
    settings: List[Setting],
    engine_prefix: str,
    target: float,
    threads: int = 1,
    exact: bool = False,
):
    ok = [
        s
        for s in settings
        if (s.engine == engine_prefix or (s.engine.startswith(engine_prefix + " ") and not exact))
        and s.recall >= target
    ]
    return max(ok, key=lambda s: statistics.median(s.qps[threads]), default=None)


def qps(s: Setting, threads: int = 1) -> float:
    return statistics.median(s.qps[threads])


def best_table(settings: List[Setting], q: np.ndarray) -> tuple:
    """The best one-thread QPS of each engine at each recall target (setting, bytes/doc), the
    ratio of hashpivot's best to the best peer's, and hashpivot's profile at its best settings."""
    engines = sorted({s.engine for s in settings})
    rows, ratios, profiles = [], [], []
    for target in TARGETS:
        best = {e: best_at(settings, e, target, exact=True) for e in engines}
        for e in engines:
            b = best[e]
            rows.append(
                [f">= {target:.2f}", e, "-", "-", "-", "-"]
                if b is None
                else [
                    f">= {target:.2f}",
                    e,
                    b.label,
                    f"{b.recall:.3f}",
                    f"{qps(b):,.0f}",
                    f"{b.bytes_per_doc:,.0f}",
                ]
            )
        ours = [best[e] for e in engines if e.startswith("hashpivot") and best[e]]
        peers = [best[e] for e in engines if not e.startswith("hashpivot") and best[e]]
        peers = [p for p in peers if p.engine != "faiss FlatIP"]
        if ours and peers:
            h, p = max(ours, key=qps), max(peers, key=qps)
            ratios.append(
                f"- recall@10 >= {target:.2f}, one thread: {h.engine} ({h.label}) "
                f"{qps(h):,.0f} QPS vs the best peer, {p.engine} ({p.label}) {qps(p):,.0f} QPS: "
                f"**{qps(h) / qps(p):.2f}x**; latency {h.latency_us:,.0f} vs "
                f"{p.latency_us:,.0f} µs"
            )
            prof = h.profile(q)
            if prof:
                profiles.append(
                    [f">= {target:.2f}", f"{h.engine} ({h.label})"]
                    + [f"{prof[k]:.1f}" for k in ("centres", "scan", "re-score", "rerank", "total")]
                )
    table = markdown_table(
        ["recall@10", "engine", "best setting", "recall", "QPS 1 thread", "resident B/doc"], rows
    )
    prof_table = (
        markdown_table(
            [
                "target",
                "hashpivot setting",
                "list choice µs",
                "scan µs",
                "re-score µs",
                "rerank µs",
                "total µs",
            ],
            profiles,
        )
        if profiles
        else ""
    )
    return table, ratios, prof_table


def run(n: int, kind: str, args) -> Dict:
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
        x, q, truth = scale_corpus.load(n, cache, kind)
    tune_q, q_eval, truth_eval = q[:TUNE_QUERIES], q[TUNE_QUERIES:], truth[TUNE_QUERIES:]
    print(f"N={n}: {len(q_eval)} evaluation queries, {len(tune_q)} for tuning", file=sys.stderr)
    settings = hashpivot_engines(x, n, tune_q, args.quick, cache, kind)
    xa = np.asarray(x)
    settings += faiss_engines(xa, cache, n, args.quick, kind)
    settings += scann_engines(xa, n, args.quick) + usearch_engines(xa, n, args.quick)
    measure(settings, q_eval, truth_eval)
    best, ratios, prof = best_table(settings, q_eval)
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
    return {
        "n": n,
        "kind": kind,
        "table": table,
        "summary": ratios,
        "best": best,
        "profile": prof,
        "settings": settings,
    }


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
            color = plt.cm.tab20(names.index(name) % 20)  # one colour per engine, all panels
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", color=color, alpha=0.3)
            best = frontier(pts)
            ax.plot([p[0] for p in best], [p[1] for p in best], "o-", color=color, ms=3, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 (300 real queries)")
        ax.set_xlim(0.8, 1.0)
        ax.set_ylabel("QPS, one thread")
        ax.set_title(f"N = {n}")
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
        out.append((f"{r['n']:,}, {r['kind']}", engines))
    return out


def panels_from_report(path: Path) -> List[tuple]:
    """The same panels read back from a report this script wrote (to redraw without rerunning)."""
    out: List[tuple] = []
    every = False  # inside a section's table of every setting
    for line in path.read_text().splitlines():
        if line.startswith("## N = "):
            out.append((line[7:], {}))
            every = False
        elif line.startswith("Every setting"):
            every = True
        elif every and line.startswith("| ") and not line.startswith("| engine"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[-1][1].setdefault(cells[0], []).append(
                (float(cells[2]), float(cells[3].replace(",", "")))
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--kind", nargs="+", choices=scale_corpus.KINDS, default=["realistic"])
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
        f"`python bench/bench_scale.py --n {' '.join(map(str, a.n))} --kind {' '.join(a.kind)}`\n",
    ]
    results = []
    for kind in a.kind:
        for n in a.n:  # the report is rewritten after each N: a long run keeps what it measured
            if n <= len(scale_corpus.shared()[0]) and kind != a.kind[0]:
                continue  # N=10000 is the real corpus for every kind: measured once
            r = run(n, kind, a)
            results.append(r)
            text += [
                f"\n## N = {r['n']:,}, {kind}\n",
                *r["summary"],
                "",
                "Best one-thread QPS of each engine at each recall target:\n",
                r["best"],
                "",
                "hashpivot's query by stage at its best settings (µs a query, one thread):\n",
                r["profile"],
                "",
                "Every setting:\n",
                r["table"],
            ]
        out = "\n".join(text)
        print(out, flush=True)
        if a.out:
            Path(a.out).write_text(out + "\n")
    if a.plot:
        plot(panels_of(results), Path(a.plot))


if __name__ == "__main__":
    main()
