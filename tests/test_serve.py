"""`hashpivot serve`: a real server process on a free loopback port — JSON search, batch POST,
filters, 4xx on bad input, /healthz, and the search page loaded in headless Chromium."""

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from conftest import make_corpus

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(url: str, body: dict):
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def start_server(idx, *extra):
    """`hashpivot serve IDX` on a free loopback port, once /healthz answers: (process, url).
    Its output (the URL line, uvicorn's access log) goes to a file, ``proc.log`` (a pipe nobody
    reads would fill up and stall the server)."""
    port = free_port()
    log = tempfile.TemporaryFile(mode="a+")  # O_APPEND: the server writes at the end always
    proc = subprocess.Popen(
        [sys.executable, "-m", "hashpivot.cli", "serve", str(idx), "--port", str(port), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log = log
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail("server exited: " + log.read())
        try:
            if get(base + "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    return proc, base


def stop_server(proc) -> None:
    """Stops a server start_server started, and closes its output file."""
    proc.terminate()
    proc.wait(timeout=30)
    proc.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    from hashpivot.cli import main

    root = tmp_path_factory.mktemp("serve")
    corpus, _ = make_corpus(root)
    idx = root / "idx"
    assert (
        main(
            [
                "build",
                str(corpus),
                "--out",
                str(idx),
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
        == 0
    )
    proc, base = start_server(idx, "--device", "cpu")
    SERVER_LOGS.append(proc.log)
    yield base, idx
    stop_server(proc)


SERVER_LOGS: list = []  # the module server's output file


def server_log() -> str:
    time.sleep(0.2)  # the access line is written after the response
    f = SERVER_LOGS[-1]
    f.flush()
    f.seek(0)
    return f.read()


def test_search_returns_k_results_in_json(server):
    base, _ = server
    status, body = get(base + "/search?" + urllib.parse.urlencode({"q": "ファイル 圧縮", "k": 3}))
    assert status == 200
    res = json.loads(body)
    assert res["query"] == "ファイル 圧縮" and len(res["results"]) == 3
    assert [r["rank"] for r in res["results"]] == [1, 2, 3]
    assert all(r["id"].startswith("doc") and r["title"] for r in res["results"])
    scores = [r["score"] for r in res["results"]]
    assert scores == sorted(scores, reverse=True)


def test_bad_requests_are_4xx_and_the_server_lives_on(server):
    base, _ = server
    for query in (
        {"q": "x", "k": 0},
        {"q": "x", "k": "many"},
        {"q": "x", "k": 10**6},
        {"k": 3},
        {"q": ""},
    ):
        status, body = get(base + "/search?" + urllib.parse.urlencode(query))
        assert status == 422, (query, body)
    assert get(base + "/search?q=x&where=nofield")[0] == 400
    status, body = post(base + "/search", {"embeddings": [[1.0, 2.0]]})
    assert status == 400, body  # wrong dimension
    assert post(base + "/search", {"embeddings": [[float("nan")] * 64]})[0] in (400, 422)
    assert post(base + "/search", {"k": 3})[0] == 422
    assert get(base + "/healthz")[0] == 200


def test_post_batches_texts_and_embeddings_and_filters(server):
    base, idx = server
    status, res = post(
        base + "/search", {"queries": ["ファイル 圧縮", "ネットワーク 設定"], "k": 4}
    )
    assert status == 200 and [len(r) for r in res["results"]] == [4, 4]
    q = np.random.default_rng(0).standard_normal((2, 64)).tolist()
    status, res = post(base + "/search", {"embeddings": q, "k": 2, "where": {"id": "doc5"}})
    assert status == 200 and [[r["id"] for r in rows] for rows in res["results"]] == [["doc5"]] * 2
    status, body = get(base + "/search?q=x&k=5&where=id=doc7")
    assert [r["id"] for r in json.loads(body)["results"]] == ["doc7"]
    health = json.loads(get(base + "/healthz")[1])
    assert health["rows"] == 120 and health["n_bits"] == 64


def test_the_server_says_where_it_is_and_logs_each_request(server):
    base, _ = server
    get(base + "/search?" + urllib.parse.urlencode({"q": "ログ", "k": 2}))
    log = server_log()
    assert f"at {base}/ (the search page" in log, log
    assert "GET /search?q=" in log and " 200" in log, log  # uvicorn's access log


def test_a_filter_on_a_field_no_document_has_is_a_400_naming_the_fields(server):
    base, idx = server
    status, body = get(base + "/search?q=x&where=nosuch=1")
    assert status == 400 and "'nosuch'" in body and "title" in body, body
    status, res = post(base + "/search", {"queries": ["x"], "where": {"titel": "a"}})
    assert status == 400 and "'titel'" in res["detail"], res
    status, body = get(base + "/search?q=x&where=id=no-such-id")  # a known field: no error
    assert status == 200 and json.loads(body)["results"] == []
    r = subprocess.run(
        [sys.executable, "-m", "hashpivot.cli", "search", str(idx), "x", "--where", "nosuch=1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "no document has the field 'nosuch'" in r.stderr, r.stderr


def test_search_page_in_headless_chromium(server):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs Debian's chromium (`.ci/run` installs it)")
    base, _ = server
    url = base + "/?" + urllib.parse.urlencode({"q": "ファイル 圧縮", "k": 4})
    r = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = r.stdout
    assert '<ol id="results">' in dom, r.stderr[-2000:]
    assert dom.count("<li>") == 4 and "ファイル 圧縮" in dom


def test_the_page_shows_one_passage_a_document_with_labelled_scores(tmp_path, tiny_model):
    """Passages of one document collapse into its best one (with a count of the others); the
    score is labelled; a cut snippet ends with an ellipsis. In headless Chromium."""
    from hashpivot.cli import main

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs Debian's chromium (`.ci/run` installs it)")
    recs = [
        {
            "id": f"page{i // 4}#{i % 4}",
            "doc": f"page{i // 4}",
            "title": f"ページ {i // 4}",
            "text": "ファイル 圧縮 " * 60 + str(i),  # 421+ characters: cut at 200
        }
        for i in range(40)
    ]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs))
    idx = tmp_path / "idx"
    build = ["build", str(corpus), "--out", str(idx), "--model", tiny_model, "--bits", "64"]
    assert main([*build, "--min-chars", "10", "--device", "cpu"]) == 0
    proc, base = start_server(idx, "--device", "cpu")
    try:
        url = base + "/?" + urllib.parse.urlencode({"q": "ファイル 圧縮", "k": 5})
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        r = subprocess.run([*cmd, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    finally:
        stop_server(proc)
    dom = r.stdout
    assert dom.count("<li>") == 5, r.stderr[-2000:]
    titles = re.findall(r'<div class="title">(.*?)</div>', dom)
    assert len(set(titles)) == 5  # five documents, not five passages of fewer
    assert dom.count("cosine similarity") == 5 and "more passage" in dom
    assert dom.count("…</div>") == 5  # every snippet was cut, and says so


def test_serve_with_ray_over_a_sharded_index(tmp_path):
    """`hashpivot serve --ray`: the same app as a Ray Serve deployment over the shards."""
    pytest.importorskip("ray")
    import signal

    from hashpivot import distributed

    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 64)).astype(np.float32)
    distributed.build(x, tmp_path / "s", n_shards=2, n_bits=64, use_ray=False)
    want = distributed.ShardedIndex.load(tmp_path / "s", use_ray=False).search(x[:2], 3)[1]
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hashpivot.cli",
            "serve",
            str(tmp_path / "s"),
            "--ray",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail("server exited: " + proc.stdout.read()[-3000:])
            try:
                if get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        status, res = post(base + "/search", {"embeddings": x[:2].tolist(), "k": 3})
        assert status == 200
        assert [[int(r["id"]) for r in rows] for rows in res["results"]] == want.tolist()
        assert get(base + "/search?q=x&k=0")[0] == 422
    finally:
        proc.send_signal(signal.SIGINT)  # ray.shutdown() runs at exit
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
