"""The scale corpus: the shared corpus's 10,000 real embeddings plus draws from a Gaussian mixture
fitted to them, L2-normalised, up to N rows; 500 real text queries; exact inner-product truth.

    python bench/scale_corpus.py --n 100000 1000000     # builds and caches both

Recipe (seeded, cached under --cache, default ~/.cache/hashpivot/scale):
* sklearn ``GaussianMixture(256, covariance_type="diag", random_state=0)`` fitted to the 10,000
  passage embeddings;
* rows 0..9,999 are the real embeddings, rows 10,000..N-1 mixture draws (seed 1), each
  L2-normalised;
* queries: a seeded sample (seed 0) of 500 of the 1,453 real query embeddings;
* truth: exact inner-product top-100 of every query (float32 brute force, ties by row).

It is harsher than real text (at 1M the 10th and 11th neighbours differ by about 0.0004 in
cosine): a stress test, not the only test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Tuple

import numpy as np

from hashpivot.truth import exact_topk

SHARED = Path(
    os.environ.get(
        "HASHPIVOT_SHARED_DATA",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "manpages-ja",
    )
)
CACHE = Path(
    os.environ.get("HASHPIVOT_SCALE_CACHE", Path.home() / ".cache" / "hashpivot" / "scale")
)
COMPONENTS = 256
N_QUERIES = 500
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


def load(n: int, cache: Path = CACHE):
    """(vectors (n, 384) float32 memmap, queries (500, 384), truth (500, 100) int64)."""
    vec_f, truth_f, q_f = cache / f"x{n}.npy", cache / f"truth{n}.npy", cache / "queries.npy"
    docs, queries_all = shared()
    if not q_f.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        pick = np.sort(np.random.default_rng(0).choice(len(queries_all), N_QUERIES, replace=False))
        np.save(q_f, queries_all[pick])
    queries = np.load(q_f)
    if not vec_f.is_file():
        weights, means, variances = mixture(cache)
        tmp = vec_f.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, docs.shape[1]))
        m = min(n, len(docs))
        out[:m] = docs[:m]
        rng = np.random.default_rng(1)
        for s in range(m, n, DRAW_CHUNK):
            c = min(DRAW_CHUNK, n - s)
            comp = rng.choice(len(weights), c, p=weights)
            d = (
                means[comp] + rng.standard_normal((c, means.shape[1])) * np.sqrt(variances[comp])
            ).astype(np.float32)
            out[s : s + c] = d / np.linalg.norm(d, axis=1, keepdims=True)
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
    a = ap.parse_args()
    for n in a.n:
        x, q, t = load(n, Path(a.cache))
        gap = q[:50] @ np.asarray(x).T
        top = -np.sort(-gap, axis=1)[:, 9:11]
        print(
            f"N={n}: {x.shape} vectors, {len(q)} queries, truth {t.shape}; median gap "
            f"between the 10th and 11th neighbour {np.median(top[:, 0] - top[:, 1]):.5f}"
        )


if __name__ == "__main__":
    main()
