"""Corpora: local JSONL / Parquet / CSV files or a hub dataset through `datasets`, and the
offline demo corpus of Japanese manual pages from Debian's manpages-ja packages.

Every loader yields the same records: ``{"id", "doc", "title", "source", "text"}`` (text cut to
``max_chars``, records shorter than ``min_chars`` dropped). Query files are JSONL with
``{"qid", "text", "relevant": [ids]}``.
"""

from __future__ import annotations

import gzip
import os
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from .errors import InvalidInputError

DEMO_DATA_ENV = "HASHPIVOT_DEMO_DATA"
DEMO_PACKAGES = ("manpages-ja", "manpages-ja-dev")


def _records(rows, text_field: str, title_field: Optional[str], id_field: Optional[str],
             source: str, max_chars: int, min_chars: int, limit: Optional[int]) -> Iterator[Dict]:
    n = 0
    for i, row in enumerate(rows):
        if text_field not in row:
            raise InvalidInputError(
                f"the corpus has no field {text_field!r} (fields: {sorted(row)}); "
                "choose one with --text-field")
        text = str(row[text_field] or "").strip()[:max_chars]
        if len(text) < min_chars:
            continue
        rid = str(row[id_field]) if id_field and id_field in row else str(row.get("id", i))
        title = str(row.get(title_field, "")) if title_field else ""
        yield {"id": rid, "doc": str(row.get("doc", rid)), "title": title, "source": source,
               "text": text}
        n += 1
        if limit is not None and n >= limit:
            return


def load_corpus(source: str, text_field: str = "text", title_field: Optional[str] = "title",
                id_field: Optional[str] = "id", max_chars: int = 500, min_chars: int = 50,
                limit: Optional[int] = None, config: Optional[str] = None,
                split: str = "train") -> List[Dict]:
    """A local .jsonl/.json/.parquet/.csv file, or a hub dataset name (streamed; needs network),
    e.g. ``wikimedia/wikipedia`` with ``config="20231101.ja"`` as in the notebook."""
    path = Path(source)
    if path.suffix in (".jsonl", ".json", ".parquet", ".csv"):
        if not path.is_file():
            raise InvalidInputError(f"corpus file {source} does not exist")
        if path.suffix in (".jsonl", ".json"):  # plain reader: fast and keeps field types
            with open(path, encoding="utf-8") as f:
                rows = (json.loads(line) for line in f if line.strip())
                return list(_records(rows, text_field, title_field, id_field, path.name,
                                     max_chars, min_chars, limit))
        from datasets import load_dataset

        ds = load_dataset(path.suffix.lstrip("."), data_files=str(path), split="train",
                          streaming=True)
        return list(_records(ds, text_field, title_field, id_field, path.name, max_chars,
                             min_chars, limit))
    if path.exists():
        raise InvalidInputError(f"unsupported corpus file {source}: use .jsonl, .parquet or .csv")
    from datasets import load_dataset

    try:
        ds = load_dataset(source, config, split=split, streaming=True)
    except Exception as e:
        raise InvalidInputError(f"cannot open dataset {source!r}: {str(e).splitlines()[0]}") from None
    return list(_records(ds, text_field, title_field, id_field, source, max_chars, min_chars,
                         limit))


def load_queries(path: str) -> List[Dict]:
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"query file {path} does not exist")
    out = []
    with open(p, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                if "text" not in q:
                    raise InvalidInputError(f"{path}: every query needs a 'text' field")
                out.append({"qid": q.get("qid", str(len(out))), "text": q["text"],
                            "relevant": list(q.get("relevant", []))})
    return out


# ---- the demo corpus: Japanese manual pages ----
_ESCAPES = [(r"\\f[BIRP]|\\f\(..|\\f\[[^\]]*\]", ""), (r"\\\(em|\\\(en", "—"), (r"\\-", "-"),
            (r"\\&|\\c|\\%|\\:", ""), (r"\\\(..", ""), (r"\\\*\(..|\\\*.", ""),
            (r"\\e", "\\\\"), (r"\\ ", " "), (r"\\[|^~0]", ""), (r'\\".*$', "")]


def _clean(line: str) -> str:
    for pat, rep in _ESCAPES:
        line = re.sub(pat, rep, line)
    return line


def _japanese_share(text: str) -> float:
    ja = sum(1 for ch in text if "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff")
    return ja / max(1, len(text))


def parse_manpage(source: str) -> Dict[str, object]:
    """Groff man source -> {"name": NAME line, "paragraphs": [text, ...]} (our own small parser:
    drops requests and comments, strips font and character escapes, keeps words)."""
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
                (name_lines if section in ("NAME", "名前") else cur).append(arg.replace('"', ""))
            continue
        text = _clean(raw).strip()
        if not text:
            flush()
        elif section in ("NAME", "名前"):
            name_lines.append(text)
        elif section not in ("SEE ALSO", "関連項目", "COLOPHON", "この文書について"):
            cur.append(text)
    flush()
    return {"name": " ".join(" ".join(name_lines).split()), "paragraphs": [p for p in paras if p]}


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


def manpages_corpus(workdir: Optional[str] = None, max_chars: int = 500, min_chars: int = 50,
                    min_japanese: float = 0.3):
    """Downloads manpages-ja(-dev) with `apt-get download`, unpacks with `dpkg-deb -x` and
    parses every page: passages (records) and known-item queries (each page's NAME
    description, relevant = that page's passages)."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise InvalidInputError(f"the man-page corpus needs {tool} (a Debian system)")
    work = Path(workdir or tempfile.mkdtemp(prefix="hashpivot-manpages-"))
    work.mkdir(parents=True, exist_ok=True)
    if not list(work.glob("*.deb")):
        r = subprocess.run(["apt-get", "download", *DEMO_PACKAGES], cwd=work,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise InvalidInputError("apt-get download failed (run `apt-get update` first?): "
                                    + r.stderr.strip().splitlines()[-1] if r.stderr else "")
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
        parsed = parse_manpage(src)
        name = str(parsed["name"])
        doc = f"{page.parent.name}/{page.name[:-3].rsplit('.', 1)[0]}"
        title, _, desc = name.partition(" - ")
        ids = []
        for i, text in enumerate(_passages(parsed["paragraphs"], max_chars, min_chars)):
            if _japanese_share(text) < min_japanese:
                continue
            rid = f"{doc}#{i}"
            ids.append(rid)
            records.append({"id": rid, "doc": doc, "title": f"{title.strip()} — {desc.strip()}",
                            "source": "debian:manpages-ja", "text": text})
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
