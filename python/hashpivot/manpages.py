"""The offline demo corpus: Japanese manual pages from Debian's manpages-ja packages, rendered
by groff (or a fallback parser), cut into passages, with each page's NAME description as a
known-item query; or a ready-made copy of it (``$HASHPIVOT_DEMO_DATA``, ``../shared``)."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .corpus import NOTEBOOK, load_corpus, load_queries
from .errors import InvalidInputError

DEMO_DATA_ENV = "HASHPIVOT_DEMO_DATA"
DEMO_PACKAGES = ("manpages-ja", "manpages-ja-dev")


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
        title, desc = page_title(name, doc)
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
                    "title": title,
                    "source": "debian:manpages-ja",
                    "text": text,
                }
            )
        if ids and desc:
            queries.append({"qid": f"q:{doc}", "text": desc, "relevant": ids})
    return records, queries


def page_title(name: str, doc: str) -> Tuple[str, str]:
    """(title, description) of a page from its NAME line ("gzip - compress files"): never
    empty and never a dangling dash (a page whose NAME did not parse is titled by its file)."""
    title, _, desc = (part.strip() for part in name.partition(" - "))
    title = title or doc.rsplit("/", 1)[-1]
    return (f"{title} — {desc}" if desc else title), desc


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
        corpus = load_corpus(str(d / "corpus.jsonl"), **NOTEBOOK.options())
        return corpus, load_queries(str(d / "queries.jsonl"))
    return manpages_corpus()
