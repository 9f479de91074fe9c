"""Corpora: local JSONL / Parquet / CSV files (or, asked for explicitly, a Hugging Face Hub
dataset), the documents an index returns (:class:`DocStore`), and the offline demo corpus of
Japanese manual pages from Debian's manpages-ja packages.

Every loader yields the same records: ``{"id", "doc", "title", "source", "text", ...}`` (text
cut to ``max_chars``, records shorter than ``min_chars`` dropped, any other fields of the row
kept). A corpus argument is a local file unless it starts with ``hf://`` (or ``hub=True``): a
mistyped path fails at once with "no such file". Query files are JSONL with
``{"qid", "text", "relevant": [ids]}``.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .documents import DocStore, plain
from .errors import DuplicateIdError, InvalidInputError

DEMO_DATA_ENV = "HASHPIVOT_DEMO_DATA"
DEMO_PACKAGES = ("manpages-ja", "manpages-ja-dev")
HUB_PREFIX = "hf://"
LOCAL_FORMATS = (".jsonl", ".json", ".parquet", ".csv")
CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default (128 KiB a field) refuses long texts
BASE_FIELDS = ("id", "doc", "title", "source", "text")


@dataclass
class Corpus:
    """What a corpus file gave: the ``records`` kept, the input ``rows`` they came from (row
    i of the file, counted from 0, so that row-aligned embeddings stay with their record),
    the ``total`` rows the input holds (None for a Hub stream cut by a limit), and the
    ``dropped`` records (where, id) shorter than ``min_chars``."""

    records: List[Dict] = field(default_factory=list)
    rows: List[int] = field(default_factory=list)
    total: Optional[int] = 0
    dropped: List[Tuple[str, str]] = field(default_factory=list)


def _records(
    rows: Iterable[Tuple[str, object]],
    text_field: str,
    title_field: Optional[str],
    id_field: Optional[str],
    source: str,
    max_chars: int,
    min_chars: int,
    limit: Optional[int],
    count_rest: bool = True,
) -> Corpus:
    """rows: (where, row) pairs, `where` naming the file and line for error messages. Past
    ``limit`` records the rest of the rows are only counted (``count_rest``)."""
    out = Corpus()
    first_seen: Dict[str, str] = {}
    total = 0
    for i, (where, row) in enumerate(rows):
        total = i + 1
        if limit is not None and len(out.records) >= limit:
            if not count_rest:
                out.total = None
                return out
            continue
        if not isinstance(row, dict):
            raise InvalidInputError(
                f"{where}: a record must be a JSON object with a "
                f"{text_field!r} field, got {type(row).__name__}"
            )
        if text_field not in row:
            raise InvalidInputError(
                f"{where}: the record has no field {text_field!r} (fields: {sorted(row)}); "
                "choose one with --text-field"
            )
        rid = str(row[id_field]) if id_field and id_field in row else str(row.get("id", i))
        text = str(row[text_field] or "").strip()[:max_chars]
        if len(text) < min_chars:
            out.dropped.append((where, rid))
            continue
        if rid in first_seen:
            raise DuplicateIdError(
                f"{where}: id {rid!r} repeats the record at {first_seen[rid]}; every document "
                "needs its own id"
            )
        first_seen[rid] = where
        title = str(row.get(title_field, "") or "") if title_field else ""
        rec = {
            str(k): plain(v, where, str(k))
            for k, v in row.items()
            if k not in (text_field, title_field, id_field)
        }
        rec.update(
            {
                "id": rid,
                "doc": str(row.get("doc", rid)),
                "title": title,
                "source": str(row.get("source", source)),
                "text": text,
            }
        )
        out.records.append(rec)
        out.rows.append(i)
    out.total = total
    return out


def _open_text(path: Path):
    """A UTF-8 text file; a byte-order mark (as spreadsheet programs write) is dropped."""
    return open(path, encoding="utf-8-sig", newline="")


def _jsonl_rows(path: Path) -> Iterator[Tuple[str, object]]:
    with _open_text(path) as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise InvalidInputError(
                        f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})"
                    ) from None
        except UnicodeDecodeError as e:
            raise InvalidInputError(f"{path}:{lineno + 1}: not UTF-8 text ({e.reason})") from None


def _csv_rows(path: Path) -> Iterator[Tuple[str, object]]:
    old_limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    lineno = 1
    try:
        with _open_text(path) as f:
            reader = csv.DictReader(f)
            try:
                for row in reader:
                    lineno = reader.line_num
                    if None in row:  # more fields than the header names
                        raise InvalidInputError(
                            f"{path}:{lineno}: {len(row) - 1 + len(row[None])} fields, the "
                            f"header names {len(row) - 1}"
                        )
                    yield f"{path}:{lineno}", row
            except csv.Error as e:
                raise InvalidInputError(f"{path}:{reader.line_num}: bad CSV ({e})") from None
            except UnicodeDecodeError as e:
                raise InvalidInputError(
                    f"{path}:{lineno + 1}: not UTF-8 text ({e.reason})"
                ) from None
    finally:
        csv.field_size_limit(old_limit)


def _table_rows(path: Path) -> Iterator[Tuple[str, object]]:
    if path.suffix == ".csv":  # the standard library reads CSV: no extra dependency
        yield from _csv_rows(path)
        return
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError("reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise InvalidInputError(f"{path} is not a readable Parquet file: {e}") from None
    row_no = 0
    for batch in pf.iter_batches():
        for row in batch.to_pylist():
            row_no += 1
            yield f"{path}: row {row_no}", row


def load_corpus(source: str, **options) -> List[Dict]:
    """The records of a corpus (see :func:`read_corpus` for the options)."""
    return read_corpus(source, **options).records


def read_corpus(
    source: str,
    text_field: str = "text",
    title_field: Optional[str] = "title",
    id_field: Optional[str] = "id",
    max_chars: int = 500,
    min_chars: int = 50,
    limit: Optional[int] = None,
    config: Optional[str] = None,
    split: str = "train",
    hub: bool = False,
) -> Corpus:
    """A local .jsonl/.json/.parquet/.csv file, or (``hf://NAME`` or ``hub=True``) a Hugging
    Face Hub dataset streamed through ``datasets`` (needs network), e.g.
    ``hf://wikimedia/wikipedia`` with ``config="20231101.ja"``. Records keep the input's order;
    an id given twice is a :class:`DuplicateIdError`."""
    if limit is not None and limit < 1:
        raise InvalidInputError(f"limit must be >= 1, got {limit}")
    if source.startswith(HUB_PREFIX) or hub:
        return _hub_corpus(
            source[len(HUB_PREFIX) :] if source.startswith(HUB_PREFIX) else source,
            text_field,
            title_field,
            id_field,
            max_chars,
            min_chars,
            limit,
            config,
            split,
        )
    path = Path(source)
    if not path.is_file():
        hint = (
            f" (a Hub dataset is named {HUB_PREFIX}{source})"
            if "/" in source and not path.exists() and not source.startswith((".", "/"))
            else ""
        )
        raise InvalidInputError(f"corpus file {source}: no such file{hint}")
    if path.suffix not in LOCAL_FORMATS:
        raise InvalidInputError(f"unsupported corpus file {source}: use .jsonl, .parquet or .csv")
    rows = _jsonl_rows(path) if path.suffix in (".jsonl", ".json") else _table_rows(path)
    return _records(rows, text_field, title_field, id_field, path.name, max_chars, min_chars, limit)


def _hub_corpus(
    name: str, text_field, title_field, id_field, max_chars, min_chars, limit, config, split
) -> Corpus:
    try:
        from datasets import load_dataset
    except ImportError:
        raise InvalidInputError("Hub datasets need `pip install datasets`") from None
    try:
        ds = load_dataset(name, config, split=split, streaming=True)
    except Exception as e:
        raise InvalidInputError(
            f"cannot open Hub dataset {name!r}: {str(e).splitlines()[0]}"
        ) from None
    rows = ((f"{name} row {i}", r) for i, r in enumerate(ds))
    return _records(
        rows, text_field, title_field, id_field, name, max_chars, min_chars, limit, False
    )


def load_queries(path: str) -> List[Dict]:
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"query file {path}: no such file")
    out: List[Dict] = []
    for where, q in _jsonl_rows(p):
        if not isinstance(q, dict) or "text" not in q:
            raise InvalidInputError(f"{where}: every query needs a 'text' field")
        out.append(
            {
                "qid": q.get("qid", str(len(out))),
                "text": str(q["text"]),
                "relevant": list(q.get("relevant", [])),
            }
        )
    return out


# ---- the demo corpus: Japanese manual pages ----
_ESCAPES = [
    (r"\\f[BIRP]|\\f\(..|\\f\[[^\]]*\]", ""),
    (r"\\\(em|\\\(en", "—"),
    (r"\\-", "-"),
    (r"\\&|\\c|\\%|\\:", ""),
    (r"\\\(..", ""),
    (r"\\\*\(..|\\\*.", ""),
    (r"\\e", "\\\\"),
    (r"\\ ", " "),
    (r"\\[|^~0]", ""),
    (r'\\".*$', ""),
]


def _clean(line: str) -> str:
    for pat, rep in _ESCAPES:
        line = re.sub(pat, rep, line)
    return line


def _japanese_share(text: str) -> float:
    ja = sum(1 for ch in text if "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff")
    return ja / max(1, len(text))


def parse_manpage(source: str) -> Dict[str, object]:
    """Groff man source -> {"name": NAME line, "paragraphs": [text, ...]} (the fallback parser
    where groff is absent: drops requests and comments, strips font and character escapes)."""
    name_lines: List[str] = []
    paras: List[str] = []
    section, cur = "", []

    def flush():
        if cur:
            paras.append(" ".join(" ".join(cur).split()))
            cur.clear()

    for raw in source.splitlines():
        if raw.startswith(('.\\"', "'\\\"")):
            continue
        if raw.startswith((".", "'")):
            req = raw[1:].split(None, 1)
            macro = req[0] if req else ""
            arg = _clean(req[1]).strip().strip('"') if len(req) > 1 else ""
            if macro in ("SH", "SS"):
                flush()
                section = arg.upper()
            elif macro in ("PP", "P", "LP", "TP", "IP", "HP", "sp", "br"):
                flush()
                if macro == "IP" and arg:
                    cur.append(arg.split('"')[0])
            elif macro in ("B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "SB") and arg:
                (name_lines if section in NAME_SECTIONS else cur).append(arg.replace('"', ""))
            continue
        text = _clean(raw).strip()
        if not text:
            flush()
        elif section in NAME_SECTIONS:
            name_lines.append(text)
        elif section not in SKIPPED_SECTIONS:
            cur.append(text)
    flush()
    return {"name": " ".join(" ".join(name_lines).split()), "paragraphs": [p for p in paras if p]}


NAME_SECTIONS = ("NAME", "名前")
SKIPPED_SECTIONS = ("SEE ALSO", "関連項目", "COLOPHON", "この文書について")
GROFF_LINE = 100_000  # a line length groff never wraps at: one paragraph, one line


def render_manpage(source: str) -> Optional[Dict[str, object]]:
    """Groff man source -> {"name", "paragraphs"} rendered by groff itself (``groff -k -Tutf8
    -mandoc``, Debian's groff-base): escapes, quotes and macros as man(1) shows them. None when
    groff is not installed."""
    groff = shutil.which("groff")
    if groff is None:
        return None
    r = subprocess.run(
        [groff, "-k", "-Tutf8", "-mandoc", f"-rLL={GROFF_LINE}n", "-P-cbou"],
        input=source.encode(),
        capture_output=True,
        env=dict(os.environ, GROFF_NO_SGR="1"),
        timeout=60,
    )
    if r.returncode != 0:
        return None
    lines = r.stdout.decode("utf-8", errors="replace").splitlines()
    body = [ln for ln in lines[1:-1]]  # the first and last lines are the page's header/footer
    name: List[str] = []
    paras: List[str] = []
    section, cur = "", []

    def flush() -> None:
        if cur:
            paras.append(" ".join(" ".join(cur).split()))
            cur.clear()

    for ln in body:
        if not ln.strip():
            flush()
        elif not ln[0].isspace():  # a section heading
            flush()
            section = ln.strip().upper()
        elif section in NAME_SECTIONS:
            name.append(ln.strip())
        elif section not in SKIPPED_SECTIONS:
            cur.append(ln.strip())
    flush()
    return {"name": " ".join(" ".join(name).split()), "paragraphs": [p for p in paras if p]}


def _passages(paragraphs: Sequence[str], max_chars: int, min_chars: int) -> List[str]:
    out, cur = [], ""
    for p in paragraphs:
        if cur and len(cur) + 1 + len(p) > max_chars:
            out.append(cur)
            cur = ""
        cur = (cur + " " + p).strip()
        while len(cur) > max_chars:
            out.append(cur[:max_chars])
            cur = cur[max_chars:]
    if cur:
        out.append(cur)
    return [t for t in out if len(t) >= min_chars]


def manpages_corpus(
    workdir: Optional[str] = None,
    max_chars: int = 500,
    min_chars: int = 50,
    min_japanese: float = 0.3,
    renderer: str = "auto",
):
    """Downloads manpages-ja(-dev) with `apt-get download`, unpacks them with `dpkg-deb -x` and
    reads every page, rendered by groff when it is installed (``renderer="auto"``; "parser"
    forces the fallback parser): passages (records) and known-item queries (each page's NAME
    description, relevant = that page's passages). Without ``workdir`` the downloads go to a
    temporary directory, removed afterwards."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise InvalidInputError(f"the man-page corpus needs {tool} (a Debian system)")
    temporary = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="hashpivot-manpages-"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        return _read_manpages(work, max_chars, min_chars, min_japanese, renderer)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


def _read_manpages(work: Path, max_chars: int, min_chars: int, min_japanese: float, renderer: str):
    if not list(work.glob("*.deb")):
        r = subprocess.run(
            ["apt-get", "download", *DEMO_PACKAGES], cwd=work, capture_output=True, text=True
        )
        if r.returncode != 0:
            last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
            raise InvalidInputError(
                f"apt-get download failed (run `apt-get update` first?): {last}"
            )
    root = work / "root"
    for deb in sorted(work.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    records, queries = [], []
    for page in sorted((root / "usr" / "share" / "man" / "ja").glob("man*/*.gz")):
        try:
            src = gzip.decompress(page.read_bytes()).decode("utf-8", errors="replace")
        except OSError:
            continue
        if src.lstrip().startswith(".so "):
            continue  # an alias of another page
        parsed = (render_manpage(src) if renderer == "auto" else None) or parse_manpage(src)
        name = str(parsed["name"])
        doc = f"{page.parent.name}/{page.name[:-3].rsplit('.', 1)[0]}"
        title, _, desc = name.partition(" - ")
        ids = []
        for i, text in enumerate(_passages(parsed["paragraphs"], max_chars, min_chars)):
            if _japanese_share(text) < min_japanese:
                continue
            rid = f"{doc}#{i}"
            ids.append(rid)
            records.append(
                {
                    "id": rid,
                    "doc": doc,
                    "title": f"{title.strip()} — {desc.strip()}",
                    "source": "debian:manpages-ja",
                    "text": text,
                }
            )
        if ids and desc.strip():
            queries.append({"qid": f"q:{doc}", "text": desc.strip(), "relevant": ids})
    return records, queries


def shared_demo_dir() -> Optional[Path]:
    """A ready-made copy of the demo corpus: $HASHPIVOT_DEMO_DATA, or ../shared/data/manpages-ja
    beside the working directory (the project's checkout layout)."""
    cands = [os.environ.get(DEMO_DATA_ENV, "")]
    cands += [str(Path.cwd() / up / "shared" / "data" / "manpages-ja") for up in ("..", ".")]
    for c in cands:
        if c and (Path(c) / "corpus.jsonl").is_file() and (Path(c) / "queries.jsonl").is_file():
            return Path(c)
    return None


def demo_corpus():
    """The demo corpus: a ready-made copy when there is one (:func:`shared_demo_dir`), else
    built from the Debian packages. Returns (records, queries)."""
    d = shared_demo_dir()
    if d is not None:
        return load_corpus(str(d / "corpus.jsonl")), load_queries(str(d / "queries.jsonl"))
    return manpages_corpus()


def ranked_results(
    docs: Optional[DocStore], scores: np.ndarray, ids: np.ndarray, snippet: int
) -> List[Dict]:
    """Ranked results of one query, with each document's title and a snippet."""
    found = [int(i) for i in ids if i >= 0]
    got = docs.get(found) if docs is not None else [None] * len(found)
    out = []
    for rank, (s, i, d) in enumerate(zip(scores, found, got), 1):
        d = d or {"id": str(i), "title": "", "text": ""}
        out.append(
            {
                "rank": rank,
                "id": d["id"],
                "title": d.get("title", ""),
                "score": float(s),
                "text": d.get("text", "")[:snippet],
            }
        )
    return out
