import json
from pathlib import Path

import numpy as np
import pytest

import hashpivot
from hashpivot import _core

ISAS = ["portable", "popcnt", "avx2", "avx512"]


def available_isas():
    best = _core.cpu_features()["best_isa"]
    return ISAS[: ISAS.index(best) + 1]


@pytest.fixture(params=available_isas())
def isa(request):
    """Runs a test once per instruction set this CPU has (the portable path included)."""
    before = hashpivot.cpu_features()["isa"]
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


def ref_distances(q: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Plain numpy Hamming distances (nq, n): the reference every kernel is checked against."""
    q = np.asarray(q, dtype=np.uint8).reshape(-1, codes.shape[1])
    return np.unpackbits(q[:, None, :] ^ codes[None, :, :], axis=2).sum(axis=2).astype(np.int32)


def ref_knn(q: np.ndarray, codes: np.ndarray, k: int, rows=None):
    """(distances, ids) in faiss' order, padded with (n_bits + 1, -1)."""
    n_bits = codes.shape[1] * 8
    d = ref_distances(q, codes)
    nq = d.shape[0]
    D = np.full((nq, k), n_bits + 1, dtype=np.int32)
    I = np.full((nq, k), -1, dtype=np.int64)
    for i in range(nq):
        cand = np.arange(codes.shape[0]) if rows is None else np.asarray(rows[i], dtype=np.int64)
        order = cand[np.lexsort((cand, d[i, cand]))][:k]
        D[i, : len(order)] = d[i, order]
        I[i, : len(order)] = order
    return D, I


def band_rows(index, q: np.ndarray, t: int):
    """Per query, the index's internal rows whose pivot distances all lie within t of the
    query's (the band filter by brute force)."""
    qd = ref_distances(q, np.asarray(index.pivots)).astype(np.int64)
    table = np.asarray(index.table).astype(np.int64)
    return [np.flatnonzero((np.abs(table - qd[j]) <= t).all(axis=1)) for j in range(len(qd))]


def banded_answer(index, q: np.ndarray, k: int, t: int, rows=None):
    """Brute force over the rows inside the band (and among `rows`, per query, when given):
    (distances, ids) in faiss' order."""
    keep = band_rows(index, q, t)
    if rows is not None:
        keep = [np.intersect1d(a, b) for a, b in zip(keep, rows)]
    D, R = ref_knn(q, np.asarray(index.codes), k, rows=keep)
    return D, np.where(R >= 0, index.ids[np.maximum(R, 0)], -1)


# A tiny sentence-transformers model and a small Japanese corpus: CLI, server and Ray tests
WORDS = [
    "ファイル",
    "圧縮",
    "ディレクトリ",
    "一覧",
    "表示",
    "プロセス",
    "シグナル",
    "送る",
    "ネットワーク",
    "設定",
    "query",
    "passage",
    ":",
    "the",
    "file",
    "list",
    "send",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-layer BERT with random weights and a small WordPiece vocabulary, saved as a
    sentence-transformers folder: no hub access needed."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = [*specials, *WORDS, *list("abcdefghijklmnopqrstuvwxyz0123456789")]
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers import models as tk_models

    wp = Tokenizer(tk_models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = BertTokenizerFast(
        tokenizer_object=wp,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
    )
    assert tok.tokenize("query: ファイル") == ["query", ":", "ファイル"]
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    bert_dir = root / "bert"
    BertModel(cfg).save_pretrained(bert_dir)
    tok.save_pretrained(bert_dir)
    st = SentenceTransformer(
        modules=[models.Transformer(str(bert_dir)), models.Pooling(64)],
        prompts={"query": "query: ", "document": "passage: "},
    )
    path = root / "tiny-model"  # its own prompts, as E5 models on the Hub define them
    st.save(str(path))
    return str(path)


def probed_groups(keys, offsets, nprobe, k):
    """The engine's probe rule (numpy's reading of it): groups in order of (key, group), empty
    ones skipped; the nprobe nearest, then more in the same order until k rows are seen."""
    sizes = np.diff(np.asarray(offsets))
    order = [g for g in np.lexsort((np.arange(len(keys)), keys)) if sizes[g] > 0]
    take = order[:nprobe]
    j = len(take)
    while sizes[take].sum() < k and j < len(order):
        take.append(order[j])
        j += 1
    return np.asarray(take, dtype=np.int64)


def run_on_tmpfs(script: str, mount: str, size: str) -> dict:
    """Runs a Python script in a private mount namespace with a tmpfs of ``size`` at ``mount``
    (a small real file system to fill up); its stdout lines "key value" as a dict. Skips where
    no tmpfs can be mounted."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    cmd = ["unshare", "-rm", "sh", "-c"]
    cmd += [
        f"mkdir -p {mount} && mount -t tmpfs -o size={size} none {mount} && "
        f'exec {sys.executable} -c "$0"',
        script,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "mount" in r.stderr and "Traceback" not in r.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())


def make_corpus(tmp_path, n=120):
    rng = np.random.default_rng(0)
    topics = [
        "ファイル 圧縮",
        "ディレクトリ 一覧 表示",
        "プロセス シグナル 送る",
        "ネットワーク 設定",
    ]
    recs = []
    for i in range(n):
        t = topics[i % 4]
        words = " ".join(rng.choice(WORDS, 12))
        recs.append({"id": f"doc{i}", "title": f"{t} {i}", "text": f"{t} {t} {words} {i}" * 2})
    p = tmp_path / "corpus.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs))
    q = tmp_path / "queries.jsonl"
    q.write_text(
        "\n".join(
            json.dumps(
                {
                    "qid": f"q{j}",
                    "text": topics[j],
                    "relevant": [f"doc{i}" for i in range(j, n, 4)],
                },
                ensure_ascii=False,
            )
            for j in range(4)
        )
    )
    return p, q


def write_header(index_dir, h) -> None:
    """Writes a header a test edited, signed as a save signs it (so that the test reaches the
    checks behind the header's checksum)."""
    from hashpivot.storage import HEADER, header_digest

    h = dict(h)
    h["header_sha256"] = header_digest(h)
    (Path(index_dir) / HEADER).write_text(json.dumps(h))


def run_cli(*args, env=None, timeout=900):
    """`python -m hashpivot.cli ARGS` in a subprocess: (exit code, stdout, stderr)."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "hashpivot.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return r.returncode, r.stdout, r.stderr
