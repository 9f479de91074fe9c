"""Edges: 1 document, 10M documents (memory measured), 64 and 1024 bits, k = n."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ref_knn
from hashpivot import Index
from test_index import data


def test_one_document():
    x = data(1, seed=41)
    index = Index.build(np.repeat(x, 3, axis=0) + data(3, seed=42) * 1e-3, n_bits=64)
    index.remove([1, 2])
    s, i = index.search(x, k=3)  # k capped at the one row left
    assert list(i[0]) == [0] and np.isfinite(s).all()
    codes = np.zeros((1, 8), np.uint8)
    one = Index.from_codes(codes, n_pivots=8)
    d, i = one.search_codes(codes, k=2)
    assert list(i[0]) == [0] and list(d[0]) == [0]
    d, i = one.search_codes(codes, k=1, threshold=0, allowed=[5])  # nothing qualifies: padded
    assert list(i[0]) == [-1] and list(d[0]) == [65]


@pytest.mark.parametrize("n_bits", [64, 1024])
def test_from_codes_64_and_1024_bits(n_bits):
    rng = np.random.default_rng(n_bits)
    codes = rng.integers(0, 256, (3000, n_bits // 8), dtype=np.uint8)
    q = rng.integers(0, 256, (5, n_bits // 8), dtype=np.uint8)
    index = Index.from_codes(codes, ids=np.arange(3000) * 7, n_pivots=8)
    assert index.table.dtype == (np.uint8 if n_bits < 256 else np.uint16)
    d, i = index.search_codes(q, k=len(codes))  # k = n: every code, in order
    dr, ir = ref_knn(q, codes, len(codes))
    np.testing.assert_array_equal(d, dr)
    assert (np.sort(i, axis=1) == np.arange(3000) * 7).all()
    t = n_bits // 8
    d, i = index.search_codes(q, k=10, threshold=t)
    qd = np.unpackbits(q[:, None] ^ index.pivots[None], axis=2).sum(2)
    for j in range(5):
        ok = (np.abs(index.table.astype(int) - qd[j]) <= t).all(1)
        want = ref_knn(q[j : j + 1], index.codes, 10, rows=[np.flatnonzero(ok)])[0]
        np.testing.assert_array_equal(d[j : j + 1], want)


def test_1024_bit_itq_index():
    x = data(1200, d=1024, seed=43)
    index = Index.build(x, n_bits=1024, store="float16", n_pivots=8, n_iter=5)  # the limit, not ITQ
    assert index.codes.shape == (1200, 128) and index.levels == 1
    s, i = index.search(x[:3], k=2, threshold=300)
    assert list(i[:, 0]) == [0, 1, 2]


TEN_MILLION = textwrap.dedent("""
    import resource, numpy as np
    from hashpivot import Index
    n = 10_000_000
    rng = np.random.default_rng(0)
    codes = np.empty((n, 16), np.uint8)
    for s in range(0, n, 1 << 20):
        end = min(n, s + (1 << 20))
        codes[s:end] = rng.integers(0, 256, (end - s, 16), dtype=np.uint8)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index = Index.from_codes(codes, n_pivots=8)
    del codes
    d, i = index.search_codes(index.codes[:3].copy(), k=5)
    assert (d[:, 0] == 0).all()
    d, i = index.search_codes(index.codes[:3].copy(), k=5, threshold=10)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(index.codes.nbytes, index.table.nbytes, index.ids.nbytes, base * 1024, peak * 1024)
""")


def test_ten_million_codes_memory():
    r = subprocess.run(
        [sys.executable, "-c", TEN_MILLION], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-2000:]
    codes, table, ids, base, peak = map(int, r.stdout.split())
    assert codes == 160_000_000 and table == 80_000_000 and ids == 80_000_000
    # building sorts the rows once (a second copy of codes, table and ids while it runs)
    assert peak - base < 1_000_000_000, (peak - base) / 1e6
    print(
        f"10M codes: index arrays {(codes + table + ids) / 1e6:.0f} MB, "
        f"peak growth during build+search {(peak - base) / 1e6:.0f} MB"
    )
