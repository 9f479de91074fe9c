"""Fuzzing: a hypothesis state machine over build/add/remove/search/save/load against a
brute-force model, and the atheris loader fuzz target run for a bounded number of inputs."""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hashpivot import Index

DIM = 64
POOL = np.random.default_rng(7).standard_normal((600, DIM)).astype(np.float32)
POOL /= np.linalg.norm(POOL, axis=1, keepdims=True)


class IndexModel(RuleBasedStateMachine):
    """The model: a dict id -> embedding; exact search = float brute force over it."""

    def __init__(self):
        super().__init__()
        self.index = Index.build(POOL[:100], n_bits=64, store="float32", seed=3, n_pivots=8)
        self.model = {i: POOL[i] for i in range(100)}
        self.next_row = 100
        self.tmp = Path(tempfile.mkdtemp(prefix="hp-sm-"))

    @rule(n=st.integers(1, 40), explicit=st.booleans())
    def add(self, n, explicit):
        n = min(n, len(POOL) - self.next_row)
        if n <= 0:
            return
        x = POOL[self.next_row : self.next_row + n]
        ids = None
        if explicit:
            ids = np.arange(10_000 + self.next_row, 10_000 + self.next_row + n)
        got = self.index.add(x, ids=ids)
        for i, v in zip(got, x):
            assert int(i) not in self.model
            self.model[int(i)] = v
        self.next_row += n

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def remove(self, data):
        ids = sorted(self.model)
        chosen = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=10, unique=True))
        assert self.index.remove(chosen) == len(chosen)
        for i in chosen:
            del self.model[i]

    @rule(q=st.integers(0, len(POOL) - 1), k=st.integers(1, 15))
    def exact_search(self, q, k):
        s, got = self.index.search(POOL[q], k=k, candidates=max(1, len(self.model)))
        ids = np.array(sorted(self.model), dtype=np.int64)
        if len(ids):
            sims = np.stack([self.model[i] for i in ids]) @ POOL[q]
            want = ids[np.lexsort((ids, -sims))][:k]
        else:
            want = np.zeros(0, np.int64)
        np.testing.assert_array_equal(got[0][: len(want)], want)
        assert (got[0][len(want) :] == -1).all()

    @rule(q=st.integers(0, len(POOL) - 1), t=st.sampled_from([None, 6, 12]))
    def hamming_search(self, q, t):
        d, got = self.index.search(POOL[q], k=8, threshold=t, rerank=False, scoring="hamming")
        codes = {int(i): c for i, c in zip(self.index.ids, self.index.codes)}
        qc = self.index.itq.encode(POOL[q])[0]
        for dist, i in zip(d[0], got[0]):
            if i >= 0:
                assert int(np.unpackbits(codes[int(i)] ^ qc).sum()) == dist

    @rule(mmap=st.booleans())
    def save_and_load(self, mmap):
        self.index.save(self.tmp)
        self.index = Index.load(self.tmp, mmap=mmap)

    @invariant()
    def same_ids(self):
        assert sorted(int(i) for i in self.index.ids) == sorted(self.model)


IndexModel.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
TestIndexStateMachine = IndexModel.TestCase


def test_atheris_fuzzes_the_loader():
    pytest.importorskip("atheris")
    runs = 1500
    r = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("fuzz_loader.py")),
            f"-runs={runs}",
            "-max_total_time=240",
            "-rss_limit_mb=4096",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", r.stderr)
    assert done and int(done.group(1)) >= 500, r.stderr[-2000:]
    print(f"atheris: {done.group(0)}")
