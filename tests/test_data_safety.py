"""Never lose a user's data (issue 11): saves touch only their own files, concurrent saves and
loads never break an index, loads cannot be tricked into allocating, following links or
accepting arrays a search would reject, and every limit is a named HashpivotError. One test (or
more) per class of the issue, numbered as there."""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import hashpivot as hp
from conftest import run_on_tmpfs, write_header
from hashpivot import ITQ, Index, errors
from hashpivot.cli import main
from hashpivot.storage import HEADER
from test_index import data

ROOT = Path(__file__).resolve().parents[1]


def header(path):
    return json.loads((path / HEADER).read_text())


def named_files(path):
    h = header(path)
    return {e["file"] for e in h["arrays"].values()} | set(h.get("files", {}).values()) | {HEADER}


@pytest.fixture()
def small():
    x = data(300, seed=90)
    return x, Index.build(x, n_bits=64, store="float32")


# ---- 1. a save removes only files that a previous save of this index wrote ----
def test_1_foreign_files_survive_save(tmp_path, small):
    x, index = small
    d = tmp_path / "idx"
    index.save(d)
    np.save(d / "embeddings.npy", x)
    (d / "notes.npz").write_bytes(b"mine")
    (d / "draft.tmp").write_text("mine too")
    (d / "codes-000000000000.npy").write_bytes(b"looks like ours, is not")
    index.remove([0, 1])
    index.save(d)
    index.save(d)
    assert np.array_equal(np.load(d / "embeddings.npy"), x)
    assert (d / "notes.npz").read_bytes() == b"mine" and (d / "draft.tmp").read_text() == "mine too"
    assert (d / "codes-000000000000.npy").read_bytes() == b"looks like ours, is not"
    ours = {p.name for p in d.iterdir()} - {
        "embeddings.npy",
        "notes.npz",
        "draft.tmp",
        "codes-000000000000.npy",
    }
    assert ours == named_files(d)  # nothing else: the previous generations are gone
    assert len(Index.load(d)) == 298


def test_1_saved_directory_holds_only_named_files(tmp_path, small):
    _, index = small
    for layout in ("flat", "partitioned", "ivf"):
        idx = Index.build(data(500, seed=91), n_bits=64, layout=layout)
        idx.save(tmp_path / layout)
        idx.add(data(5, seed=92))
        idx.save(tmp_path / layout)
        assert {p.name for p in (tmp_path / layout).iterdir()} == named_files(tmp_path / layout)


def test_1_non_index_directory_is_refused_untouched(tmp_path, small):
    x, index = small
    d = tmp_path / "data"
    d.mkdir()
    np.save(d / "embeddings.npy", x)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(errors.IndexDirectoryError, match="not empty"):
        index.save(d)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    (d / HEADER).write_text("{not an index")
    with pytest.raises(errors.IndexDirectoryError):
        index.save(d)


def test_1_cli_build_into_the_embeddings_directory_is_refused(tmp_path, capsys):
    d = tmp_path / "data"
    d.mkdir()
    recs = [{"id": i, "text": f"document number {i} " * 4} for i in range(20)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    x = data(20, d=384, seed=93)
    np.save(d / "embeddings.npy", x)
    np.save(d / "query_embeddings.npy", x[:3])
    code = main(
        [
            "build",
            str(tmp_path / "c.jsonl"),
            "--out",
            str(d),
            "--embeddings",
            str(d / "embeddings.npy"),
            "--bits",
            "64",
            "--min-chars",
            "5",
        ]
    )
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert np.array_equal(np.load(d / "embeddings.npy"), x)
    assert np.array_equal(np.load(d / "query_embeddings.npy"), x[:3])


# ---- 2. concurrent saves leave a loadable index (one of the saved states) ----
SAVER = textwrap.dedent("""
    from hashpivot import Index
    index = Index.load({src!r}, mmap=False)  # built once by the test: no torch in the savers
    for _ in range({rounds}):
        index.save({path!r})
""")


def test_2_processes_saving_to_one_directory(tmp_path):
    x = data(400, seed=94)
    sources = []
    for j in range(2):
        n = 300 + 50 * j
        Index.build(x[:n], n_bits=64, ids=np.arange(n) + 1000 * j, seed=j).save(tmp_path / f"s{j}")
        sources.append(str(tmp_path / f"s{j}"))
    path = tmp_path / "idx"
    for trial in range(12):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SAVER.format(src=src, rounds=10, path=str(path))]
            )
            for src in sources
        ]
        assert all(p.wait(timeout=120) == 0 for p in procs)
        loaded = Index.load(path)  # verifies every checksum
        assert (len(loaded), int(loaded.ids.min())) in ((300, 0), (350, 1000)), trial
        assert {p.name for p in path.iterdir()} == named_files(path)


