"""Evaluation: the research notebook's protocol, and what it lacked.

* :func:`notebook_protocol` — query documents drawn with a seed, exact cosine top-10 (the query
  itself excluded) as ground truth; for no filter and each pivot threshold: the share of
  documents cut, filter recall (ground truth that survives the filter), recall@10 within the
  first L Hamming candidates, recall@10 after the exact rerank of L candidates, latency.
* :func:`known_item` — real text queries with judged relevant passages: recall@1/10/100 and
  MRR@10 of hashed search (with rerank) and of exact float search.
* :func:`to_markdown` — tables for the README and the CLI.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from .index import Index
from .kernels import hamming_distances, pivot_filter
from .pivots import pivot_table, select_pivots
from .truth import exact_topk


def _latency(index: Index, queries: np.ndarray, **kw) -> Dict[str, float]:
    single = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q, **kw)
        single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    index.search(queries, **kw)
    batch = time.perf_counter() - t0
    return {
        "latency_ms_median": 1e3 * float(np.median(single)),
        "latency_ms_p99": 1e3 * float(np.percentile(single, 99)),
        "qps_batch": len(queries) / batch,
    }


def notebook_protocol(
    index: Index,
    embeddings: np.ndarray,
    n_queries: int = 100,
    seed: int = 42,
    thresholds: Sequence[int] = (15, 20),
    limits: Sequence[int] = (100, 500, 1000),
    k: int = 10,
    timing: bool = True,
) -> List[Dict[str, object]]:
    """The notebook's table, one dict per method. ``index`` holds ``embeddings`` with ids
    0..n-1 (the default of :meth:`Index.build`)."""
    n = len(embeddings)
    rng = np.random.default_rng(seed)
    qi = np.sort(rng.choice(n, min(n_queries, n), replace=False))
    q = embeddings[qi]
    gt = exact_topk(q, embeddings, k, exclude=qi)
    qc = index.itq.encode(q)
    qd = hamming_distances(qc, index.pivots)
    id_to_row = np.empty(int(index.ids.max()) + 1, dtype=np.int64)
    id_to_row[index.ids] = np.arange(len(index))
    rows_out = []
    for t in [None, *thresholds]:
        row: Dict[str, object] = {"method": "no filter" if t is None else f"pivot t={t}"}
        if t is None:
            keep_share, frec = 1.0, 1.0
        else:
            kept, hits = 0, 0
            for j in range(len(qi)):
                rows = pivot_filter(index.table, qd[j], t)
                kept += len(rows)
                hits += np.isin(id_to_row[gt[j]], rows).sum()
            keep_share, frec = kept / (len(qi) * len(index)), hits / gt.size
        row["cut"] = 1.0 - keep_share
        row["filter_recall"] = frec
        _, cand_ids = index.search_codes(qc, max(limits) + 1, threshold=t)
        for L in limits:
            rec = []
            for j in range(len(qi)):
                c = cand_ids[j][cand_ids[j] != qi[j]][:L]
                rec.append(np.isin(gt[j], c).mean())
            row[f"R@{k} L={L}"] = float(np.mean(rec))
        if index.vectors is not None:
            for L in limits:
                _, ids = index.search(q, k=k + 1, threshold=t, candidates=L + 1, scoring="hamming")
                rec = [np.isin(gt[j], ids[j][ids[j] != qi[j]][:k]).mean() for j in range(len(qi))]
                row[f"rerank R@{k} L={L}"] = float(np.mean(rec))
        if timing:
            row.update(
                _latency(index, q, k=k, threshold=t, candidates=max(limits), scoring="hamming")
            )
        rows_out.append(row)
    return rows_out


def known_item(
    index: Index,
    query_embeddings: np.ndarray,
    relevant: Sequence[Sequence[int]],
    doc_embeddings: Optional[np.ndarray] = None,
    candidates: int = 300,
    threshold: Optional[int] = None,
    scoring: str = "asymmetric",
) -> List[Dict[str, object]]:
    """Recall@1/10/100 and MRR@10 of the judged relevant ids, for hashed search with rerank
    (and exact float search when ``doc_embeddings`` are given, ids = rows)."""

    def score(ranked: np.ndarray) -> Dict[str, float]:
        rel = [set(int(r) for r in rs) for rs in relevant]
        hit_rank = []
        for j, ids in enumerate(ranked):
            pos = [i for i, x in enumerate(ids) if int(x) in rel[j]]
            hit_rank.append(pos[0] if pos else None)
        res = {
            f"recall@{c}": float(np.mean([r is not None and r < c for r in hit_rank]))
            for c in (1, 10, 100)
        }
        res["MRR@10"] = float(
            np.mean([1.0 / (r + 1) if r is not None and r < 10 else 0.0 for r in hit_rank])
        )
        return res

    rows = []
    if doc_embeddings is not None:
        rows.append(
            {"method": "exact float", **score(exact_topk(query_embeddings, doc_embeddings, 100))}
        )
    _, ids = index.search(
        query_embeddings,
        k=100,
        candidates=max(candidates, 100),
        threshold=threshold,
        scoring=scoring,
    )
    name = f"hashpivot {index.n_bits} bits, {scoring}, rerank L={candidates}"
    rows.append({"method": name if threshold is None else f"{name} t={threshold}", **score(ids)})
    return rows


def to_markdown(rows: List[Dict[str, object]], percent: bool = False) -> str:
    if not rows:
        return ""
    cols = list(rows[0].keys())
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot(rows: List[Dict[str, object]], path) -> None:
    """Recall@10 (after rerank at the largest L) against median search time, a point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        rec = [v for k, v in r.items() if str(k).startswith("rerank R@")]
        if rec and "latency_ms_median" in r:
            ax.scatter(r["latency_ms_median"], rec[-1])
            ax.annotate(str(r["method"]), (r["latency_ms_median"], rec[-1]), fontsize=8)
    ax.set_xlabel("median search time per query (ms)")
    ax.set_ylabel("recall@10 after rerank")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def real_queries(
    index: Index,
    query_embeddings: np.ndarray,
    doc_embeddings: np.ndarray,
    relevant: Optional[Sequence[Sequence[int]]] = None,
    limits: Sequence[int] = (30, 100, 300, 1000),
    modes: Sequence[Dict[str, object]] = ({"scoring": "hamming"}, {"scoring": "asymmetric"}),
    k: int = 10,
) -> List[Dict[str, object]]:
    """Real text queries against the index, per scoring mode and candidate count L (exact
    rerank of L candidates): overlap of the top-10 with exact float search, hit@10 and MRR@10
    of the judged relevant ids (when given), and batched QPS."""
    exact = exact_topk(query_embeddings, doc_embeddings, k)
    rel = [set(int(r) for r in rs) for rs in relevant] if relevant is not None else None
    rows = []
    if rel is not None:
        rows.append(
            {
                "method": "exact float",
                "L": None,
                "overlap@10": 1.0,
                **_hits(exact, rel),
                "QPS": None,
            }
        )
    for mode in modes:
        for L in limits:
            t0 = time.perf_counter()
            _, ids = index.search(query_embeddings, k=k, candidates=L, **mode)
            qps = len(query_embeddings) / (time.perf_counter() - t0)
            row = {
                "method": " ".join(
                    f"{v}" if key == "scoring" else f"{key}={v}" for key, v in mode.items()
                ),
                "L": L,
                "overlap@10": float(
                    np.mean([np.isin(ids[j], exact[j]).sum() / k for j in range(len(ids))])
                ),
            }
            if rel is not None:
                row.update(_hits(ids, rel))
            row["QPS"] = qps
            rows.append(row)
    return rows


