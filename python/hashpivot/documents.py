"""The documents an index returns (titles, snippets, fields to filter on): one JSON object a
line, row i = index id i, with the byte offset of each line so that a search reads only the
lines of its results.

Documents are a member of the index directory like its arrays (``docs-<gen>.jsonl`` and
``docs-offsets-<gen>.npy``, named and checksummed in ``header.json``): a save writes the index
and its documents as one generation, so a reader sees both or neither. An open
:class:`DocStore` keeps its file open, so it keeps reading its own generation after a rebuild of
the directory replaced (and unlinked) the files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from pathlib import Path
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

import numpy as np

from .errors import CorruptFileError, InvalidInputError

LEGACY_DOCS = "docs.jsonl"  # before documents were index members (format 3)
LEGACY_OFFSETS = "docs-offsets.npy"
COPY_CHUNK = 1 << 20  # bytes copied at a time when documents travel to a new save


def plain(value: Any, where: str, field: str) -> Any:
    """A value JSON holds exactly: dates as ISO strings, numpy scalars as Python numbers,
    non-finite floats as null; bytes and unknown objects are an error naming the field."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return plain(value.item(), where, field)
    if hasattr(value, "isoformat"):  # datetime, date, time, pandas Timestamp
        return value.isoformat()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v, where, field) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v, where, field) for k, v in value.items()}
    if type(value).__name__ == "Decimal":
        return str(value)
    raise InvalidInputError(
        f"{where}: field {field!r} holds {type(value).__name__}, which a document (JSON) "
        "cannot hold: drop or convert that column"
    )


def encode(records: Sequence[Dict[str, Any]]) -> Tuple[List[bytes], np.ndarray]:
    """The JSON lines of the records and their offsets (done before anything is written)."""
    lines = []
    for i, r in enumerate(records):
        try:
            lines.append((json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n").encode())
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"document {i} cannot be stored as JSON: {e}") from None
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in lines])]).astype(np.int64)
    return lines, offsets


