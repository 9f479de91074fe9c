"""Partitioned layout: exact mode equals the flat scan (ties by row included), nprobe prunes,
add/remove/save/load keep it exact."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hashpivot as hp
from conftest import banded_answer, probed_groups, ref_knn, write_header
from hashpivot import Index
from hashpivot._io import sha256_array
from hashpivot.errors import IndexFormatError
from hashpivot.layouts.partitioned import train_centres
from test_asymmetric import quantized_distances
from test_index import data


def clustered_codes(rng, n, nbytes=16, clusters=30, noise=0.05, alphabet=None):
    cent = rng.integers(0, 256, (clusters, nbytes), dtype=np.uint8)
    flips = (rng.random((n, nbytes * 8)) < noise).astype(np.uint8)
    codes = cent[rng.integers(0, clusters, n)] ^ np.packbits(flips, axis=1)
    if alphabet:  # few distinct bytes: many ties by distance
        codes = (codes % alphabet) * (255 // max(alphabet - 1, 1))
    return np.ascontiguousarray(codes.astype(np.uint8))


def flat_answer(index, q, k):
    """The flat scan over the index's own rows: ties by smaller row, mapped to ids (k capped at
    the rows, as a search caps it)."""
    D, R = ref_knn(q, np.asarray(index.codes), min(k, len(index)))
    return D, np.where(R >= 0, index.ids[np.maximum(R, 0)], -1)


def scanned_share(index, search):
    """Share of the rows a search read (from the index's totals)."""
    before = index.stats()
    search()
    after = index.stats()
    return (after["rows_scanned"] - before["rows_scanned"]) / (
        after["rows_possible"] - before["rows_possible"]
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 1500),
    k=st.sampled_from([1, 5, 10, 70]),
    kind=st.sampled_from(["random", "clustered", "ties"]),
    nbytes=st.sampled_from([8, 16, 32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_exact_mode_equals_flat_scan(isa, n, k, kind, nbytes, seed):
    rng = np.random.default_rng(seed)
    if kind == "random":
        codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    else:
        codes = clustered_codes(rng, n, nbytes, alphabet=3 if kind == "ties" else None)
    index = Index.from_codes(codes, layout="partitioned", seed=seed % 1000, n_pivots=8)
    q = np.ascontiguousarray(np.concatenate([codes[:3], clustered_codes(rng, 3, nbytes)]))
    D, I = index.search_codes(q, k)
    Dr, Ir = flat_answer(index, q, k)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    D, I = index.search_codes(q, k, nprobe=len(index.centres))  # every partition = exact
    np.testing.assert_array_equal(I, Ir)
    t = nbytes  # the pivot band inside partitions: the flat scan over the rows it keeps
    D, I = index.search_codes(q, k, threshold=t)
    Dr, Ir = banded_answer(index, q, min(k, len(index)), t)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 1500),
    k=st.sampled_from([1, 10, 70]),
    nprobe=st.integers(1, 9),
    ties=st.booleans(),
    band=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_nprobe_equals_brute_force_over_probed_partitions(isa, n, k, nprobe, ties, band, seed):
    """nprobe=K: the K populated partitions nearest the query (ties by partition; more until
    they hold k rows), then the top-k by (distance, row) over their rows (and inside the pivot
    band when one is given)."""
    rng = np.random.default_rng(seed)
    codes = clustered_codes(rng, n, 16, alphabet=3 if ties else None)
    index = Index.from_codes(codes, layout="partitioned", seed=seed % 1000, n_pivots=8)
    q = np.ascontiguousarray(np.concatenate([codes[:2], clustered_codes(rng, 3, 16)]))
    t = 14 if band else None
    D, I = index.search_codes(q, k, nprobe=nprobe, threshold=t)
    dc = hp.hamming_distances(q, index.centres)
    offsets = np.asarray(index.offsets)
    keep = []
    for j in range(len(q)):
        probed = probed_groups(dc[j], offsets, nprobe, min(k, len(index)))
        keep.append(
            np.sort(np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in probed]))
        )
    k = min(k, len(index))
    if band:
        Dr, Ir = banded_answer(index, q, k, t, rows=keep)
    else:
        Dr, Rr = ref_knn(q, np.asarray(index.codes), k, rows=keep)
        Ir = np.where(Rr >= 0, index.ids[np.maximum(Rr, 0)], -1)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_exact_mode_prunes_on_clustered_data():
    rng = np.random.default_rng(1)
    codes = clustered_codes(rng, 50_000, clusters=100, noise=0.04)
    index = Index.from_codes(codes, layout="partitioned")
    q = np.ascontiguousarray(codes[rng.integers(0, len(codes), 20)])
    assert scanned_share(index, lambda: index.search_codes(q, 10)) < 0.5
    D, I = index.search_codes(q, 10)
    np.testing.assert_array_equal(D, flat_answer(index, q, 10)[0])
    assert scanned_share(index, lambda: index.search_codes(q, 10, nprobe=1)) < 0.05
    D1, _ = index.search_codes(q, 10, nprobe=1)
    assert (D1 >= D).all()  # fewer partitions can only find worse or equal neighbours


