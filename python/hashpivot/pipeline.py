"""The build pipeline behind ``hashpivot build`` and the demo: records → embeddings (embedded,
cached, or given row-aligned with the input) → index → one save of the index with its
documents (one generation)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .defaults import choose_build
from .errors import InvalidInputError
from .layouts import check_build_options
from .passages import sentences

# tune() at build: synthetic text queries, each one sentence of a random passage cut to a search
# box's length, embedded as a query (the query side of the model: real queries sit there, not
# on the passages). For a 0.95 target they held 0.970-0.979 of real queries' top-10 at 10k to
# 1M rows (bench/DEFAULTS_RESULTS.md).
TUNE_QUERIES = 200
QUERY_CHARS = (15, 60)  # shortest sentence taken, and the length it is cut to
DEFAULT_TARGET = 0.95


def sentence_queries(texts: Sequence[str], enc, m: int = TUNE_QUERIES, seed: int = 0):
    """m synthetic text queries from these passages, embedded by the encoder as queries."""
    rng = np.random.default_rng(seed)
    shortest, longest = QUERY_CHARS
    out: List[str] = []
    for i in rng.permutation(len(texts)):
        if len(out) == m:
            break
        whole = sentences(str(texts[i]))
        long_enough = [t for t in whole if len(t) >= shortest] or whole
        if long_enough:
            out.append(long_enough[rng.integers(len(long_enough))][:longest])
    return enc.encode_queries(out, progress=False)


def tune_on_texts(index, texts: Sequence[str], enc, target: float = DEFAULT_TARGET):
    """index.tune() on synthetic text queries from the passages (see TUNE_QUERIES)."""
    q = sentence_queries(texts, enc)
    return index.tune(q, target_recall=target, query_source="sentences of the passages as queries")


def check_out(out: Path) -> None:
    """A build may write into a new or empty directory, or over a hashpivot index."""
    from .storage import HEADER

    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / HEADER).is_file():
        raise InvalidInputError(
            f"--out {out} is not empty and holds no hashpivot index: choose a new or "
            "empty directory (nothing was written)"
        )


def build_index(
    records: Sequence[Dict],
    out: Path,
    model: str,
    bits: Optional[int],
    pivots: int,
    store: Optional[str],
    cache: Optional[Path],
    device: str = "auto",
    embeddings: Optional[np.ndarray] = None,
    layout: Optional[str] = None,
    seed: int = 42,
    pivot_method: str = "furthest_first",
    metric: str = "cosine",
    allow_download: bool = False,
    extra_bits: Optional[int] = None,
    tune: Optional[float] = DEFAULT_TARGET,
):
    """Embeds the records (or takes ``embeddings``, row i = record i), builds the index, tunes
    it to recall ``tune`` on synthetic text queries (None: not tuned) and saves it with the
    records as its documents, in one generation: a failure leaves the previous index and
    documents as they were. ``layout``, ``bits``, ``extra_bits``: None chooses them from the
    number of passages (hashpivot.defaults)."""
    from .documents import DocStore
    from .embed import embed_corpus, get_encoder
    from .index import Index

    if not records:
        raise InvalidInputError("the corpus has no usable records (all too short or empty?)")
    check_out(out)
    docs = DocStore.from_records(records)  # a value JSON cannot hold fails before the work
    enc = get_encoder(model, device=device, allow_download=allow_download)
    # the model's dimension is known before a passage is embedded: check the build against it
    choice = choose_build(len(records), enc.dim, store, layout, bits, extra_bits, n_pivots=pivots)
    check_build_options(
        choice.layout,
        dim=enc.dim,
        n_bits=choice.n_bits,
        n_pivots=pivots,
        extra_bits=choice.extra_bits,
    )
    t0 = time.perf_counter()
    if embeddings is None:
        x = embed_corpus(enc, [r["text"] for r in records], cache, progress=True)
    elif embeddings.shape != (len(records), enc.dim):
        raise InvalidInputError(
            f"--embeddings has shape {embeddings.shape}, but the corpus has "
            f"{len(records)} records and {enc.name} gives dimension {enc.dim}"
        )
    else:
        x = np.asarray(embeddings, dtype=np.float32)
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = Index.build(
        x,
        n_bits=bits,
        n_pivots=pivots,
        store=store,
        device=device,
        layout=layout,
        seed=seed,
        pivot_method=pivot_method,
        metric=metric,
        extra_bits=extra_bits,
        meta={"encoder": enc.info(), "corpus_size": len(records)},
    )
    build_s = time.perf_counter() - t0
    tuned = None
    if tune is not None and store is not None:  # tune() measures against the stored vectors
        tuned = tune_on_texts(index, [r["text"] for r in records], enc, tune)
    index.documents = docs
    index.save(out)  # the index and its documents: one header, one generation
    return (
        index,
        enc,
        x,
        {
            "embed_s": embed_s,
            "passages_per_s": len(records) / max(embed_s, 1e-9),
            "index_build_s": build_s,
            "tuned": tuned,
            "choice": choice,
        },
    )


def aligned_embeddings(pre: np.ndarray, corpus, source: str) -> np.ndarray:
    """The rows of ``pre`` (row i = input record i) of the records kept from the corpus."""
    if corpus.total is not None and len(pre) != corpus.total:
        raise InvalidInputError(
            f"--embeddings has {len(pre):,} rows but {source} holds {corpus.total:,} records: "
            "row i must be the embedding of record i"
        )
    if corpus.rows and corpus.rows[-1] >= len(pre):
        raise InvalidInputError(
            f"--embeddings has {len(pre):,} rows; record {corpus.rows[-1]:,} of {source} needs more"
        )
    split = len(corpus.rows) - len(set(corpus.rows))
    if split:
        raise InvalidInputError(
            f"--embeddings holds one embedding a record, but {split:,} passage(s) came from "
            "records longer than --passage-chars: give --passage-chars 0 to keep each record "
            "one passage (the model reads only its window), or leave out --embeddings"
        )
    return np.asarray(pre[np.asarray(corpus.rows, dtype=np.int64)], dtype=np.float32)


def report_dropped(corpus, min_chars: int) -> None:
    if corpus.dropped:
        shown = ", ".join(f"{rid!r} ({where})" for where, rid in corpus.dropped[:3])
        more = f" and {len(corpus.dropped) - 3:,} more" if len(corpus.dropped) > 3 else ""
        why = f"shorter than --min-chars {min_chars}" if min_chars > 1 else "with empty text"
        print(
            f"hashpivot: skipped {len(corpus.dropped):,} record(s) {why}: {shown}{more}",
            file=sys.stderr,
        )


def _documents(index) -> Tuple[List[Dict], Dict[str, List[int]]]:
    """The stored documents (row i = passage i), read once, and the row ids (the rows the index
    holds) of each live passage id and each live document id (`doc`: all of its passages)."""
    if index.documents is None:
        raise InvalidInputError("this index has no stored documents: it was not built by hashpivot")
    docs = list(index.documents.all())
    live = set(np.asarray(index.ids).tolist())
    rows: Dict[str, List[int]] = {}
    for i, d in enumerate(docs):
        if i in live:
            pid = str(d.get("id", i))
            rows.setdefault(pid, []).append(i)
            if str(d.get("doc", pid)) != pid:
                rows.setdefault(str(d["doc"]), []).append(i)
    return docs, rows


def add_records(path: Path, records: Sequence[Dict], cache: Optional[Path], device: str = "auto"):
    """Embeds the records with the index's own encoder, adds them and saves the index and its
    documents as one generation (a reader sees all of them or none). A record (or document) id
    the index already holds is refused before anything is embedded. Returns (index, seconds
    embedding)."""
    from .documents import DocStore
    from .embed import embed_corpus, encoder_from_info
    from .index import Index

    if not records:
        raise InvalidInputError("the corpus has no usable records (all too short or empty?)")
    index = Index.load(path)
    old, live = _documents(index)
    again = [r["id"] for r in records if str(r["id"]) in live or str(r.get("doc")) in live]
    if again:
        raise InvalidInputError(
            f"{len(again)} record id(s) are already in the index (e.g. {again[0]!r}): remove "
            "them first (hashpivot remove) to replace them"
        )
    DocStore.from_records(records)  # a value JSON cannot hold fails before the embedding
    info = index.meta.get("encoder")
    if not info:
        raise InvalidInputError(f"{path} records no encoder: add embeddings with Index.add()")
    enc = encoder_from_info(info, device)
    t0 = time.perf_counter()
    x = embed_corpus(enc, [r["text"] for r in records], cache, progress=True)
    seconds = time.perf_counter() - t0
    index.add(x, ids=np.arange(len(old), len(old) + len(records)))  # row i = document i
    index.save(path, documents=old + list(records))
    return index, seconds


def remove_records(path: Path, record_ids: Sequence[str]):
    """Removes the records with these ids (a document id: all of its passages) and saves, as
    one generation. Every id must be in the index (else nothing changes). Returns the index."""
    from .index import Index

    index = Index.load(path)
    _, live = _documents(index)
    missing = [r for r in record_ids if r not in live]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} id(s) are not in the index (e.g. {missing[0]!r}); nothing removed"
        )
    rows = sorted({row for r in record_ids for row in live[r]})
    index.remove(rows)
    index.save(path)  # the documents of removed rows stay stored: ids are never reused
    return index
