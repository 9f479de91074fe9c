"""How well does the ivf first stage rank, and why: hashpivot's residual-code estimate against
a numpy reference of RaBitQ's (random rotation of the full residual, one bit a dimension,
<q, r> ~ ||r||^2 <P^T q, b> / sum_j |(P^T r)_j|) on the same lists, the same probed rows and
the same queries, with variants that isolate one difference at a time.

    python bench/estimator_study.py --n 100000 --kind realistic --bits 128 384

For each estimator, over the rows of the probed lists (nprobe by <q, c>, as hashpivot probes):
recall@10 of its own top-L (L = 10, 40, 100, 300: what a rerank of L candidates can reach),
and the relative error of the estimated <q, x> (RMS over probed rows / RMS of <q, r>).

``--extended``: Extended RaBitQ's second stage, in numpy. Each row's projected residual y coded
with B bits a dimension (odd levels +-1, +-3, .., +-(2^B - 1) times a per-row step chosen for the
best cosine with y; the top bit is the sign, the 1-bit code), scaled by ||y||^2 / <y_B, y>; the
1-bit estimate's top M re-estimated with it; recall@10 within the re-estimate's top L (what a
rerank of L candidates can reach) against the 1-bit estimate's own top L.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
import scale_corpus
from common import markdown_table
from hashpivot.truth import recall_at

K = 10
LS = (10, 40, 100, 300)
QUERIES = slice(scale_corpus.TUNE_QUERIES, scale_corpus.N_QUERIES)  # the evaluation queries


def rotation(d: int, seed: int = 0) -> np.ndarray:
    """A random orthogonal (d, d) matrix (QR of a Gaussian, signs fixed)."""
    g = np.random.default_rng(seed).standard_normal((d, d))
    q, r = np.linalg.qr(g)
    return (q * np.sign(np.diag(r))).astype(np.float32)


def one_bit(y: np.ndarray) -> tuple:
    """(signs +-1, a = ||y||^2 / sum |y|): the unbiased one-bit scale (RaBitQ's 1/<o_bar, o>)."""
    l1 = np.abs(y).sum(1)
    return np.where(y >= 0, 1.0, -1.0).astype(np.float32), (y * y).sum(1) / np.maximum(l1, 1e-30)


def within(found: List[np.ndarray], truth: np.ndarray) -> float:
    """Share of each query's true top-10 among its found rows (any number of them)."""
    return float(np.mean([np.isin(truth[j, :K], f).mean() for j, f in enumerate(found)]))


def study(x: np.ndarray, q: np.ndarray, truth: np.ndarray, bits: int, nprobe_share: float):
    index = hp.Index.build(
        x, n_bits=bits, layout="ivf", extra_bits=0, store="float32", max_train=20000
    )
    lay, rows = index._layout, index._version.rows
    itq, centres = lay.itq, lay.centres
    lists, ids = rows.lists, rows.ids  # rows are in list order; ids map rows to x
    xr = np.asarray(x, dtype=np.float32)[ids]
    r = xr - centres[lists]
    d = x.shape[1]
    nprobe = max(1, round(nprobe_share * len(centres)))
    qc = q @ centres.T
    probe = np.argsort(-qc, axis=1)[:, :nprobe]

    # the estimators: each maps the query (1, d) and the probed rows to estimates of <q, r>
    bits_ours = np.unpackbits(rows.codes, axis=1)[:, :bits].astype(np.float32) * 2 - 1
    W = itq.projection  # (d, bits): y = (r - mean) @ W
    y_ours = itq.project(r)
    P = rotation(d)
    yP = r @ P
    sP, aP = one_bit(yP)
    s_full_itq, a_full_itq = one_bit(y_ours)  # recomputed from y: must equal the stored ones
    # PCA-truncated random rotation: the same subspace as ours, no ITQ rotation
    R = rotation(bits, 1)
    yT = itq.project(r) @ itq.rotation.T @ R if itq.rotation is not None else y_ours
    sT, aT = one_bit(yT)
    WT = (W @ itq.rotation.T @ R) if itq.rotation is not None else W

    # the centre's share of <q, r> exactly: <c, r> per row, and the code's estimate of it
    cr = np.einsum("ij,ij->i", centres[lists], r)
    cW = centres @ W  # (C, bits)
    beta = cr - rows.factors * np.einsum("ij,ij->i", cW[lists], bits_ours)
    cP = centres @ P
    betaP = cr - aP * np.einsum("ij,ij->i", cP[lists], sP)
    estimators: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "code estimate of <q, r> alone (before)": lambda qv, rr: (
            rows.factors[rr] * (bits_ours[rr] @ (qv @ W))
        ),
        "+ per-row bias: <c, r> exact (query residual; now)": lambda qv, rr: (
            rows.factors[rr] * (bits_ours[rr] @ (qv @ W)) + beta[rr]
        ),
        "code alone, PCA + random rotation (no ITQ)": lambda qv, rr: aT[rr] * (sT[rr] @ (qv @ WT)),
        "RaBitQ (random rotation, all d dims, d bits)": lambda qv, rr: aP[rr] * (sP[rr] @ (qv @ P)),
        "RaBitQ with the query residual q - c": lambda qv, rr: (
            aP[rr] * (sP[rr] @ (qv @ P)) + betaP[rr]
        ),
        "exact <q, r> within the code's subspace": lambda qv, rr: y_ours[rr] @ (qv @ W),
    }
    assert np.allclose(a_full_itq, rows.factors, rtol=1e-3)
    out = []
    for name, est in estimators.items():
        found = {L: [] for L in LS}
        err, scale = [], []
        for j in range(len(q)):
            rr = np.concatenate([np.arange(rows.offsets[g], rows.offsets[g + 1]) for g in probe[j]])
            true_r = r[rr] @ q[j]
            e = est(q[j], rr)
            err.append(np.mean((e - true_r) ** 2))
            scale.append(np.mean(true_r**2))
            score = qc[j, lists[rr]] + e
            order = rr[np.argsort(-score, kind="stable")]
            for L in LS:
                found[L].append(ids[order[:L]])
        row = [name, str(bits), f"{nprobe}/{len(centres)}"]
        for L in LS:
            row.append(f"{within(found[L], truth):.3f}")
        row.append(f"{np.sqrt(np.mean(err) / np.mean(scale)):.3f}")
        out.append(row)
    # the engine itself: the same index searched without and with the rerank
    res = []
    for L in LS:
        _, I = index.search(q, k=K, candidates=L, nprobe=nprobe, threads=1)
        res.append(f"{recall_at(I, truth, K):.3f}")  # the reranked top-10
    engine = ["hashpivot search, rerank of L (engine)", str(bits), f"{nprobe}/{len(centres)}"]
    out.append([*engine, *res, "-"])
    return out