class DocStore:
    """Documents by row: in memory (:meth:`from_records`, before a save) or read from an open
    file of an index directory (:meth:`open_fd`)."""

    def __init__(self, offsets: np.ndarray, data: Optional[bytes], fd: Optional[int], name: str):
        self.offsets = offsets
        self._data, self._fd, self.name = data, fd, name
        self._lock = threading.Lock()

    @classmethod
    def from_records(cls, records: Sequence[Dict[str, Any]]) -> DocStore:
        lines, offsets = encode(records)
        return cls(offsets, b"".join(lines), None, "documents")

    @classmethod
    def open_fd(cls, fd: int, name: str, offsets: np.ndarray, sha256: Optional[str]) -> DocStore:
        """The documents file open at ``fd`` (owned from now on) with its offsets; checks the
        offsets against the file's size, and its checksum when given."""
        store = cls(offsets, None, fd, name)
        try:
            store._check(sha256)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_legacy(cls, root: Path) -> Optional[DocStore]:
        """``docs.jsonl`` + ``docs-offsets.npy`` beside an index of format 3 (or None)."""
        docs, offs = Path(root) / LEGACY_DOCS, Path(root) / LEGACY_OFFSETS
        if not (docs.is_file() and offs.is_file()):
            return None
        try:
            offsets = np.load(offs, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CorruptFileError(f"{offs} is corrupt: {e}") from None
        try:
            fd = os.open(docs, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise CorruptFileError(f"{docs} cannot be opened: {e.strerror or e}") from None
        return cls.open_fd(fd, str(docs), offsets, None)

    def _check(self, sha256: Optional[str]) -> None:
        o = self.offsets
        if (
            not isinstance(o, np.ndarray)
            or o.dtype != np.int64
            or o.ndim != 1
            or o.size < 1
            or o[0] != 0
            or (o.size > 1 and not bool((np.diff(o) > 0).all()))
        ):
            raise CorruptFileError(f"{self.name}: the document offsets are corrupt")
        size = os.fstat(self._fd).st_size if self._fd is not None else len(self._data or b"")
        if size != int(o[-1]):
            raise CorruptFileError(
                f"{self.name} is truncated or corrupt ({size:,} bytes, the offsets say "
                f"{int(o[-1]):,})"
            )
        if sha256 is not None:
            h = hashlib.sha256()
            self._copy(h.update)
            if h.hexdigest() != sha256:
                raise CorruptFileError(f"{self.name}: checksum mismatch (the file is corrupt)")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _read(self, start: int, size: int) -> bytes:
        if self._data is not None:
            return self._data[start : start + size]
        if self._fd is None:
            raise CorruptFileError(f"{self.name}: the document store is closed")
        return os.pread(self._fd, size, start)

    def _copy(self, sink) -> None:
        end = int(self.offsets[-1])
        for s in range(0, end, COPY_CHUNK):
            sink(self._read(s, min(COPY_CHUNK, end - s)))

    def write(self, f: BinaryIO) -> None:
        """Writes the JSON lines (what a save stores)."""
        self._copy(f.write)

    def _decode(self, raw: bytes, i: int) -> Dict[str, Any]:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CorruptFileError(f"{self.name}: document {i} is corrupt (not JSON)") from None
        if not isinstance(doc, dict):
            raise CorruptFileError(f"{self.name}: document {i} is not a JSON object")
        return doc

    def get(self, ids: Iterable[int]) -> List[Optional[Dict[str, Any]]]:
        """The documents of these ids (None for an id without a document)."""
        out: List[Optional[Dict[str, Any]]] = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self):
                out.append(None)
                continue
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            raw = self._read(start, end - start)
            if len(raw) != end - start:
                raise CorruptFileError(f"{self.name} is truncated (document {i})")
            out.append(self._decode(raw, i))
        return out

    def all(self) -> Iterator[Dict[str, Any]]:
        """Every document, in row order."""
        o, n, i = self.offsets, len(self), 0
        while i < n:  # a block of whole lines of about COPY_CHUNK bytes at a time
            j = max(i + 1, int(np.searchsorted(o, o[i] + COPY_CHUNK, side="right")) - 1)
            j = min(j, n)
            block = self._read(int(o[i]), int(o[j] - o[i]))
            for r in range(i, j):
                yield self._decode(block[int(o[r] - o[i]) : int(o[r + 1] - o[i])], r)
            i = j

    @staticmethod
    def condition(text: str) -> Tuple[str, str]:
        """A ``field=value`` filter as (field, value)."""
        field, sep, value = text.partition("=")
        if not sep or not field:
            raise InvalidInputError(f"a filter is FIELD=VALUE, got {text!r}")
        return field, value

    def where(self, conditions: Sequence[Tuple[str, str]]) -> np.ndarray:
        """Ids (rows) of the documents whose fields equal every (field, value) given. A field
        that no document has is an error naming the fields they have (a misspelt filter
        matches nothing, silently, otherwise)."""
        keep, fields = [], set()
        for i, d in enumerate(self.all()):
            fields.update(d)
            if all(str(d.get(field, "")) == value for field, value in conditions):
                keep.append(i)
        unknown = sorted({f for f, _ in conditions} - fields)
        if unknown:
            raise InvalidInputError(
                f"no document has the field {unknown[0]!r}: filter on one of "
                f"{', '.join(sorted(fields)) or '(none: the documents have no fields)'}"
            )
        return np.asarray(keep, dtype=np.int64)


SNIPPET_WORD_SHARE = 0.6  # a cut snippet ends at a space when one is this far in, else mid-text


def snippet_of(text: str, chars: int) -> str:
    """The text's first ``chars`` characters; a cut one ends at a word (where words are spaced)
    and with an ellipsis."""
    if len(text) <= chars:
        return text
    cut = text[:chars]
    space = cut.rfind(" ")
    if space >= SNIPPET_WORD_SHARE * chars:
        cut = cut[:space]
    return cut.rstrip() + "…"


def ranked_results(
    docs: Optional[DocStore], scores: np.ndarray, ids: np.ndarray, snippet: int
) -> List[Dict]:
    """Ranked results of one query, with each document's title, the document it is a passage
    of (its ``doc`` field, else its id) and a snippet."""
    found = [int(i) for i in ids if i >= 0]
    got = docs.get(found) if docs is not None else [None] * len(found)
    out = []
    for rank, (s, i, d) in enumerate(zip(scores, found, got), 1):
        d = d or {"id": str(i), "title": "", "text": ""}
        out.append(
            {
                "rank": rank,
                "id": d["id"],
                "doc": str(d.get("doc", d["id"])),
                "title": d.get("title", ""),
                "score": float(s),
                "text": snippet_of(str(d.get("text", "")), snippet),
            }
        )
    return out


PASSAGES_PER_DOC = 5  # a search by document ranks this many passages a document it shows


def best_per_document(rows: List[Dict], k: int) -> List[Dict]:
    """The best passage of each document, in rank order, at most k of them, each with the
    count of its document's other passages among ``rows`` (as search engines collapse hits)."""
    best: Dict[str, Dict] = {}
    for r in rows:
        if r["doc"] in best:
            best[r["doc"]]["more"] += 1
        elif len(best) < k:
            best[r["doc"]] = {**r, "rank": len(best) + 1, "more": 0}
    return list(best.values())


def best_documents(
    search: Callable[[int], List[List[Dict]]], k: int, most: int
) -> List[List[Dict]]:
    """The best passage of each of k documents for each query: ``search(n)`` ranks n passages
    a query; from PASSAGES_PER_DOC x k passages, more (up to ``most``) while a query has fewer
    than k documents and its passages filled the ranking (one long document can hold them
    all)."""
    wide = min(most, PASSAGES_PER_DOC * k)
    while True:
        rows = search(wide)
        out = [best_per_document(r, k) for r in rows]
        short = any(len(o) < k and len(r) == wide for o, r in zip(out, rows))
        if not short or wide >= most:
            return out
        wide = min(most, wide * PASSAGES_PER_DOC)


__all__ = [
    "PASSAGES_PER_DOC",
    "DocStore",
    "best_documents",
    "best_per_document",
    "encode",
    "plain",
    "ranked_results",
    "snippet_of",
]