def test_add_remove_save_load_stay_exact(tmp_path):
    rng = np.random.default_rng(2)
    codes = clustered_codes(rng, 6000)
    index = Index.from_codes(codes[:4000], layout="partitioned", n_partitions=40)
    index.add_codes(codes[4000:], ids=np.arange(10_000, 12_000))
    index.remove(np.arange(0, 4000, 3))
    q = np.ascontiguousarray(codes[rng.integers(0, 6000, 10)] ^ np.uint8(1))
    want = flat_answer(index, q, 15)
    np.testing.assert_array_equal(index.search_codes(q, 15)[1], want[1])
    index.save(tmp_path / "p")
    for mmap in (True, False):
        loaded = Index.load(tmp_path / "p", mmap=mmap)
        assert loaded.layout == "partitioned" and len(loaded.centres) == 40
        np.testing.assert_array_equal(loaded.search_codes(q, 15)[1], want[1])
    # the search trusts each row's stored distance to its centre: a wrong one is refused
    h = json.loads((tmp_path / "p" / "header.json").read_text())
    e = h["arrays"]["cdist"]
    f = tmp_path / "p" / e["file"]
    cd = np.load(f)
    cd[cd > 0] -= 1  # still sorted, still within the radii, but wrong
    np.save(f, cd)
    e["sha256"] = sha256_array(cd)
    write_header(tmp_path / "p", h)
    with pytest.raises(IndexFormatError, match="agree"):
        Index.load(tmp_path / "p")
    h["version"] = 1  # format 1 stored partitions without these distances
    write_header(tmp_path / "p", h)
    with pytest.raises(IndexFormatError, match="version 1"):
        Index.load(tmp_path / "p")
    st = index.stats()
    assert st["n_partitions"] == 40 and len(st["group_size_min_median_max"]) == 3


def test_partitioned_embedding_index_search():
    x = data(3000, seed=61)
    flat = Index.build(x, n_bits=64)
    part = Index.build(x, n_bits=64, layout="partitioned")
    q = data(8, seed=62)
    Df, _ = flat.search(q, k=10, scoring="hamming", rerank=False)
    Dp, _ = part.search(q, k=10, scoring="hamming", rerank=False)
    np.testing.assert_array_equal(Df, Dp)  # same ITQ codes, exact mode: same distances
    S, I = part.search(q, k=10, candidates=3000)  # asymmetric over an exact shortlist, rerank
    want = np.argsort(-(q @ x.T), axis=1)[:, :10]
    np.testing.assert_array_equal(I, want)


