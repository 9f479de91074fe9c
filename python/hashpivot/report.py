"""The evaluation report of ``hashpivot eval`` and the demo: the notebook protocol, known-item
retrieval, real text queries against exact float search, pivot selections, sizes, the
threshold sweep; as Markdown (and JSON and a plot with ``report``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import InvalidInputError


def evaluate_report(
    index,
    x,
    enc,
    docs,
    queries,
    thresholds,
    limits,
    n_queries,
    report: Optional[Path],
    query_embeddings: Optional[np.ndarray] = None,
) -> str:
    from .evaluate import (
        known_item,
        notebook_protocol,
        pivot_methods,
        plot,
        real_queries,
        threshold_sweep,
        to_markdown,
    )

    if n_queries < 1:
        raise InvalidInputError("--n-queries must be at least 1")
    pivots = index.pivots is not None
    results = {}
    parts = []
    if pivots:
        results["notebook"] = notebook_protocol(
            index, x, n_queries=n_queries, thresholds=thresholds, limits=limits
        )
        parts += [
            "### Notebook protocol (documents as queries, exact cosine top-10)\n",
            to_markdown(results["notebook"]),
        ]
    qe = query_embeddings
    if queries:
        row_of = {d["id"]: i for i, d in enumerate(docs)}
        rel = [[row_of[r] for r in q["relevant"] if r in row_of] for q in queries]
        keep = [i for i, r in enumerate(rel) if r]
        if keep:
            qe = (
                enc.encode_queries([queries[i]["text"] for i in keep], progress=len(keep) > 200)
                if qe is None
                else qe[keep]
            )
            rows = known_item(index, qe, [rel[i] for i in keep], doc_embeddings=x)
            results["known_item"] = rows
            parts += [f"\n### Known-item retrieval ({len(keep)} text queries)\n", to_markdown(rows)]
    if qe is not None:
        real = real_queries(
            index,
            qe,
            x,
            None,
            limits=[L for L in (30, 100, 300, 1000) if len(x) > L] or [len(x)],
            modes=({"scoring": "asymmetric"},)
            if not pivots
            else ({"scoring": "hamming"}, {"scoring": "asymmetric"}),
        )
        results["real_queries"] = real
        parts += [
            "\n### Real text queries: top-10 against exact float search, by scoring "
            "and L candidates reranked\n",
            to_markdown(real),
        ]
    if pivots:
        pm = pivot_methods(index, x, n_queries=n_queries, seed=42)
        if qe is not None:
            pm += pivot_methods(index, x, qe, seed=42)
        results["pivot_methods"] = pm
        parts += [
            "\n### Pivot selection: threshold and cut at equal filter recall\n",
            to_markdown(pm),
        ]
    st = index.stats()
    parts += [
        f"\nBytes per document: {st['bytes_per_doc']:.0f} in all, "
        f"{st['index_bytes_per_doc']:.0f} without the stored vectors "
        f"({st['code_bytes_per_doc']} of code)"
    ]
    if index.tuned:
        parts += [
            "\nTuned search settings: " + ", ".join(f"{k}={v}" for k, v in index.tuned.items())
        ]
    results["stats"] = st
    if pivots:
        sweep = threshold_sweep(
            index,
            x,
            target=0.97,
            limits=[L for L in limits if len(x) > L] or [len(x) - 1],
            n_queries=n_queries,
        )
        results["threshold_sweep"] = sweep
        best = sweep["best"]
        parts += [
            "\n### Threshold sweep: the cheapest configuration reaching recall@10 >= 0.97\n",
            "none reaches it" if best is None else to_markdown([best]),
        ]
    text = "\n".join(parts)
    if report:
        report.mkdir(parents=True, exist_ok=True)
        (report / "report.md").write_text(text + "\n")
        (report / "report.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
        if "notebook" in results:
            plot(results["notebook"], report / "recall_vs_time.png")
    return text