def _hits(ranked: np.ndarray, rel: Sequence[set]) -> Dict[str, float]:
    first = []
    for j, ids in enumerate(ranked):
        pos = [i for i, x in enumerate(ids[:10]) if int(x) in rel[j]]
        first.append(pos[0] if pos else None)
    return {
        "hit@10": float(np.mean([p is not None for p in first])),
        "MRR@10": float(np.mean([1.0 / (p + 1) if p is not None else 0.0 for p in first])),
    }


def pivot_linf_histograms(
    codes: np.ndarray, pivots: np.ndarray, query_codes: np.ndarray, truth: np.ndarray
) -> Dict[str, np.ndarray]:
    """Histograms (over 0..n_bits) of the pivot-space distance max_i |d(q, p_i) - d(x, p_i)|
    from each query to every document (``all``) and to its true neighbours (``truth``: rows of
    ``codes``, -1 ignored). The band filter with threshold t keeps exactly the documents at
    pivot-space distance <= t, so cumulative sums give the cut and the filter recall of every t."""
    n_bits = codes.shape[1] * 8
    table = pivot_table(codes, pivots).astype(np.int16)  # (n, P)
    qd = hamming_distances(query_codes, pivots).astype(np.int16)  # (nq, P)
    h_all = np.zeros(n_bits + 1, dtype=np.int64)
    h_true = np.zeros(n_bits + 1, dtype=np.int64)
    chunk = max(1, (1 << 24) // max(1, table.size))  # about 32 MB of int16 at a time
    for s in range(0, len(qd), chunk):
        linf = np.abs(qd[s : s + chunk, None, :] - table[None, :, :]).max(axis=2)  # (c, n)
        h_all += np.bincount(linf.ravel(), minlength=n_bits + 1)
        t = truth[s : s + chunk]
        picked = np.take_along_axis(linf, np.maximum(t, 0), axis=1)[t >= 0]
        h_true += np.bincount(picked.ravel(), minlength=n_bits + 1)
    return {"all": h_all, "truth": h_true}


def pivot_methods(
    index: Index,
    embeddings: np.ndarray,
    query_embeddings: Optional[np.ndarray] = None,
    methods: Sequence[str] = ("furthest_first", "incremental"),
    targets: Sequence[float] = (0.90, 0.95, 0.97),
    n_queries: int = 100,
    seed: int = 42,
    k: int = 10,
    sample: int = 10000,
) -> List[Dict[str, object]]:
    """Which pivot selection prunes more at equal filter recall. For each method, as many
    pivots as the index has are chosen from the documents' codes (same seed and sample size as
    :meth:`Index.build`); for each target filter recall (share of the exact cosine top-k that
    passes the filter), the smallest threshold t reaching it and the share of documents it
    cuts. Queries: ``query_embeddings`` (real text queries) when given, else the notebook's
    ``n_queries`` documents drawn with ``seed``, themselves excluded."""
    codes = index.itq.encode(embeddings)
    n_piv = int(index.pivots.shape[0])
    if query_embeddings is None:
        rng = np.random.default_rng(seed)
        qi = np.sort(rng.choice(len(embeddings), min(n_queries, len(embeddings)), replace=False))
        q, truth, kind = (
            embeddings[qi],
            exact_topk(embeddings[qi], embeddings, k, exclude=qi),
            f"{len(qi)} documents",
        )
    else:
        q = query_embeddings
        truth, kind = exact_topk(q, embeddings, k), f"{len(q)} text queries"
    qc = index.itq.encode(q)
    rows = []
    for method in methods:
        pivots = select_pivots(codes, n_piv, method, sample, seed)
        h = pivot_linf_histograms(codes, pivots, qc, truth)
        kept = np.cumsum(h["all"]) / h["all"].sum()  # share kept by threshold t
        frec = np.cumsum(h["truth"]) / h["truth"].sum()  # filter recall of threshold t
        row: Dict[str, object] = {"pivots": method, "queries": kind}
        for target in targets:
            t = int(np.argmax(frec >= target - 1e-12))
            row[f"t (filter recall >= {target:.2f})"] = t
            row[f"cut at {target:.2f}"] = float(1.0 - kept[t])
        rows.append(row)
    return rows


def threshold_sweep(
    index: Index,
    embeddings: np.ndarray,
    target: float = 0.97,
    limits: Sequence[int] = (100, 300, 1000),
    thresholds: Optional[Sequence[int]] = None,
    n_queries: int = 100,
    seed: int = 42,
    k: int = 10,
) -> Dict[str, object]:
    """The cheapest configuration (median latency of one query, rerank on) whose recall@10 of
    the notebook protocol reaches ``target``, over pivot thresholds (None = no filter) and
    candidate counts L. Returns {"best": row or None, "rows": every configuration tried}."""
    n = len(embeddings)
    rng = np.random.default_rng(seed)
    qi = np.sort(rng.choice(n, min(n_queries, n), replace=False))
    q = embeddings[qi]
    gt = exact_topk(q, embeddings, k, exclude=qi)
    if thresholds is None:
        thresholds = list(range(8, index.n_bits // 4 + 1, 2))
    rows = []
    for t in [None, *thresholds]:
        for L in limits:
            kw = dict(k=k + 1, threshold=t, candidates=L + 1, scoring="hamming")
            _, ids = index.search(q, **kw)
            rec = float(
                np.mean(
                    [np.isin(gt[j], ids[j][ids[j] != qi[j]][:k]).mean() for j in range(len(qi))]
                )
            )
            rows.append(
                {
                    "threshold": t,
                    "L": L,
                    f"recall@{k}": rec,
                    **_latency(index, q[: min(50, len(q))], **kw),
                }
            )
    ok = [r for r in rows if r[f"recall@{k}"] >= target]
    best = min(ok, key=lambda r: r["latency_ms_median"]) if ok else None
    return {"best": best, "rows": rows}
