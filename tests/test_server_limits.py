"""`hashpivot serve` as a careless or hostile client meets it (issue 20, class 4): every bad
request is a 4xx with one message (ragged embeddings, lone surrogates, NUL, scores that overflow
under metric="ip", oversized queries and batches), answers are finite JSON, a rebuild of the
index under the running server does not break it, and a bounded soak from several threads sees
only 2xx/4xx while good requests keep their answers. A real server on 127.0.0.1."""

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Optional

import numpy as np
import pytest

from conftest import make_corpus
from test_serve import start_server, stop_server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

DIM = 64  # the tiny test model's dimension
SOAK_THREADS = 6
SOAK_REQUESTS = 40  # per thread


def request(url: str, body=None, raw: Optional[bytes] = None, timeout: float = 60):
    """(status, parsed JSON or text) of a GET, or of a POST of ``body`` (or raw bytes)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text, parse_constant=strict)  # no Infinity, no NaN
    except ValueError:
        return status, text


def strict(token: str):
    raise AssertionError(f"the server answered JSON with {token}")


def build(corpus, out, model, *extra):
    from hashpivot.cli import main

    args = ["build", str(corpus), "--out", str(out), "--model", model, "--bits", "64"]
    assert main([*args, "--min-chars", "10", "--device", "cpu", *extra]) == 0


@pytest.fixture(scope="module")
def ip_server(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("limits")
    corpus, _ = make_corpus(root)
    idx = root / "idx"
    build(corpus, idx, tiny_model, "--metric", "ip")
    proc, base = start_server(idx)
    yield base, root, tiny_model
    stop_server(proc)


def bad_requests(base):
    """(what, url, body or raw bytes) of requests that must each get a 4xx."""
    from hashpivot.serve import MAX_BATCH, MAX_QUERY_CHARS, MAX_WHERE

    q = urllib.parse.urlencode
    many = {f"f{i}": "v" for i in range(MAX_WHERE + 1)}
    many_get = [("where", f"f{i}=v") for i in range(MAX_WHERE + 1)]
    return [
        ("ragged", base + "/search", {"embeddings": [[0.1] * DIM, [0.1] * (DIM - 1)]}),
        ("surrogate", base + "/search", None, b'{"queries": ["abc\\ud800"]}'),
        ("nul", base + "/search", {"queries": ["ファイル\u0000圧縮"]}),
        ("beyond float32", base + "/search", {"embeddings": [[1e39] * DIM]}),
        ("nan token", base + "/search", None, b'{"embeddings": [[NaN, 1.0]]}'),
        ("long post", base + "/search", {"queries": ["あ" * (MAX_QUERY_CHARS + 1)]}),
        ("big batch", base + "/search", {"queries": ["x"] * (MAX_BATCH + 1)}),
        ("long get", base + "/search?" + q({"q": "あ" * (MAX_QUERY_CHARS + 1)}), None),
        ("page nul", base + "/?" + q({"q": "a\u0000b"}), None),
        ("wide vector", base + "/search", {"embeddings": [[0.1] * 10_000]}),
        ("many filters", base + "/search", {"queries": ["x"], "where": many}),
        ("many get filters", base + "/search?" + q([("q", "x"), *many_get]), None),
        ("not json", base + "/search", None, b"{"),
        ("k too big", base + "/search", {"queries": ["x"], "k": 10**6}),
    ]  # fmt: skip


def send(case):
    what, url, body, *raw = case
    return request(url, body, raw[0] if raw else None)


def test_every_bad_request_is_a_4xx_with_one_message(ip_server):
    base, _, _ = ip_server
    for case in bad_requests(base):
        status, body = send(case)
        assert 400 <= status < 500, (case[0], status, body)
        if isinstance(body, dict):
            detail = body["detail"]
            assert isinstance(detail, list) or "\n" not in detail, (case[0], detail)
    # bytes that are not UTF-8 in a URL are decoded with replacement characters: a valid query
    for url in (base + "/search?q=%ED%A0%80", base + "/?q=%ED%A0%80abc", base + "/?q=%FF"):
        assert request(url)[0] == 200, url
    assert request(base + "/healthz")[0] == 200


def test_answers_are_finite_json(ip_server):
    base, _, _ = ip_server
    rng = np.random.default_rng(0)
    status, body = request(
        base + "/search", {"embeddings": rng.standard_normal((3, DIM)).tolist(), "k": 5}
    )
    assert status == 200, body
    scores = [r["score"] for rows in body["results"] for r in rows]
    assert len(scores) == 15 and np.isfinite(scores).all()
    huge = np.float32(3e38)  # finite float32: its products may overflow, never as inf in JSON
    status, body = request(base + "/search", {"embeddings": [[float(huge)] * DIM]})
    assert status == 400 or (status == 200 and body["results"]), body


def test_scores_that_overflow_are_a_named_error():
    import hashpivot as hp
    from hashpivot.errors import InvalidInputError
    from hashpivot.serve import SearchService

    x = np.random.default_rng(0).standard_normal((200, DIM)).astype(np.float32) * 1e18
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not L2-normalised under "ip": meant here
        service = SearchService(hp.Index.build(x, n_bits=64, metric="ip"))
    q = np.full((1, DIM), 1e20, np.float32)  # 1e18 * 1e20 * 64 > float32's 3.4e38
    with pytest.raises(InvalidInputError, match="overflow"):
        service.search(q, 5)


def test_the_time_budget_refuses_with_a_named_error():
    from hashpivot.serve import RequestTooSlowError, SearchService

    class SlowEncoder:
        batch_size, dim = 1, DIM

        def encode_queries(self, texts, progress=False):
            time.sleep(0.05)
            return np.ones((len(texts), DIM), np.float32)

    service = SearchService(None, SlowEncoder())
    with pytest.raises(RequestTooSlowError):
        service.embed(["a"] * 10, seconds=0.1)
    assert service.embed(["a", "b"], seconds=10).shape == (2, DIM)


def test_bounded_soak_from_several_threads(ip_server):
    """A few hundred mixed requests: good ones keep their answers, nothing is a 5xx."""
    base, _, _ = ip_server
    good_get = base + "/search?" + urllib.parse.urlencode({"q": "ファイル 圧縮", "k": 3})
    want = request(good_get)[1]
    vec = np.random.default_rng(1).standard_normal((2, DIM)).tolist()
    want_post = request(base + "/search", {"embeddings": vec, "k": 4})[1]
    bad = [
        *bad_requests(base),
        ("oversized body", base + "/search", {"queries": ["ファイル " * 400] * 64}),
    ]
    statuses, wrong, errors = [], [], []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _i in range(SOAK_REQUESTS):
            try:
                kind = rng.integers(0, 3)
                if kind == 0:
                    status, body = request(good_get)
                    ok = status == 200 and body == want
                elif kind == 1:
                    status, body = request(base + "/search", {"embeddings": vec, "k": 4})
                    ok = status == 200 and body == want_post
                else:
                    case = bad[int(rng.integers(0, len(bad)))]
                    status, body = send(case)
                    ok = 400 <= status < 500 or (case[0] == "oversized body" and status == 200)
                with lock:
                    statuses.append(status)
                    if not ok:
                        wrong.append((kind, status, str(body)[:200]))
            except Exception as e:  # a refused connection or a timeout: the server is down
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(SOAK_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[:3]
    assert not wrong, wrong[:3]
    assert len(statuses) == SOAK_THREADS * SOAK_REQUESTS
    assert all(s < 500 for s in statuses)
    assert request(good_get)[1] == want


def test_a_rebuild_under_the_running_server_is_served_whole_without_a_restart(ip_server):
    from conftest import WORDS

    base, root, model = ip_server
    url = base + "/search?" + urllib.parse.urlencode({"q": "ファイル 圧縮", "k": 3})
    before = request(url)
    other = root / "other.jsonl"
    rows = [
        {"id": f"new{i}", "title": f"new {i}", "text": " ".join(WORDS[i % 7 : i % 7 + 6]) * 3}
        for i in range(40)
    ]
    other.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    build(other, root / "idx", model, "--metric", "ip")  # a new generation in the same place
    seen = set()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:  # it answers throughout, from one generation at a time
        status, body = request(url)
        assert status == 200, body
        kinds = {r["id"].rstrip("0123456789") for r in body["results"]}
        assert len(kinds) == 1, body  # never a mix of the two generations
        seen |= kinds
        if kinds == {"new"}:
            break
        time.sleep(0.1)
    assert seen >= {"new"} and before[1]["results"][0]["id"].startswith("doc")
