"""Files: a process killed in the middle of saving never leaves a broken index; a read-only
memory-mapped index is shared safely between processes; nothing is ever unpickled."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from hashpivot import Index
from test_index import data

ROOT = Path(__file__).resolve().parent

SAVER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from hashpivot import Index
    index = Index.load({path!r}, mmap=False)
    first, vecs = np.arange(100), np.load({vecs!r})
    if not np.isin(0, index.ids):  # the last run was killed in state B
        index.add(vecs, ids=first)
    print("ready", flush=True)
    while True:  # alternate between two states, saving each
        index.remove(first); index.save({path!r})
        index.add(vecs, ids=first); index.save({path!r})
""")


def test_kill_during_save_leaves_old_or_new_index(tmp_path):
    x = data(20000, d=96, seed=31)
    path = tmp_path / "idx"
    Index.build(x, n_bits=64, store="float32").save(path)
    np.save(tmp_path / "vecs.npy", x[:100])
    q = data(5, d=96, seed=32)
    ref = Index.load(path, mmap=False)
    want = {20000: ref.search(q, k=5)}
    ref.remove(np.arange(100))
    want[19900] = ref.search(q, k=5)
    rng = np.random.default_rng(0)
    outcomes = []
    for _trial in range(8):
        p = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SAVER.format(tests=str(ROOT), path=str(path), vecs=str(tmp_path / "vecs.npy")),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        loaded = Index.load(path)  # verifies every checksum
        assert len(loaded) in want, len(loaded)
        s, i = loaded.search(q, k=5)
        np.testing.assert_array_equal(i, want[len(loaded)][1])
        outcomes.append(len(loaded))
        leftovers = [f for f in os.listdir(path) if f.endswith(".tmp")]
        outcomes.append(len(leftovers))
    print("kill-during-save outcomes (rows, leftover temp files):", outcomes)


READER = textwrap.dedent("""
    import sys, numpy as np
    from hashpivot import Index
    index = Index.load({path!r}, mmap=True)
    q = np.load({q!r})
    s, i = index.search(q, k=5)
    np.save({out!r}, i)
""")


def test_mmap_index_shared_between_processes(tmp_path):
    x = data(3000, seed=33)
    path = tmp_path / "idx"
    index = Index.build(x, n_bits=64)
    index.save(path)
    q = data(4, seed=34)
    np.save(tmp_path / "q.npy", q)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                READER.format(
                    path=str(path), q=str(tmp_path / "q.npy"), out=str(tmp_path / f"o{j}.npy")
                ),
            ]
        )
        for j in range(3)
    ]
    assert all(p.wait() == 0 for p in procs)
    want = index.search(q, k=5)[1]
    for j in range(3):
        np.testing.assert_array_equal(np.load(tmp_path / f"o{j}.npy"), want)
    mapped = Index.load(path, mmap=True)
    with pytest.raises(ValueError):  # read-only: a stray write cannot corrupt the file
        mapped.codes[0, 0] = 1


def test_no_pickle_in_any_saved_file(tmp_path):
    index = Index.build(data(500), n_bits=64, store="int8")
    index.save(tmp_path / "idx")
    for f in (tmp_path / "idx").iterdir():
        if f.suffix == ".npy":
            a = np.load(f, allow_pickle=False)  # raises if an object array were stored
            assert a.dtype != object
        elif f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as z:
                assert all(z[k].dtype != object for k in z.files)
