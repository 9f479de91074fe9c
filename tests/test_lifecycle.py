"""The index's lifecycle probed as a careless user would (issue 33, classes 2-6): tuned settings
that adapt to k (Python and over HTTP), a save killed after the header switch leaves nothing
behind for good, a full disk at any write is a StorageError, memory that follows the index
(a build from np.memmap, add() on a mapped index), and CLI options checked before any work."""

import os
import subprocess
import sys
import textwrap
import urllib.parse
import warnings

import numpy as np
import pytest

import hashpivot as hp
from conftest import run_on_tmpfs
from hashpivot import errors

warnings.filterwarnings("ignore", category=UserWarning)


def data(n, d=64, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def tuned_extra(tmp_path_factory):
    """An ivf index with extra bits, tuned (a re-estimate of 5 x its candidates recorded)."""
    x = data(4000)
    idx = hp.Index.build(x, layout="ivf", n_bits=64, extra_bits=2)
    res = idx.tune(x[:100] + 0.3 * data(100, seed=1), target_recall=0.9)
    assert res.reached and idx.tuned["reestimate"] >= idx.tuned["candidates"]
    return x, idx


# ---- 2. a tuned setting is a rule that adapts to k ----
@pytest.mark.parametrize("k", [10, 136, 200, 1000])
def test_tuned_settings_adapt_to_k(tuned_extra, k):
    x, idx = tuned_extra
    s, i = idx.search(x[:3], k)  # the tuned re-estimate (135 rows at k=10 once) is no error
    assert i.shape == (3, k) and (i >= 0).all()
    plan = idx.plan(k)
    assert plan.candidates >= k and plan.reestimate >= plan.candidates
    t = idx.tuned
    if k > t["k"]:  # scaled by k / k_tuned, the re-estimate in the same proportion
        assert plan.candidates == -(-t["candidates"] * k // t["k"])


def test_tuned_settings_adapt_to_k_over_http(tmp_path, tiny_model):
    from conftest import make_corpus
    from hashpivot.cli import main
    from test_serve import get, start_server, stop_server

    corpus, _ = make_corpus(tmp_path, n=600)
    out = tmp_path / "idx"
    build = ["build", str(corpus), "--out", str(out), "--model", tiny_model, "--bits", "64"]
    build += ["--min-chars", "10", "--device", "cpu", "--layout", "ivf", "--extra-bits", "2"]
    assert main(build) == 0
    assert main(["tune", str(out), "--target", "0.9", "--device", "cpu"]) == 0
    tuned = hp.Index.load(out).tuned
    beyond = tuned["reestimate"] + 1  # a k above the tuned re-estimate used to be a 400
    assert beyond < 1000
    proc, base = start_server(out, "--device", "cpu")
    try:
        for k in (10, beyond, 1000):
            q = urllib.parse.urlencode({"q": "ファイル 圧縮", "k": k})
            status, body = get(f"{base}/search?{q}")
            assert status == 200, body
    finally:
        stop_server(proc)


def test_tune_says_how_many_threads_its_qps_used(tuned_extra):
    x, idx = tuned_extra
    res = idx.tune(x[:50], target_recall=0.8, threads=1, store=False)
    assert str(res).endswith("QPS on 1 thread") and res.threads == 1
    assert idx.tuned["qps_threads"] >= 1  # saved with the setting


def test_a_given_reestimate_below_the_tuned_candidates_reranks_what_it_re_estimates(tuned_extra):
    x, idx = tuned_extra
    small = max(10, idx.tuned["candidates"] // 2)
    plan = idx.plan(10, reestimate=small)  # the caller's count; the candidates were a default
    assert plan.candidates == small and plan.reestimate in (0, small)  # 0: the same rows
    assert idx.search(x[:2], 10, reestimate=small)[1].shape == (2, 10)
    with pytest.raises(errors.InvalidInputError, match="must be at least candidates"):
        idx.search(x[:2], 10, reestimate=small, candidates=small + 1)  # both given: a mistake


# ---- 3. a save killed after the header switch leaves nothing behind for good ----
KILLED_SAVE = textwrap.dedent("""
    import os, sys, numpy as np, hashpivot as hp, hashpivot.storage as st
    where = sys.argv[2]
    idx = hp.Index.load(sys.argv[1], mmap=False)
    idx.add(np.random.default_rng(5).standard_normal((7, idx.dim)).astype(np.float32))
    real = st._write_file
    def write(root, name, fn, mode):
        if where == "before" and name == st.HEADER:
            os._exit(9)  # killed before the header switch
        real(root, name, fn, mode)
        if where == "after" and name == st.HEADER:
            os._exit(9)  # killed right after it
    st._write_file = write
    idx.save(sys.argv[1])
""")


def named_files(d):
    from hashpivot.storage import HEADER, member_files, parse_header

    return member_files(parse_header((d / HEADER).read_bytes(), d / HEADER)) | {HEADER}


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("layout", ["flat", "ivf"])
def test_a_killed_save_leaves_no_generation_behind(tmp_path, where, layout):
    d = tmp_path / "idx"
    idx = hp.Index.build(data(500), n_bits=64, layout=layout, extra_bits=2 * (layout == "ivf"))
    idx.save(d)
    foreign = {"notes.txt": b"mine", "codes-000000000000.npy": b"looks like ours, is not"}
    for name, body in foreign.items():
        (d / name).write_bytes(body)
    r = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(d), where])
    assert r.returncode == 9
    assert len(hp.Index.load(d)) == (500 if where == "before" else 507)  # one or the other
    hp.Index.load(d).save(d)  # the next clean save collects what the killed one left
    left = {p.name for p in d.iterdir()} - set(foreign)
    assert left == named_files(d), sorted(left - named_files(d))
    for name, body in foreign.items():
        assert (d / name).read_bytes() == body


def test_a_whole_orphaned_generation_is_collected_and_a_lookalike_stays(tmp_path):
    """What a crash under an older hashpivot left (its journal did not list the previous
    generation): a whole generation that no header names goes at the next save."""
    import shutil

    d = tmp_path / "idx"
    hp.Index.build(data(300), n_bits=64, layout="ivf", extra_bits=0).save(d)
    orphan = "0123456789ab"
    for name in named_files(d) - {"header.json"}:
        stem = name.rsplit("-", 1)[0]
        shutil.copy(d / name, d / f"{stem}-{orphan}.{name.rsplit('.', 1)[1]}")
    (d / "codes-000000000000.npy").write_bytes(b"looks like ours, is not")  # no ids: no generation
    (d / "notes-0123456789ab.npy").write_bytes(b"not one of our arrays")
    hp.Index.load(d).save(d)
    left = {p.name for p in d.iterdir()}
    assert not any(orphan in f for f in left - {"notes-0123456789ab.npy"}), sorted(left)
    assert {"codes-000000000000.npy", "notes-0123456789ab.npy"} <= left
    assert left - {"codes-000000000000.npy", "notes-0123456789ab.npy"} == named_files(d)


# ---- 4. a full disk at the journal's write is a StorageError ----
FULL_DISK = textwrap.dedent("""
    import numpy as np, os, sys
    from hashpivot import Index, StorageError
    root = "/tmp/hp-full"
    x = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    idx = Index.build(x, n_bits=64)
    idx.save(root + "/idx")
    with open(root + "/filler", "wb", buffering=0) as f:  # fill it to its last byte
        try:
            while True:
                f.write(b"\\0" * 4096)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\\0")
        except OSError:
            pass
    idx.remove([0])
    try:
        idx.save(root + "/idx")
        print("saved")
    except StorageError as e:
        print("error", type(e).__name__, str(e).replace("\\n", " "))
    except OSError as e:
        print("raw", type(e).__name__, e)
    print("loads", len(Index.load(root + "/idx")))
    os.unlink(root + "/filler")
    idx.save(root + "/idx")
    print("again", len(Index.load(root + "/idx")))
""")


def test_a_full_disk_at_the_journal_is_a_storage_error():
    out = run_on_tmpfs(FULL_DISK, "/tmp/hp-full", "1m")
    assert out["error"].startswith("StorageError"), out
    assert "no space left" in out["error"] and ".hashpivot-pending.json" in out["error"]
    assert out["loads"] == "300" and out["again"] == "299"


# ---- 5. memory follows the index ----
def bench_child():
    """The child script of bench/bench_build_memory.py (one measurement, both places)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_build_memory.py"
    spec = importlib.util.spec_from_file_location("bench_build_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CHILD


def peak_build_bytes(path, layout):
    # one malloc arena and one OpenMP thread: the constant part (torch's training buffers) then
    # varies less from run to run
    env = dict(os.environ, MALLOC_ARENA_MAX="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", bench_child(), str(path), layout, "64"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.split()[-2])  # "peak seconds"


@pytest.mark.parametrize("layout", ["flat", "ivf"])
def test_a_build_from_a_memmap_holds_the_input_and_one_copy(tmp_path, layout):
    """The peak anonymous memory of a build grows by about one byte a byte of input (the
    float32 store the index keeps, its codes and per-row arrays) beyond a constant (torch's
    training samples): measured at two sizes in child processes, 0.4-1.6 here (a loaded CI
    machine gave the 1.6). Before: 2.5-2.9 (normalisation copies, a boolean copy for the
    finiteness check)."""
    sizes = (100_000, 800_000)  # a wide span: the constant part's noise (~100 MB) matters less
    peaks = []
    for n in sizes:
        p = tmp_path / f"x{n}.npy"
        x = np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, 128))
        for s in range(0, n, 100_000):
            x[s : s + 100_000] = data(min(100_000, n - s), 128, seed=s)
        x.flush()
        del x
        peaks.append(peak_build_bytes(p, layout))
    grown = (peaks[1] - peaks[0]) / ((sizes[1] - sizes[0]) * 128 * 4)
    assert grown < 2.0, f"{grown:.2f} bytes of memory a byte of input ({peaks})"


ADD_MAPPED = textwrap.dedent("""
    import sys, numpy as np, hashpivot as hp
    from hashpivot.layouts.base import is_mapped
    def anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    idx = hp.Index.load(sys.argv[1], mmap=True)
    extra = idx._version.rows.extra
    planes = 0 if extra is None else extra.nbytes
    more = np.random.default_rng(1).standard_normal((100, idx.dim)).astype(np.float32)
    idx.add(more[:50])  # the first add loads torch's kernels: not measured
    a0 = anon()
    idx.add(more[50:])
    grown = anon() - a0
    extra = idx._version.rows.extra
    print(planes, grown, int(extra is not None and is_mapped(extra)))
""")


def test_add_to_a_mapped_ivf_index_keeps_the_extra_planes_on_disk(tmp_path):
    """The same add() on two mapped indexes, with and without extra bits: the one with them
    grows its memory by much less than its planes (before: twice the planes, concatenated and
    then ordered in memory)."""
    from hashpivot.layouts.base import is_mapped

    x = data(60_000, 256, seed=3)
    grown = {}
    for extra in (0, 3):
        idx = hp.Index.build(x, layout="ivf", n_bits=256, extra_bits=extra, store="int8")
        idx.save(tmp_path / f"idx{extra}")
        r = subprocess.run(
            [sys.executable, "-c", ADD_MAPPED, str(tmp_path / f"idx{extra}")],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        planes, grown[extra], mapped = map(int, r.stdout.split())
        assert mapped == (extra > 0)
    assert planes >= 7_000_000
    assert grown[3] - grown[0] < planes / 2, (planes, grown)
    q, more = x[:20], data(50, 256, seed=9)
    in_memory = hp.Index.load(tmp_path / "idx3", mmap=False)
    in_memory.add(more)
    loaded = hp.Index.load(tmp_path / "idx3", mmap=True)
    loaded.add(more)
    assert is_mapped(loaded._version.rows.extra)
    for kw in ({}, {"nprobe": loaded.shape().n_groups, "rerank": False}):
        a, b = in_memory.search(q, 10, **kw), loaded.search(q, 10, **kw)
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    loaded.save(tmp_path / "idx3")
    again = hp.Index.load(tmp_path / "idx3")
    assert len(again) == 60_050
    assert np.array_equal(np.asarray(again._version.rows.extra), loaded._version.rows.extra)


# ---- 6. the CLI checks every option combination before any work ----
@pytest.mark.parametrize(
    "flags,message",
    [
        (
            ["--layout", "flat", "--extra-bits", "2"],
            "extra_bits=2 is not an option of layout='flat'",
        ),
        (["--layout", "ivf", "--pivots", "8"], "n_pivots=8 is not an option of layout='ivf'"),
        (["--bits", "512"], "n_bits=512 is more than the embedding dimension 64"),
        (["--min-chars", "80", "--max-chars", "40"], "--min-chars 80 is more than --max-chars 40"),
    ],
)
def test_the_cli_refuses_impossible_options_before_embedding(tmp_path, tiny_model, flags, message):
    from conftest import make_corpus

    corpus, _ = make_corpus(tmp_path, n=40)
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "hashpivot.cli", "build", str(corpus), "--out"]
    cmd += [str(tmp_path / "idx"), "--model", tiny_model, "--cache", str(cache), *flags]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "idx").exists()  # no file work
    assert not cache.exists() or not any(cache.rglob("*.npy"))  # no embedding cached


def test_index_build_refuses_options_its_layout_ignores():
    x = data(300)
    with pytest.raises(errors.InvalidInputError, match="n_pivots=8 is not an option"):
        hp.Index.build(x, layout="ivf", extra_bits=0, n_pivots=8, n_bits=64)
    with pytest.raises(errors.InvalidInputError, match="n_lists=5 is not an option"):
        hp.Index.build(x, layout="flat", n_lists=5, n_bits=64)
    with pytest.raises(errors.InvalidInputError, match="n_partitions=5 is not an option"):
        hp.Index.build(x, layout="ivf", extra_bits=0, n_partitions=5, n_bits=64)


# ---- 4b. a full disk under the embedding cache is a StorageError, not a SIGBUS ----
EMBED_FULL = textwrap.dedent("""
    import sys
    from hashpivot import StorageError
    from hashpivot.embed import embed_corpus, get_encoder
    enc = get_encoder({model!r}, device="cpu")
    texts = [f"ファイル 圧縮 {{i}}" for i in range(2000)]  # 2,000 x 64 floats: 512 KB
    try:
        embed_corpus(enc, texts, "/tmp/hp-cache", progress=False)
        print("embedded all")
    except StorageError as e:
        print("error", type(e).__name__, str(e).replace("\\n", " "))
""")


def test_a_full_disk_under_the_embedding_cache_is_a_storage_error(tiny_model):
    out = run_on_tmpfs(EMBED_FULL.format(model=tiny_model), "/tmp/hp-cache", "256k")
    assert out["error"].startswith("StorageError") and "--cache" in out["error"], out
