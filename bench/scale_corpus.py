"""The scale corpora: the shared corpus's 10,000 real embeddings plus synthetic rows made from
them, L2-normalised, up to N rows; 500 real text queries; exact inner-product truth.

    python bench/scale_corpus.py --n 100000 1000000 --kind realistic   # builds and caches both

Two kinds (seeded, cached under --cache, default ~/.cache/hashpivot/scale); rows 0..9,999 are
the real embeddings in both:
* ``mixture``: draws (seed 1) from sklearn ``GaussianMixture(256, covariance_type="diag",
  random_state=0)`` fitted to the passages. Each draw is isotropic noise around a component
  mean: neighbourhoods have the full 384 dimensions, which graphs handle badly. A stress test,
  flattering to scans.
* ``realistic``: each new row lies on the path between a real passage a and one of its 16
  nearest real passages b, moved along the difference of two other neighbours of a:
  y = a + u (b - a) + s (c - d), u ~ U(0, 1), s = 0.7 (seed 1), L2-normalised. New rows stay on
  the text manifold, so neighbourhoods keep the real corpus's low intrinsic dimension.

HNSW (faiss M=32, efConstruction=64) recall@10 at ef = 16 / 32 / 64 / 128, the 300 evaluation
queries (bench_scale.py's: rows 200..499 of queries.npy);
`python bench/scale_corpus.py --n 10000 100000 --kind realistic --hnsw` (N=10000 is the real
corpus for either kind):
  real 10k        0.869 / 0.938 / 0.972 / 0.989
  realistic 100k  0.809 / 0.909 / 0.963 / 0.986  (the real corpus's curve, a little lower at ten
                                                  times the rows)
  mixture 100k    0.599 / 0.719 / 0.817 / 0.883
Median cosine gap between the 10th and 11th neighbour (first 50 queries): real 10k 0.00061,
realistic 100k 0.00047, mixture 100k 0.00043.

Queries: a seeded sample (seed 0) of 500 of the 1,453 real query embeddings; truth: exact
inner-product top-100 of every query (float32 brute force, ties by row).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Tuple

import numpy as np

from common import SHARED
from hashpivot.truth import exact_topk

CACHE = Path(
    os.environ.get("HASHPIVOT_SCALE_CACHE", Path.home() / ".cache" / "hashpivot" / "scale")
)
COMPONENTS = 256
KINDS = ("mixture", "realistic")
NEIGHBOURS = 16  # realistic rows move between a passage and its nearest real passages
SPREAD = 0.7  # s: how far a realistic row moves along a difference of two neighbours
N_QUERIES = 500
TUNE_QUERIES = 200  # the first queries are for tuning; the other 300 evaluate (every bench)
TRUTH_K = 100
DRAW_CHUNK = 1 << 17  # rows drawn per step (10M x 384 floats would need 15 GB at once)


def shared() -> Tuple[np.ndarray, np.ndarray]:
    """(passage embeddings (10000, 384), query embeddings (1453, 384)) of the shared corpus."""
    if not (SHARED / "embeddings.npy").is_file():
        sys.exit(f"the shared corpus is not at {SHARED} (set HASHPIVOT_SHARED_DATA)")
    return (np.load(SHARED / "embeddings.npy"), np.load(SHARED / "query_embeddings.npy"))


def mixture(cache: Path = CACHE):
    """(weights, means, variances) of the fitted mixture, cached as an npz."""
    f = cache / f"gmm{COMPONENTS}.npz"
    if not f.is_file():
        from sklearn.mixture import GaussianMixture

        x, _ = shared()
        t0 = time.perf_counter()
        g = GaussianMixture(COMPONENTS, covariance_type="diag", random_state=0).fit(x)
        print(f"fitted the mixture in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(f, weights=g.weights_, means=g.means_, variances=g.covariances_)
    z = np.load(f)
    return z["weights"], z["means"], z["variances"]


def exact_truth(queries: np.ndarray, x: np.ndarray, k: int = TRUTH_K) -> np.ndarray:
    """Exact inner-product top-k rows of each query (hashpivot.truth: one implementation)."""
    return exact_topk(queries, x, k)


def neighbours(cache: Path = CACHE) -> np.ndarray:
    """Each real passage's NEIGHBOURS nearest other passages (exact inner product), cached."""
    f = cache / f"neighbours{NEIGHBOURS}.npy"
    if not f.is_file():
        x, _ = shared()
        cache.mkdir(parents=True, exist_ok=True)
        np.save(f, exact_topk(x, x, NEIGHBOURS + 1)[:, 1:])
    return np.load(f)