EXT_BITS = (2, 3, 4)  # bits a dimension of the re-estimate (1: the scan's code)
EXT_TOP = (75, 150, 300)  # rows of the 1-bit estimate re-estimated
EXT_LS = (10, 20, 30, 40, 75)  # rerank sizes reported
EXT_STEPS = 15  # per-row steps tried (share of max |y| over the top level)


def multibit(y: np.ndarray, bits: int) -> np.ndarray:
    """y coded with `bits` bits a dimension, scaled to be unbiased: odd levels times the per-row
    step (of EXT_STEPS tried) with the best cosine to y, times ||y||^2 / <y_B, y>."""
    top = 2**bits - 1
    amax = np.abs(y).max(1, keepdims=True)
    best, best_cos = np.zeros_like(y), np.full(len(y), -1.0)
    for share in np.linspace(0.3, 1.0, EXT_STEPS):
        step = np.maximum(amax * share / top, 1e-30)
        yb = np.clip(2 * np.floor(y / (2 * step)) + 1, -top, top) * step
        cos = (yb * y).sum(1) / np.maximum(
            np.linalg.norm(yb, axis=1) * np.linalg.norm(y, axis=1), 1e-30
        )
        better = cos > best_cos
        best[better], best_cos[better] = yb[better], cos[better]
    return best * ((y * y).sum(1) / np.maximum((best * y).sum(1), 1e-30))[:, None]