def test_centres_training():
    rng = np.random.default_rng(3)
    codes = clustered_codes(rng, 5000, clusters=20, noise=0.02)
    c = train_centres(codes, 20)
    d, _ = hp.hamming_knn(codes, c, 1)
    assert d.mean() < 0.05 * 128 * 1.5  # centres sit on the clusters
    with pytest.raises(ValueError, match="n_partitions"):
        train_centres(codes, 0)


def test_partition_bad_input():
    rng = np.random.default_rng(4)
    codes = clustered_codes(rng, 500)
    part = Index.from_codes(codes, layout="partitioned")
    flat = Index.from_codes(codes)
    with pytest.raises(ValueError, match="threshold"):
        part.search_codes(codes[:1], threshold=-1)
    with pytest.raises(ValueError, match="partitioned"):
        flat.search_codes(codes[:1], nprobe=3)
    with pytest.raises(ValueError, match="nprobe"):
        part.search_codes(codes[:1], nprobe=0)
    with pytest.raises(ValueError, match="layout"):
        Index.from_codes(codes, layout="ivf")


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 800),
    nprobe=st.integers(1, 12),
    M=st.sampled_from([1, 7, 64, 300]),
    n_bits=st.sampled_from([64, 128, 256]),
    seed=st.integers(0, 2**32 - 1),
)
def test_asymmetric_partition_scan_matches_numpy(isa, n, nprobe, M, n_bits, seed):
    """The nprobe populated partitions whose centres have the best quantized asymmetric score
    (more until they hold M rows), then the best M rows of those partitions by the same score
    (ties by smaller partition / row)."""
    rng = np.random.default_rng(seed)
    codes = clustered_codes(rng, n, n_bits // 8)
    index = Index.from_codes(codes, layout="partitioned", n_partitions=max(1, min(n, 10)))
    z = rng.standard_normal((3, n_bits)).astype(np.float32)
    rows = index._version.rows
    # the engine's first stage alone, queries taken as projections (identity transform)
    snap = hp._core.Snapshot(
        rows.codes,
        projection=np.eye(n_bits, dtype=np.float32),
        centres=index.centres,
        part_offsets=rows.offsets,
        radius=rows.radius,
        cdist=rows.cdist,
    )
    plan = hp._core.Plan()
    plan.k = plan.pool = plan.candidates = M
    plan.scoring, plan.source = hp._core.Scoring.asymmetric, hp._core.Source.partitions
    plan.nprobe, plan.quantized_only = nprobe, True
    D, I, scanned, _ = snap.search(z, plan)
    M = min(M, n)
    dc = quantized_distances(z, index.centres)
    dr = quantized_distances(z, np.asarray(rows.codes))
    parts = np.asarray(rows.parts)
    read = 0
    for j in range(3):
        best = probed_groups(dc[j], rows.offsets, nprobe, M)
        cand = np.flatnonzero(np.isin(parts, best))
        read += cand.size
        want = cand[np.lexsort((cand, dr[j, cand]))][:M]
        np.testing.assert_array_equal(I[j, : want.size], want)
        np.testing.assert_array_equal(D[j, : want.size], dr[j, want])
        assert (I[j, want.size :] == -1).all()
    assert scanned == read


def test_partitioned_asymmetric_search_with_nprobe():
    x = data(4000, seed=71)
    index = Index.build(x, n_bits=64, layout="partitioned", n_partitions=40)
    q = data(10, seed=72)
    want = np.argsort(-(q @ x.T), axis=1)[:, :10]
    S, I = index.search(q, k=10, candidates=4000, nprobe=40)  # every partition: exact rerank
    np.testing.assert_array_equal(I, want)
    assert scanned_share(index, lambda: index.search(q, k=10, nprobe=4)) < 0.3
    S, I = index.search(q, k=10, nprobe=4)
    assert (np.diff(S, axis=1) <= 0).all()
    with pytest.raises(ValueError, match="partitioned"):
        Index.build(x[:500], n_bits=64).search(q, nprobe=2)