def draw(kind: str, docs: np.ndarray, c: int, rng: np.random.Generator, cache: Path) -> np.ndarray:
    """c new rows of a corpus kind, L2-normalised."""
    if kind == "mixture":
        weights, means, variances = mixture(cache)
        comp = rng.choice(len(weights), c, p=weights)
        d = means[comp] + rng.standard_normal((c, means.shape[1])) * np.sqrt(variances[comp])
    else:
        nbr = neighbours(cache)
        a = rng.integers(0, len(docs), c)
        b, c_, d_ = (nbr[a, rng.integers(0, NEIGHBOURS, c)] for _ in range(3))
        u = rng.uniform(0, 1, c)[:, None]
        d = docs[a] + u * (docs[b] - docs[a]) + SPREAD * (docs[c_] - docs[d_])
    d = d.astype(np.float32)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def load(n: int, cache: Path = CACHE, kind: str = "mixture"):
    """(vectors (n, 384) float32 memmap, queries (500, 384), truth (500, 100) int64)."""
    tag = "" if kind == "mixture" else "realistic-"  # the mixture's files keep their old names
    vec_f, truth_f = cache / f"{tag}x{n}.npy", cache / f"{tag}truth{n}.npy"
    q_f = cache / "queries.npy"
    docs, queries_all = shared()
    if not q_f.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        pick = np.sort(np.random.default_rng(0).choice(len(queries_all), N_QUERIES, replace=False))
        np.save(q_f, queries_all[pick])
    queries = np.load(q_f)
    if not vec_f.is_file():
        tmp = vec_f.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, docs.shape[1]))
        m = min(n, len(docs))
        out[:m] = docs[:m]
        rng = np.random.default_rng(1)
        for s in range(m, n, DRAW_CHUNK):
            out[s : s + min(DRAW_CHUNK, n - s)] = draw(
                kind, docs, min(DRAW_CHUNK, n - s), rng, cache
            )
        out.flush()
        del out
        os.replace(tmp, vec_f)
    x = np.load(vec_f, mmap_mode="r")
    if not truth_f.is_file():
        t0 = time.perf_counter()
        np.save(truth_f, exact_truth(queries, x))
        print(f"exact truth for {n} rows in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return x, queries, np.load(truth_f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--cache", default=str(CACHE))
    ap.add_argument("--kind", choices=KINDS, default="mixture")
    ap.add_argument("--hnsw", action="store_true", help="print faiss HNSW's recall curve")
    a = ap.parse_args()
    for n in a.n:
        x, q, t = load(n, Path(a.cache), a.kind)
        gap = q[:50] @ np.asarray(x).T
        top = -np.sort(-gap, axis=1)[:, 9:11]
        print(
            f"N={n}: {x.shape} vectors, {len(q)} queries, truth {t.shape}; median gap "
            f"between the 10th and 11th neighbour {np.median(top[:, 0] - top[:, 1]):.5f}"
        )
        if a.hnsw:
            print(f"  HNSW M=32 recall@10 at ef 16/32/64/128: {hnsw_curve(x, q[200:], t[200:])}")


def hnsw_curve(x: np.ndarray, q: np.ndarray, truth: np.ndarray) -> list:
    """faiss HNSW (M=32, efConstruction=64) recall@10 at ef = 16, 32, 64, 128."""
    import faiss

    from hashpivot.truth import recall_at

    h = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    h.hnsw.efConstruction = 64
    h.add(np.ascontiguousarray(x))
    out = []
    for ef in (16, 32, 64, 128):
        h.hnsw.efSearch = ef
        out.append(round(recall_at(h.search(q, 10)[1], truth, 10), 3))
    return out


if __name__ == "__main__":
    main()
