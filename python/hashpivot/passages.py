"""Documents into passages: a long text is split into overlapping passages that fit the model's
token window, at sentence ends where it can (Japanese 。！？ as well as . ! ? and line breaks),
else at a space, else anywhere; a short text is one passage. Every passage is a substring of its
document, so a search result can show it and name the document it came from."""

from __future__ import annotations

import bisect
import re
from typing import Dict, List, Tuple

from .errors import InvalidInputError

# 500 characters: under multilingual-e5-small's 512-token window even for Japanese (about one
# token a character at worst), and the research notebook's passage size.
DEFAULT_PASSAGE_CHARS = 500
DEFAULT_OVERLAP_CHARS = 100  # a sentence cut by a passage end is whole in the next passage
# A passage ends at a sentence only if that keeps at least this share of the passage size;
# otherwise at a space, or at the size itself (a text without breaks, e.g. a long URL).
MIN_FILL = 0.5
SENTENCE_END = re.compile(r"[。．！？]|[.!?;:](?=\s)|\n")
SPACE = re.compile(r"\s")


def check_sizes(passage_chars: int, overlap_chars: int) -> None:
    """Passage sizes a split can honour (0 passage characters: no split)."""
    if passage_chars < 0 or overlap_chars < 0:
        raise InvalidInputError("passage and overlap sizes must be >= 0 characters")
    if passage_chars and overlap_chars * 2 > passage_chars:
        raise InvalidInputError(
            f"the overlap ({overlap_chars} characters) must be at most half a passage "
            f"({passage_chars}): each passage must move on past the previous one"
        )


def _cuts(pattern: re.Pattern, text: str) -> List[int]:
    return [m.end() for m in pattern.finditer(text)]


def split_passages(
    text: str,
    passage_chars: int = DEFAULT_PASSAGE_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
) -> List[str]:
    """The passages of ``text`` (stripped; none for an empty text): at most ``passage_chars``
    characters each, each starting about ``overlap_chars`` before the previous one ended.
    ``passage_chars=0`` keeps the text whole."""
    text = text.strip()
    return [text[s:e] for s, e in passage_spans(text, passage_chars, overlap_chars)]


def passage_spans(
    text: str,
    passage_chars: int = DEFAULT_PASSAGE_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
) -> List[Tuple[int, int]]:
    """The (start, end) of each passage of ``text``, in order, none starting or ending in
    white space; together they cover every other character."""
    check_sizes(passage_chars, overlap_chars)
    if not text.strip():
        return []
    if not passage_chars or len(text) <= passage_chars:
        return [_trimmed(text, 0, len(text))]
    sentences, spaces = _cuts(SENTENCE_END, text), _cuts(SPACE, text)
    out: List[Tuple[int, int]] = []
    start = 0
    while True:
        limit = start + passage_chars
        if limit >= len(text):
            out.append(_trimmed(text, start, len(text)))
            return [(s, e) for s, e in out if e > s]
        least = start + max(1, int(MIN_FILL * passage_chars))
        end = _last_cut(sentences, least, limit) or _last_cut(spaces, least, limit) or limit
        out.append(_trimmed(text, start, end))
        # the next passage starts at a sentence (else a space) inside the overlap
        lo = max(end - overlap_chars, start + 1)
        start = _first_cut(sentences, lo, end) or _first_cut(spaces, lo, end) or lo


def sentences(text: str) -> List[str]:
    """The sentences of ``text``, as the passage split sees them (stripped, none empty)."""
    cuts = [0, *_cuts(SENTENCE_END, text), len(text)]
    return [t for a, b in zip(cuts, cuts[1:]) if (t := text[a:b].strip())]


def _trimmed(text: str, start: int, end: int) -> Tuple[int, int]:
    """[start, end) without white space at either end."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _last_cut(cuts: List[int], lo: int, hi: int) -> int:
    """The last cut in [lo, hi], or 0."""
    i = bisect.bisect_right(cuts, hi) - 1
    return cuts[i] if i >= 0 and cuts[i] >= lo else 0


def _first_cut(cuts: List[int], lo: int, hi: int) -> int:
    """The first cut in [lo, hi), or 0."""
    i = bisect.bisect_left(cuts, lo)
    return cuts[i] if i < len(cuts) and cuts[i] < hi else 0


def passage_records(record: Dict, passage_chars: int, overlap_chars: int) -> List[Dict]:
    """A record as its passages: one passage keeps the record as it is; several are records of
    their own, ids ``<id>#<n>`` (n from 0), each with the record's ``doc``, title and fields
    and its ``passage`` number."""
    parts = split_passages(record["text"], passage_chars, overlap_chars)
    if len(parts) <= 1:
        return [record]
    return [
        {**record, "id": f"{record['id']}#{n}", "passage": n, "text": part}
        for n, part in enumerate(parts)
    ]


__all__ = [
    "DEFAULT_OVERLAP_CHARS",
    "DEFAULT_PASSAGE_CHARS",
    "check_sizes",
    "passage_records",
    "passage_spans",
    "sentences",
    "split_passages",
]