def test_2_threads_saving_to_one_directory(tmp_path):
    import threading

    a = Index.build(data(300, seed=95), n_bits=64)
    b = Index.build(data(350, seed=96), n_bits=64)
    path = tmp_path / "idx"
    errs = []

    def run(idx):
        try:
            for _ in range(10):
                idx.save(path)
        except Exception as e:  # pragma: no cover - reported below
            errs.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in (a, b)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errs and len(Index.load(path)) in (300, 350)


# ---- 3. loads beside a saving process never report a false corruption ----
LOOP_SAVER = textwrap.dedent("""
    import sys, time, numpy as np
    from hashpivot import Index
    index = Index.load({path!r}, mmap=False)
    extra = np.load({vecs!r})
    print("ready", flush=True)
    t0 = time.time()
    while time.time() - t0 < {seconds}:
        index.add(extra[:5]); index.save({path!r})
        index.remove(index.ids[-5:]); index.save({path!r})
""")


def test_3_loads_during_saves_see_old_or_new(tmp_path):
    path = tmp_path / "idx"
    Index.build(data(2000, seed=97), n_bits=64).save(path)
    np.save(tmp_path / "extra.npy", data(5, seed=98))
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LOOP_SAVER.format(path=str(path), vecs=str(tmp_path / "extra.npy"), seconds=10),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "ready"
    loads, bad = 0, []
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 12:
        try:
            idx = Index.load(path, mmap=True)
            assert len(idx) in (2000, 2005)
            loads += 1
        except errors.IndexFormatError as e:
            bad.append(str(e))
    p.wait(timeout=30)
    assert p.returncode == 0 and loads > 20
    assert not bad, bad[:3]
    print(f"{loads} loads beside a saving process, 0 false corruption reports")


