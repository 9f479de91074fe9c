"""The evaluation on the shared precomputed embeddings reproduces the notebook's no-filter row
(independent numpy reference: R@10 0.877 / 0.979 / 0.989 at L = 100 / 500 / 1000)."""

from pathlib import Path

import numpy as np
import pytest

from conftest import ref_distances
from hashpivot import Index
from hashpivot.evaluate import notebook_protocol, threshold_sweep, to_markdown

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "manpages-ja"
SAMPLE = Path(__file__).resolve().parent / "data" / "manpages-sample"  # 1,800 of its passages


@pytest.fixture(scope="module")
def corpus():
    """The shared corpus's embeddings, else the committed sample of them (a fresh clone)."""
    full = (SHARED / "embeddings.npy").is_file()
    x = np.load((SHARED if full else SAMPLE) / "embeddings.npy").astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, Index.build(x, n_bits=128, n_pivots=8, seed=42, layout="flat")


def test_notebook_protocol_reproduces_reference(corpus):
    x, index = corpus
    if len(x) != 10_000:
        pytest.skip("the notebook's reference figures are for the whole 10,000-passage corpus")
    rows = notebook_protocol(index, x, n_queries=100, seed=42, timing=False)
    base = rows[0]
    assert base["method"] == "no filter" and base["cut"] == 0.0
    for L, ref in ((100, 0.877), (500, 0.979), (1000, 0.989)):
        assert abs(base[f"R@10 L={L}"] - ref) <= 0.02, (L, base[f"R@10 L={L}"])
    t15, t20 = rows[1], rows[2]
    assert t15["cut"] > t20["cut"] > 0 and t15["filter_recall"] < t20["filter_recall"] <= 1
    assert "pivot t=20" in to_markdown(rows)


def test_threshold_sweep_finds_cheapest_reaching_target(corpus):
    x, index = corpus
    res = threshold_sweep(
        index, x, target=0.95, limits=(300, 1000), thresholds=[16, 20], n_queries=30
    )
    best = res["best"]
    assert best is not None and best["recall@10"] >= 0.95
    ok = [r for r in res["rows"] if r["recall@10"] >= 0.95]
    assert best["latency_ms_median"] == min(r["latency_ms_median"] for r in ok)


def test_pivot_histograms_match_numpy_band_filter():
    """Cumulative histograms of the pivot-space distance give, for every threshold, the same
    cut and filter recall as applying the band filter |d(q,p) - d(x,p)| <= t row by row."""
    from hashpivot.evaluate import pivot_linf_histograms

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (700, 16), dtype=np.uint8)
    pivots = codes[:5].copy()
    qc = rng.integers(0, 256, (9, 16), dtype=np.uint8)
    truth = rng.integers(0, 700, (9, 4))
    truth[0, 0] = -1  # ignored
    h = pivot_linf_histograms(codes, pivots, qc, truth)
    table, qd = ref_distances(codes, pivots), ref_distances(qc, pivots)
    for t in (0, 20, 40, 64, 128):
        keep = (np.abs(qd[:, None, :] - table[None, :, :]) <= t).all(2)  # (9, 700)
        assert np.cumsum(h["all"])[t] == keep.sum()
        passed = sum(int(keep[j, r]) for j in range(9) for r in truth[j] if r >= 0)
        assert np.cumsum(h["truth"])[t] == passed
    assert h["all"].sum() == 9 * 700 and h["truth"].sum() == truth.size - 1


def test_pivot_methods_report_thresholds_reaching_target(corpus):
    from hashpivot.evaluate import pivot_methods

    x, index = corpus
    rows = pivot_methods(index, x, n_queries=50, targets=(0.9, 0.97))
    assert [r["pivots"] for r in rows] == ["furthest_first", "incremental"]
    for r in rows:
        assert r["t (filter recall >= 0.90)"] <= r["t (filter recall >= 0.97)"]
        assert 0 <= r["cut at 0.97"] <= r["cut at 0.90"] < 1