def extended(x: np.ndarray, q: np.ndarray, truth: np.ndarray, bits: int, nprobe_share: float):
    index = hp.Index.build(
        x, n_bits=bits, layout="ivf", extra_bits=0, store="float32", max_train=20000
    )
    lay, rows = index._layout, index._version.rows
    itq, centres = lay.itq, lay.centres
    lists, ids = rows.lists, rows.ids
    r = np.asarray(x, dtype=np.float32)[ids] - centres[lists]
    y = itq.project(r)
    W = itq.projection
    cr = np.einsum("ij,ij->i", centres[lists], r)  # the centre's share, exact (the bias)
    coded = {1: rows.factors[:, None] * np.where(y >= 0, 1.0, -1.0)}
    coded.update({b: multibit(y, b) for b in EXT_BITS})
    nprobe = max(1, round(nprobe_share * len(centres)))
    qc = q @ centres.T
    found: Dict[tuple, list] = {}
    for j in range(len(q)):
        probe = np.argsort(-qc[j])[:nprobe]
        rr = np.concatenate([np.arange(rows.offsets[g], rows.offsets[g + 1]) for g in probe])
        zq = (q[j][None, :] - centres[lists[rr]]) @ W  # W^T (q - c): the code estimates <q - c, r>
        base = qc[j, lists[rr]] + cr[rr]
        order = np.argsort(-(base + (coded[1][rr] * zq).sum(1)))
        for L in EXT_LS:
            found.setdefault((1, 0, L), []).append(ids[rr[order[:L]]])
        for b in EXT_BITS:
            for M in EXT_TOP:
                top = order[:M]
                again = top[np.argsort(-(base[top] + (coded[b][rr[top]] * zq[top]).sum(1)))]
                for L in EXT_LS:
                    found.setdefault((b, M, L), []).append(ids[rr[again[:L]]])
    out = []
    for b in (1, *EXT_BITS):
        for M in (0,) if b == 1 else EXT_TOP:
            row = [str(bits), f"{nprobe}/{len(centres)}", "1 (the scan's)" if b == 1 else str(b)]
            row.append("-" if b == 1 else str(M))
            row += [f"{within(found[(b, M, L)], truth):.3f}" for L in EXT_LS]
            out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--kind", choices=scale_corpus.KINDS, default="realistic")
    ap.add_argument("--bits", type=int, nargs="+", default=[128, 384])
    ap.add_argument("--nprobe-share", type=float, default=0.10)
    ap.add_argument("--extended", action="store_true", help="the multi-bit re-estimate study")
    a = ap.parse_args()
    x, q, truth = scale_corpus.load(a.n, kind=a.kind)
    q, truth = q[QUERIES], truth[QUERIES]
    if a.extended:
        rows = []
        for bits in a.bits:
            rows += extended(x, q, truth, bits, a.nprobe_share)
        head = ["bits", "nprobe", "re-estimate bits", "rows re-estimated"]
        head += [f"R@10 in top {L}" for L in EXT_LS]
        print(f"# Extended bits: N={a.n:,} {a.kind}, {len(q)} real queries\n")
        print(markdown_table(head, rows))
        return
    rows: List[list] = []
    for bits in a.bits:
        rows += study(x, q, truth, bits, a.nprobe_share)
    head = ["estimator", "bits", "nprobe"] + [f"R@10 in top {L}" for L in LS] + ["rel. error"]
    print(f"# Estimator study: N={a.n:,} {a.kind}, {len(q)} real queries\n")
    print(markdown_table(head, rows))


if __name__ == "__main__":
    main()