# ---- 4. a failed (disk full) save cleans up and names the file ----
def test_4_disk_full_save_cleans_up(tmp_path, small, monkeypatch):
    _, index = small
    path = tmp_path / "idx"
    index.save(path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    real_save = np.save
    calls = []

    def full(f, a, allow_pickle=False):
        calls.append(1)
        if len(calls) == 3:  # the third array: the disk fills up halfway
            f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(f, a, allow_pickle=allow_pickle)

    monkeypatch.setattr(np, "save", full)
    index.remove([5])
    with pytest.raises(errors.StorageError, match=r"failed writing .*no space left") as e:
        index.save(path)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    monkeypatch.setattr(np, "save", real_save)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # the old index, intact
    assert len(Index.load(path)) == 300


TMPFS_SAVE = textwrap.dedent("""
    import numpy as np, os, sys
    from hashpivot import Index, StorageError
    x = np.load({vecs!r})
    small = Index.build(x[:200], n_bits=64)
    small.save("/tmp/hp-tmpfs/idx")
    big = Index.build(x, n_bits=64)
    try:
        big.save("/tmp/hp-tmpfs/idx")
        print("saved")
    except StorageError as e:
        print("error", str(e).replace("\\n", " "))
    left = sorted(os.listdir("/tmp/hp-tmpfs/idx"))
    print("files", len(left), sum(os.path.getsize("/tmp/hp-tmpfs/idx/" + f) for f in left))
    print("loads", len(Index.load("/tmp/hp-tmpfs/idx")))
    small.save("/tmp/hp-tmpfs/idx")  # the same small index again: there is room
    print("again", len(Index.load("/tmp/hp-tmpfs/idx")))
""")


def test_4_disk_full_on_a_real_small_tmpfs(tmp_path):
    np.save(tmp_path / "x.npy", data(6000, d=256, seed=99))
    out = run_on_tmpfs(TMPFS_SAVE.format(vecs=str(tmp_path / "x.npy")), "/tmp/hp-tmpfs", "2m")
    assert "no space left" in out["error"] and "MB free" in out["error"]
    assert out["loads"] == "200" and out["again"] == "200"


# ---- 5. a radius beyond 2**31 - 1 still means every code ----
def test_5_huge_radius(small):
    codes = np.random.default_rng(0).integers(0, 256, (50, 16), dtype=np.uint8)
    d, i = hp.hamming_range(codes[0], codes, radius=2**31 - 1)
    assert len(i) == 50
    d, i = hp.hamming_range(codes[0], codes, radius=10**30)
    assert len(i) == 50


# ---- 6. counts capped at the rows; beyond 2**31 a named error ----
def test_6_counts_are_capped(small, capsys, tmp_path):
    x, index = small
    s, i = index.search(x[:2], k=10, candidates=10**9, shortlist=10**9)
    assert i.shape == (2, 10) and (i >= 0).all()
    s, i = index.search(x[:2], k=2**31 - 1)
    assert i.shape == (2, 300)
    for kw in ({"candidates": 2**31}, {"k": 2**31}, {"shortlist": 2**40}):
        with pytest.raises(errors.LimitError):
            index.search(x[:1], **kw)


# ---- 7. a crafted ITQ file cannot make a load allocate ----
def _bomb(path, itq, member="extra.npy", size=256 << 20):
    buf = Path(path)
    itq.save(buf)
    with (
        zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open(member, "w", force_zip64=True) as f,
    ):
        chunk = b"\0" * (1 << 22)
        for _ in range(size // len(chunk)):
            f.write(chunk)


BOMB_LOAD = textwrap.dedent("""
    import resource, sys
    from hashpivot import ITQ
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        ITQ.load(sys.argv[1])
        print("loaded", end=" ")
    except Exception as e:
        print(type(e).__name__, end=" ")
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
""")


def test_7_itq_zip_bomb(tmp_path):
    itq = ITQ(64).fit(data(300, seed=100))
    _bomb(tmp_path / "bomb.npz", itq)
    assert (tmp_path / "bomb.npz").stat().st_size < 2 << 20
    r = subprocess.run(
        [sys.executable, "-c", BOMB_LOAD, str(tmp_path / "bomb.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    kind, grew_mb = r.stdout.split()
    assert kind == "loaded" and int(grew_mb) < 64  # the unknown member is never read
    # a member whose header declares a huge shape is refused before it is read
    with zipfile.ZipFile(tmp_path / "bomb.npz") as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != "extra.npy"}
    hdr = (
        b"\x93NUMPY\x01\x00" + b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,), }"
    )
    hdr = hdr[:8] + (118).to_bytes(2, "little") + hdr[8:].ljust(118 - 1) + b"\n"
    members["mean.npy"] = hdr
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(errors.CorruptFileError):
        ITQ.load(tmp_path / "huge.npz")


# ---- 8. header fields are checked before anything is allocated ----
@pytest.mark.parametrize(
    "field, value",
    [
        ("levels", 5),
        ("n_bits", 10**6),
        ("n", 10**15),
        ("dim", 10**9),
        ("n_pivots", 1000),
        ("store", "int4"),
        ("layout", "tree"),
        ("meta", [1]),
        ("n", -1),
    ],
)
def test_8_header_fields_are_bounded(tmp_path, small, field, value):
    _, index = small
    index.save(tmp_path / "idx")
    h = header(tmp_path / "idx")
    h[field] = value
    write_header(tmp_path / "idx", h)
    with pytest.raises(errors.IndexFormatError):
        Index.load(tmp_path / "idx", mmap=False)


# ---- 9. links out of the directory are refused ----
def test_9_symlinked_members_are_refused(tmp_path, small):
    _, index = small
    d = tmp_path / "idx"
    index.save(d)
    h = header(d)
    victim = d / h["arrays"]["codes"]["file"]
    outside = tmp_path / "elsewhere.npy"
    shutil.move(victim, outside)
    os.symlink(outside, victim)
    with pytest.raises(errors.CorruptFileError, match="symlink"):
        Index.load(d)
    os.unlink(victim)
    shutil.move(outside, victim)
    h["arrays"]["codes"]["file"] = "../elsewhere.npy"
    write_header(d, h)
    with pytest.raises(errors.CorruptFileError, match="bad file name"):
        Index.load(d)


# ---- 10. arrays a search would reject are refused at load ----
def _replace_array(d, name, arr):
    from hashpivot._io import sha256_array

    h = header(d)
    e = h["arrays"][name]
    np.save(d / e["file"], arr)
    e["sha256"] = sha256_array(np.ascontiguousarray(arr))
    e["dtype"], e["shape"] = str(arr.dtype), list(arr.shape)
    write_header(d, h)


def test_10_fortran_order_and_wrong_store_dtype(tmp_path, small):
    _, index = small
    d = tmp_path / "idx"
    index.save(d)
    codes = np.asfortranarray(np.load(d / header(d)["arrays"]["codes"]["file"]))
    _replace_array(d, "codes", codes)
    with pytest.raises(errors.CorruptFileError, match="Fortran"):
        Index.load(d)
    index.save(d)
    vec = np.load(d / header(d)["arrays"]["vectors"]["file"]).astype(np.float64)
    _replace_array(d, "vectors", vec)
    with pytest.raises(errors.CorruptFileError, match="float32"):
        Index.load(d)


def test_10_flat_layout_consistency_is_checked(tmp_path, small):
    index = Index.build(small[0], n_bits=64, store="float32", n_pivots=8)
    d = tmp_path / "idx"
    index.save(d)
    table = np.load(d / header(d)["arrays"]["table"]["file"]).copy()
    table[5, 3] ^= 1  # a wrong pivot distance
    _replace_array(d, "table", table)
    with pytest.raises(errors.CorruptFileError, match="pivot distances"):
        Index.load(d)
    index.save(d)
    off = np.load(d / header(d)["arrays"]["offsets"]["file"]).copy()
    off[1:-1] = np.sort(np.random.default_rng(0).integers(0, 300, len(off) - 2))
    _replace_array(d, "offsets", off)
    with pytest.raises(errors.CorruptFileError, match="offsets"):
        Index.load(d)


# ---- 11. raw exceptions become named ones ----
def test_11_named_errors(tmp_path, small):
    x, index = small
    E = errors.HashpivotError
    cases = [
        lambda: index.search(x[:1], k=2**31),
        lambda: index.search(x[:1], threads=2**31),
        lambda: hp.hamming_knn(index.codes[:1], index.codes, 2**31),
        lambda: hp.hamming_knn(index.codes[:1], index.codes, 5, threads=2**31),
        lambda: Index.build(x, n_bits=64, layout="partitioned").search(x[:1], nprobe=2**31),
        lambda: hp.hamming_range(index.codes[0], index.codes, radius=-1),
        lambda: index.remove([1, None]),
        lambda: Index.build(x, n_bits=64, seed=-1),
        lambda: Index.build(x, n_bits=64, pivot_sample=0),
        lambda: Index.build(x, n_bits=64, n_pivots="8"),
        lambda: ITQ.load(tmp_path / "missing.npz"),
        lambda: Index.build(x, n_bits=64, meta={"x": np.int64(1)}).save(tmp_path / "meta"),
    ]
    for call in cases:
        with pytest.raises(E):
            call()
    assert not (tmp_path / "meta").exists() or not any((tmp_path / "meta").iterdir())
    with pytest.raises(FileNotFoundError):  # the named error is also the standard one
        ITQ.load(tmp_path / "missing.npz")
    codes_index = Index.from_codes(index.codes[:5].copy(), ids=[2**63 - 3, 1, 2, 3, 4])
    with pytest.raises(errors.LimitError, match="2\\*\\*63"):
        codes_index.add_codes(index.codes[:5].copy())
    # k = 2**31 - 1 is allowed: capped at the rows, no MemoryError
    assert index.search(x[:1], k=2**31 - 1)[1].shape == (1, 300)


# ---- 12. a tiny but non-zero query is a query ----
def test_12_tiny_queries(small):
    x, index = small
    q = x[:3] * np.float32(1e-24)
    assert not np.einsum("ij,ij->i", q, q).any()  # x.x underflows in float32
    s, i = index.search(q, k=5)
    s0, i0 = index.search(x[:3], k=5)
    np.testing.assert_array_equal(i, i0)
    with pytest.raises(errors.ZeroVectorError):
        index.search(np.zeros((1, x.shape[1]), np.float32))


# ---- 14. CLI mistakes are one line, exit code 2 ----
def test_14_cli_errors_are_one_line(tmp_path, capsys):
    recs = [{"id": i, "text": f"document number {i} " * 4} for i in range(30)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in recs))
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text(json.dumps(recs[0]) + "\n42\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(recs[0]) + '\n{"id": 1, "text": \n')
    np.savez(tmp_path / "x.npz", a=np.zeros((3, 3)))
    idx = tmp_path / "idx"
    np.save(tmp_path / "emb.npy", data(30, d=384, seed=101))
    assert (
        main(
            [
                "build",
                str(corpus),
                "--out",
                str(idx),
                "--embeddings",
                str(tmp_path / "emb.npy"),
                "--bits",
                "64",
                "--min-chars",
                "5",
            ]
        )
        == 0
    )
    capsys.readouterr()
    calls = [
        (
            [
                "build",
                str(corpus),
                "--out",
                str(tmp_path / "o1"),
                "--embeddings",
                str(tmp_path / "x.npz"),
            ],
            ".npy",
        ),
        (["eval", str(idx), "--n-queries", "0"], "n-queries"),
        (["search", str(idx), "q", "-k", "2147483648"], "2,147,483,647"),
        (
            ["build", str(bad_line), "--out", str(tmp_path / "o2"), "--min-chars", "5"],
            "bad.jsonl:2",
        ),
        (
            ["build", str(broken), "--out", str(tmp_path / "o3"), "--min-chars", "5"],
            "broken.jsonl:2",
        ),
        (["eval", str(idx), "--limits", ""], "limits"),
        (["build", str(corpus), "--out", str(tmp_path / "o4"), "--limit", "0"], "limit"),
        (["search", str(tmp_path / "nope"), "q"], "nope"),
    ]
    for argv, words in calls:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, (argv, err)


def test_14_cli_limit_with_embeddings_takes_the_first_rows(tmp_path, capsys):
    recs = [{"id": i, "text": f"document number {i} " * 4} for i in range(30)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in recs))
    np.save(tmp_path / "emb.npy", data(30, d=384, seed=102))
    assert (
        main(
            [
                "build",
                str(corpus),
                "--out",
                str(tmp_path / "idx"),
                "--embeddings",
                str(tmp_path / "emb.npy"),
                "--bits",
                "64",
                "--min-chars",
                "5",
                "--limit",
                "12",
            ]
        )
        == 0
    )
    assert "indexed 12 documents" in capsys.readouterr().out
    assert len(Index.load(tmp_path / "idx")) == 12


# ---- 15. the numpy the package needs is the numpy it says it needs ----
def test_15_numpy_requirement_matches_the_code():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"numpy>=2' in text  # np.bitwise_count and friends are numpy 2 only
    assert int(np.__version__.split(".")[0]) >= 2


# ---- 16. saved files respect the umask ----
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_16_umask(tmp_path, small, mask, mode):
    _, index = small
    old = os.umask(mask)
    try:
        index.save(tmp_path / "idx")
    finally:
        os.umask(old)
    for p in (tmp_path / "idx").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == mode, p.name
