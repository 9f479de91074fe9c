"""The ivf layout's training: k-means centres of the float embeddings (torch, CUDA when present,
seeded, on a sample), each row in the list of its nearest centre, and ITQ codes of the residual
x - c with one per-row factor.

A row scores <q, c> + a_x <W^T q, 2b - 1>: the exact inner product with its centre plus an
estimate of <q, x - c> from its residual code b (W: the residual ITQ's projection). With
y = W^T (r - mean_r) the residual's projection, a_x = ||y||^2 / sum_j |y_j| (RaBitQ's unbiased
scale: <z, y> ~ ||y||^2 <z, b> / <y, b>). Measured on the 100k scale corpus (500 real queries,
128 bits, 10% of the lists probed, 100 candidates): recall@10 0.583 with one scale for all rows,
0.621 with the least-squares a_x = sum |y| / n_bits, 0.668 with this one; probing lists by
<q, c> beat probing by L2 distance at equal rows scanned (bench/SCALE_RESULTS.md).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from ._validate import count
from ._validate import seed as _seed
from .errors import InvalidInputError
from .itq import ITQ, resolve_device

LISTS_PER_SQRT_N = 4  # C = 4 sqrt(N) lists, as faiss' guideline for IVF
# k-means trains on 40 rows a centre (faiss warns below 39): its cost grows as rows x lists. 100k
# scale corpus, 256 bits: 64 rows gave recall@10 0.775 / 0.912 / 0.949 (nprobe 37 / 151 / 316),
# 40 rows 0.768 / 0.903 / 0.949, and the build went from 15.9 to 11.3 s (1M: k-means 88 -> 35 s).
TRAIN_PER_LIST = 40
KMEANS_ITERS = 10  # as faiss' IVF training
ASSIGN_CHUNK = 8192  # rows a k-means assignment step scores at once (C x 8192 floats)


def default_lists(n: int) -> int:
    """About 4 sqrt(N) lists (at least 1, at most N)."""
    return int(max(1, min(n, round(LISTS_PER_SQRT_N * math.sqrt(max(n, 1))))))


def _scorer(ct):
    """(2 C^T, -||c||^2): what _nearest needs, made once per set of centres."""
    return (2 * ct).T.contiguous(), -(ct * ct).sum(1)


def _nearest(xt, scorer):
    """Nearest centre of each row of xt (L2): argmax of 2 <x, c> - ||c||^2, in one fused
    multiply-add (the (rows x C) score block is the cost: it is written once)."""
    import torch

    ct2_t, neg_c_sq = scorer
    best, idx = torch.max(torch.addmm(neg_c_sq, xt, ct2_t), dim=1)
    return idx, best


def assign(x: np.ndarray, centres: np.ndarray, device: str = "auto") -> np.ndarray:
    """Nearest centre (L2) of every row: int32 list ids, computed in chunks."""
    import torch

    dev = resolve_device(device)
    ct = torch.from_numpy(np.ascontiguousarray(centres, dtype=np.float32)).to(dev)
    scorer = _scorer(ct)
    out = np.empty(len(x), dtype=np.int32)
    for s in range(0, len(x), ASSIGN_CHUNK):
        xt = torch.from_numpy(np.array(x[s : s + ASSIGN_CHUNK], dtype=np.float32)).to(dev)
        out[s : s + ASSIGN_CHUNK] = _nearest(xt, scorer)[0].cpu().numpy()
    return out


def kmeans(
    x: np.ndarray,
    n_lists: Optional[int] = None,
    seed: int = 42,
    iters: int = KMEANS_ITERS,
    sample: Optional[int] = None,
    device: str = "auto",
) -> np.ndarray:
    """(C, dim) float32 centres: C distinct seeded sample rows, then ``iters`` Lloyd rounds on
    a seeded sample of ``sample`` rows (default 64 per centre); an emptied centre takes a random
    sample row."""
    import torch

    n = len(x)
    if n == 0:
        raise InvalidInputError("cannot train lists on zero rows")
    C = default_lists(n) if n_lists is None else count(n_lists, "n_lists", 1, n)
    iters = count(iters, "iters", 0, 1000)
    rng = np.random.default_rng(_seed(seed))
    size = min(n, count(sample, "sample", C) if sample is not None else max(TRAIN_PER_LIST * C, C))
    rows = np.sort(rng.choice(n, size, replace=False)) if size < n else np.arange(n)
    dev = resolve_device(device)
    pool = torch.from_numpy(np.array(x[rows], dtype=np.float32)).to(dev)
    centres = pool[torch.from_numpy(rng.choice(size, C, replace=False)).to(dev)].clone()
    for _ in range(iters):
        scorer = _scorer(centres)
        sums = torch.zeros_like(centres)
        counts = torch.zeros(C, dtype=torch.float32, device=dev)
        for s in range(0, size, ASSIGN_CHUNK):
            xt = pool[s : s + ASSIGN_CHUNK]
            idx, _ = _nearest(xt, scorer)
            sums.index_add_(0, idx, xt)
            counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float32))
        full = counts > 0
        centres[full] = sums[full] / counts[full, None]
        empty = torch.nonzero(~full).flatten().cpu().numpy()
        if empty.size:
            pick = torch.from_numpy(rng.choice(size, empty.size, replace=False)).to(dev)
            centres[torch.from_numpy(empty).to(dev)] = pool[pick]
    return np.ascontiguousarray(centres.cpu().numpy(), dtype=np.float32)


def train(
    x: np.ndarray,
    n_bits: int,
    n_lists: Optional[int],
    seed: int,
    device: str,
    n_iter: int,
    max_train: Optional[int],
    progress: Optional[bool],
) -> Tuple[np.ndarray, ITQ, np.ndarray]:
    """(centres, residual ITQ, each row's list) for the rows x."""
    centres = kmeans(x, n_lists, seed, device=device)
    lists = assign(x, centres, device)
    itq = ITQ(n_bits=n_bits, n_iter=n_iter, seed=seed, device=device, max_train=max_train)
    train_rows = itq.max_train or max(32768, 10 * x.shape[1])
    rng = np.random.default_rng(seed)
    rows = (
        np.sort(rng.choice(len(x), train_rows, replace=False))
        if len(x) > train_rows
        else np.arange(len(x))
    )
    itq.fit(np.asarray(x[rows], dtype=np.float32) - centres[lists[rows]], progress=progress)
    return centres, itq, lists


def residual_codes(
    itq: ITQ, x: np.ndarray, centres: np.ndarray, lists: np.ndarray, chunk: int = 1 << 16
) -> Tuple[np.ndarray, np.ndarray]:
    """(codes, factors) of rows x in lists: sign of the residual's projection, and
    a_x = ||y||^2 / sum |y_j| (1 where y is zero)."""
    n = len(x)
    codes = np.empty((n, itq.n_bits // 8), dtype=np.uint8)
    factors = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        r = np.asarray(x[s : s + chunk], dtype=np.float32) - centres[lists[s : s + chunk]]
        y = itq.project(r)
        codes[s : s + chunk] = np.packbits(y >= 0, axis=1)
        l1 = np.abs(y).sum(1)
        factors[s : s + chunk] = np.where(l1 > 0, (y * y).sum(1) / np.maximum(l1, 1e-30), 1.0)
    return codes, factors
