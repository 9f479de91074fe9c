"""Every kernel against the numpy reference, on every instruction set, with hypothesis shapes."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hashpivot as hp
from conftest import ref_distances, ref_knn

WIDTHS = [64, 128, 192, 256, 512, 1024]
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def make_codes(rng, n, n_bits, clustered):
    if clustered:  # few distinct byte values: many ties by distance
        return (rng.integers(0, 3, (n, n_bits // 8)) * 0x55).astype(np.uint8)
    return rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8)


@SETTINGS
@given(
    n=st.integers(0, 300),
    nq=st.integers(0, 4),
    n_bits=st.sampled_from(WIDTHS),
    k=st.integers(0, 320),
    clustered=st.booleans(),
    threads=st.sampled_from([None, 1, 2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_knn_matches_numpy(isa, n, nq, n_bits, k, clustered, threads, seed):
    rng = np.random.default_rng(seed)
    codes = make_codes(rng, n, n_bits, clustered)
    q = make_codes(rng, nq, n_bits, clustered)
    D, I = hp.hamming_knn(q, codes, k, threads=threads)
    assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == I.shape == (nq, k)
    Dr, Ir = ref_knn(q, codes, k)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_knn_large_split_across_threads(isa, k):
    # 70k rows: a single query splits the database across threads, then merges.
    rng = np.random.default_rng(k)
    codes = make_codes(rng, 70_000, 128, clustered=True)
    q = make_codes(rng, 1, 128, clustered=True)
    D1, I1 = hp.hamming_knn(q, codes, k, threads=1)
    D2, I2 = hp.hamming_knn(q, codes, k, threads=2)
    Dr, Ir = ref_knn(q, codes, k)
    np.testing.assert_array_equal(I1, Ir)
    np.testing.assert_array_equal(I2, Ir)
    np.testing.assert_array_equal(D2, Dr)


def test_batch_blocked_equals_single(isa):
    rng = np.random.default_rng(1)
    codes = make_codes(rng, 20_000, 128, False)
    q = make_codes(rng, 300, 128, False)
    D, I = hp.hamming_knn(q, codes, 10)
    for i in (0, 17, 299):
        Di, Ii = hp.hamming_knn(q[i], codes, 10)
        np.testing.assert_array_equal(I[i], Ii[0])
        np.testing.assert_array_equal(D[i], Di[0])


@SETTINGS
@given(
    n=st.integers(0, 200),
    nq=st.integers(0, 3),
    n_bits=st.sampled_from(WIDTHS),
    seed=st.integers(0, 2**32 - 1),
)
def test_distances_match_numpy(isa, n, nq, n_bits, seed):
    rng = np.random.default_rng(seed)
    codes = make_codes(rng, n, n_bits, False)
    q = make_codes(rng, nq, n_bits, False)
    np.testing.assert_array_equal(hp.hamming_distances(q, codes), ref_distances(q, codes))


@SETTINGS
@given(
    n=st.integers(0, 200),
    n_bits=st.sampled_from(WIDTHS),
    frac=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_range_matches_numpy(isa, n, n_bits, frac, seed):
    rng = np.random.default_rng(seed)
    codes = make_codes(rng, n, n_bits, False)
    q = make_codes(rng, 2, n_bits, False)
    radius = int(frac * n_bits)
    lims, D, I = hp.hamming_range(q, codes, radius)
    ref = ref_distances(q, codes)
    for j in range(2):
        rows = np.flatnonzero(ref[j] <= radius)
        rows = rows[np.lexsort((rows, ref[j, rows]))]
        np.testing.assert_array_equal(I[lims[j] : lims[j + 1]], rows)
        np.testing.assert_array_equal(D[lims[j] : lims[j + 1]], ref[j, rows])
    d1, i1 = hp.hamming_range(q[0], codes, radius)  # 1-D query: (distances, ids)
    np.testing.assert_array_equal(i1, I[lims[0] : lims[1]])


def ref_band(table, qd, t):
    return np.flatnonzero((np.abs(table.astype(np.int64) - np.asarray(qd)[None, :]) <= t).all(1))


@SETTINGS
@given(
    n=st.integers(0, 400),
    P=st.integers(1, 16),
    t=st.integers(0, 30),
    wide=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_pivot_filter_matches_numpy(isa, n, P, t, wide, seed):
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if wide else np.uint8
    table = rng.integers(40, 90, (n, P)).astype(dtype)
    qd = rng.integers(30, 100, P)
    np.testing.assert_array_equal(hp.pivot_filter(table, qd, t), ref_band(table, qd, t))


@SETTINGS
@given(
    n=st.integers(0, 400),
    nq=st.integers(1, 3),
    P=st.sampled_from([1, 4, 8, 16]),
    t=st.integers(0, 20),
    k=st.integers(1, 120),
    n_bits=st.sampled_from([64, 128, 256]),
    seed=st.integers(0, 2**32 - 1),
)
def test_pivot_knn_is_knn_over_survivors(isa, n, nq, P, t, k, n_bits, seed):
    rng = np.random.default_rng(seed)
    codes = make_codes(rng, n, n_bits, False)
    q = make_codes(rng, nq, n_bits, False)
    dtype = np.uint16 if n_bits >= 256 else np.uint8
    table = rng.integers(40, 70, (n, P)).astype(dtype)
    qd = rng.integers(40, 70, (nq, P))
    D, I = hp.pivot_knn(q, codes, k, table, qd, t)
    Dr, Ir = ref_knn(q, codes, k, rows=[ref_band(table, qd[i], t) for i in range(nq)])
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)


def test_pack_unpack_roundtrip_and_packbits_order():
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, (50, 256)).astype(np.uint8)
    codes = hp.pack_bits(bits)
    assert codes.shape == (50, 32) and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, np.packbits(bits, axis=1))  # MSB first
    np.testing.assert_array_equal(hp.unpack_bits(codes), bits)
    np.testing.assert_array_equal(hp.pack_bits(bits.astype(bool)), codes)


def test_faiss_layout_conversion():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 128)).astype(np.float32)
    fcodes = np.zeros((20, 16), dtype=np.uint8)
    faiss.real_to_binary(x.size, faiss.swig_ptr(x), faiss.swig_ptr(fcodes))  # LSB first, x > 0
    np.testing.assert_array_equal(hp.from_faiss_codes(fcodes), hp.pack_bits(x > 0))
    np.testing.assert_array_equal(hp.to_faiss_codes(hp.from_faiss_codes(fcodes)), fcodes)


def test_same_results_as_faiss_index_binary_flat():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    codes = make_codes(rng, 5000, 128, True)
    q = make_codes(rng, 20, 128, True)
    index = faiss.IndexBinaryFlat(128)
    index.add(hp.to_faiss_codes(codes))
    Df, _ = index.search(hp.to_faiss_codes(q), 50)
    D, _ = hp.hamming_knn(q, codes, 50)
    np.testing.assert_array_equal(D, Df)  # ids may differ among ties; distances may not


def test_environment_forces_portable_kernels():
    code = "import hashpivot; print(hashpivot.cpu_features()['isa'])"
    env = dict(os.environ, HASHPIVOT_ISA="portable")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "portable"


def test_cpu_features_reports_a_known_isa():
    f = hp.cpu_features()
    assert f["isa"] in ("portable", "popcnt", "avx2", "avx512")
    assert isinstance(f["avx2"], bool)


def test_threads_follow_cpu_affinity_and_the_environment():
    """Under `taskset -c 0` the pool starts one thread; HASHPIVOT_NUM_THREADS caps it."""
    import os
    import shutil
    import subprocess
    import sys

    probe = [sys.executable, "-c", "import hashpivot as h; print(h.cpu_features()['threads'])"]
    env = dict(os.environ, HASHPIVOT_NUM_THREADS="1")
    assert subprocess.run(probe, env=env, capture_output=True, text=True).stdout.strip() == "1"
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1:
        env = {k: v for k, v in os.environ.items() if k != "HASHPIVOT_NUM_THREADS"}
        r = subprocess.run(["taskset", "-c", "0", *probe], env=env, capture_output=True, text=True)
        assert r.stdout.strip() == "1"
