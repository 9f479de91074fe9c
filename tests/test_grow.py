"""Growing an index after its build: `hashpivot add IDX more.jsonl` and `hashpivot remove IDX
--ids ...` through real subprocesses, each one generation (index and documents), and a running
`hashpivot serve` that answers from the new generation without a restart (real HTTP on
127.0.0.1)."""

import json
import time
import urllib.parse

import pytest

from conftest import make_corpus, run_cli

pytest.importorskip("fastapi")


cli = run_cli


def ids_of(base, query, **params):
    from test_serve import get

    q = urllib.parse.urlencode({"q": query, "k": 50, **params}, doseq=True)
    status, body = get(f"{base}/search?{q}")
    assert status == 200, body
    return [r["id"] for r in json.loads(body)["results"]]


def until(check, seconds=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_add_and_remove_documents_while_a_server_answers(tmp_path, tiny_model):
    from test_serve import get, start_server, stop_server

    corpus, _ = make_corpus(tmp_path, n=80)
    idx = tmp_path / "idx"
    build = ["build", corpus, "--out", idx, "--model", tiny_model, "--bits", "64"]
    rc, out, err = cli(*build, "--min-chars", "10", "--device", "cpu")
    assert rc == 0, err
    proc, base = start_server(idx, "--device", "cpu")
    try:
        assert json.loads(get(base + "/healthz")[1])["rows"] == 80
        more = tmp_path / "more.jsonl"
        new = [
            {"id": f"new{i}", "title": f"新しい文書 {i}", "text": f"ファイル 圧縮 新しい {i} " * 3}
            for i in range(5)
        ]
        more.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in new))
        rc, out, err = cli("add", idx, more, "--min-chars", "10", "--device", "cpu")
        assert rc == 0 and "added 5 documents" in out, err
        # the running server picks up the new generation: rows and documents together
        assert until(lambda: json.loads(get(base + "/healthz")[1])["rows"] == 85)
        assert ids_of(base, "ファイル 圧縮", where="id=new3") == ["new3"]
        rc, out, err = cli("add", idx, more, "--min-chars", "10", "--device", "cpu")
        assert rc == 2 and "already in the index" in err  # nothing added twice
        rc, out, err = cli("remove", idx, "--ids", "new3", "doc7")
        assert rc == 0 and "removed 2 documents" in out, err
        assert until(lambda: json.loads(get(base + "/healthz")[1])["rows"] == 83)
        found = ids_of(base, "ファイル 圧縮")
        assert "new3" not in found and "doc7" not in found and "new2" in found
        rc, out, err = cli("remove", idx, "--ids", "no-such-doc")
        assert rc == 2 and "not in the index" in err
    finally:
        stop_server(proc)
    # from Python, as the README shows: the same index, loaded
    import hashpivot as hp

    index = hp.Index.load(idx)
    assert len(index) == 83 and len(index.documents) == 85  # removed documents stay stored
