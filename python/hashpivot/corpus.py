"""Corpus readers: local JSONL / Parquet / CSV files (or, asked for explicitly, a Hugging Face
Hub dataset), and query files. The documents an index returns are :mod:`hashpivot.documents`';
the demo's Japanese manual pages are :mod:`hashpivot.manpages`'.

Every loader yields the same records: ``{"id", "doc", "title", "source", "text", ...}``, any
other fields of the row kept. A long text becomes passages (:mod:`hashpivot.passages`: ids
``<id>#<n>``, each with its ``doc``, the record's id unless the row names one); empty texts are
dropped. The research notebook's preprocessing (``NOTEBOOK``: each text cut to its first 500
characters, texts under 50 dropped, no passages) reproduces its numbers.

A corpus argument is a local file unless it starts with ``hf://`` (or ``hub=True``): a mistyped
path fails at once with "no such file". Query files are JSONL with
``{"qid", "text", "relevant": [ids]}``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from .documents import plain
from .errors import DuplicateIdError, InvalidInputError
from .passages import DEFAULT_OVERLAP_CHARS, DEFAULT_PASSAGE_CHARS, check_sizes, passage_records

HUB_PREFIX = "hf://"
LOCAL_FORMATS = (".jsonl", ".json", ".parquet", ".csv")
CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default (128 KiB a field) refuses long texts
BASE_FIELDS = ("id", "doc", "title", "source", "text")


@dataclass(frozen=True)
class Preprocess:
    """How record texts become passages: each text cut to ``max_chars`` (None: whole), texts
    shorter than ``min_chars`` dropped, the rest split into passages of ``passage_chars``
    overlapping by ``overlap_chars`` (0 passage characters: one passage a record)."""

    max_chars: Optional[int] = None
    min_chars: int = 1
    passage_chars: int = DEFAULT_PASSAGE_CHARS
    overlap_chars: int = DEFAULT_OVERLAP_CHARS

    def __post_init__(self) -> None:
        if self.max_chars is not None and self.max_chars < 1:
            raise InvalidInputError(f"max_chars must be >= 1, got {self.max_chars}")
        if self.min_chars < 0:
            raise InvalidInputError(f"min_chars must be >= 0, got {self.min_chars}")
        if self.max_chars is not None and self.min_chars > self.max_chars:
            raise InvalidInputError(
                f"min_chars {self.min_chars} is more than max_chars {self.max_chars}: every "
                "record would be cut below the length it needs to be kept"
            )
        check_sizes(self.passage_chars, self.overlap_chars)

    def options(self) -> Dict[str, Optional[int]]:
        """These sizes as read_corpus()'s keyword arguments."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


# The research notebook's preprocessing: the demo's man pages and `build --notebook` use it.
NOTEBOOK = Preprocess(max_chars=500, min_chars=50, passage_chars=0, overlap_chars=0)


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
    prep: Preprocess,
    limit: Optional[int],
    count_rest: bool = True,
) -> Corpus:
    """rows: (where, row) pairs, `where` naming the file and line for error messages. Past
    ``limit`` records (input rows kept) the rest of the rows are only counted
    (``count_rest``)."""
    out = Corpus()
    first_seen: Dict[str, str] = {}
    total = kept = 0
    for i, (where, row) in enumerate(rows):
        total = i + 1
        if limit is not None and kept >= limit:
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
        text = str(row[text_field] or "").strip()[: prep.max_chars]
        if not text or len(text) < prep.min_chars:
            out.dropped.append((where, rid))
            continue
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
        kept += 1
        for passage in passage_records(rec, prep.passage_chars, prep.overlap_chars):
            pid = passage["id"]
            if pid in first_seen:
                raise DuplicateIdError(
                    f"{where}: id {pid!r} repeats the record at {first_seen[pid]}; every "
                    "document (and passage) needs its own id"
                )
            first_seen[pid] = where
            out.records.append(passage)
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
    max_chars: Optional[int] = None,
    min_chars: int = 1,
    passage_chars: int = DEFAULT_PASSAGE_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
    limit: Optional[int] = None,
    config: Optional[str] = None,
    split: str = "train",
    hub: bool = False,
) -> Corpus:
    """A local .jsonl/.json/.parquet/.csv file, or (``hf://NAME`` or ``hub=True``) a Hugging
    Face Hub dataset streamed through ``datasets`` (needs network), e.g.
    ``hf://wikimedia/wikipedia`` with ``config="20231101.ja"``. Records keep the input's order,
    as their passages (:class:`Preprocess` says how); an id given twice is a
    :class:`DuplicateIdError`. ``limit``: at most this many input records."""
    prep = Preprocess(max_chars, min_chars, passage_chars, overlap_chars)
    if limit is not None and limit < 1:
        raise InvalidInputError(f"limit must be >= 1, got {limit}")
    if source.startswith(HUB_PREFIX) or hub:
        return _hub_corpus(
            source[len(HUB_PREFIX) :] if source.startswith(HUB_PREFIX) else source,
            text_field,
            title_field,
            id_field,
            prep,
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
    return _records(rows, text_field, title_field, id_field, path.name, prep, limit)


def _hub_corpus(name: str, text_field, title_field, id_field, prep, limit, config, split) -> Corpus:
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
    return _records(rows, text_field, title_field, id_field, name, prep, limit, False)


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
