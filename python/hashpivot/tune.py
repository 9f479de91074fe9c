"""``Index.tune``: the cheapest search settings that reach a target recall.

Recall@k is measured against exact search over the stored vectors, on a held-out sample of the
user's real queries (best), or without them on synthetic queries made from the stored vectors.
A stored vector searched as a query finds itself and its tight neighbourhood: far easier than a
real text query, which sits off the documents' manifold (on the defaults' index, settings tuned
that way kept 0.833-0.887 of real queries' exact top-10 for a 0.95 target). A synthetic query
instead sits among documents: a stored vector plus SYNTHETIC_MIX others drawn from its nearest ranks
SYNTHETIC_RANKS, and tune() aims above the target by a margin (UNSEEN_MARGIN), as its queries
are not the user's (bench/DEFAULTS_RESULTS.md measures both on real held-out queries). For each
``nprobe`` of the layout (ascending), the smallest ``candidates`` reaching the target is found
by bisection over a geometric ladder (steps of 1.5x); a second pass repeats the bisection with
steps of sqrt(1.5) at every nprobe that reached the target and at fine nprobes around the fastest
one, so the setting kept does not overshoot by a whole step; those settings are then timed in
turn and the fastest is kept, stored in ``index.tuned`` (saved with the index) and used by
``search()`` when the caller gives none. On an ivf index the fastest few settings are also tried
with the rerank's error bound (plan.TUNED_BOUND sigmas), at their candidates and one step more,
and timed with the rest: the bound is kept only where it is faster at the target. With extra
bits every setting re-estimates the default plan.REESTIMATE_FACTOR x candidates rows, and the
setting kept records that count.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import _core
from ._validate import count, number
from .errors import InvalidInputError, ZeroVectorError
from .itq import as_embeddings
from .plan import TUNED_BOUND
from .truth import exact_topk as truth_rows
from .truth import recall_at
from .vectors import unit_rows

LADDER_STEP = 1.5  # candidates and nprobe grow by this factor between settings tried
# The second pass, around the fastest setting of the first: steps this fine (sqrt(1.5)), so that
# the setting kept overshoots the target by less than a 1.5x step of work would.
FINE_STEP = LADDER_STEP**0.5
TIMING_ROUNDS = 3  # each feasible setting is timed this many times, in turn with the others
DEFAULT_MAX_CANDIDATES = 8192  # the default budget: beyond it a rerank costs more than a scan
# More lists cost more scan: once the cheapest setting at an nprobe is this much slower than the
# fastest feasible one found, no larger nprobe can win (the margin absorbs timing noise).
STOP_SLOWER = 1.3
BOUND_TRIES = 3  # the fastest feasible settings of the search above also tried with the bound
SYNTHETIC_MIX = 4  # a synthetic query: a stored vector plus this many of its neighbours ...
SYNTHETIC_RANKS = (50, 1000)  # ... drawn from its nearest ranks lo..hi (a topic, not a point)
# ... at SYNTHETIC_ROWS rows; the ranks grow as sqrt(rows / SYNTHETIC_ROWS), as the rows an ivf
# list holds do (4 sqrt(N) lists): fixed ranks stay inside a few lists at 1M rows (they held
# 0.869 of real queries' top-10 there), ranks growing with N overshoot (0.984 at 0.43x the QPS).
SYNTHETIC_ROWS = 10_000
# Without the user's queries tune() aims at 1 - UNSEEN_MARGIN x (1 - target) (0.98 for 0.95):
# synthetic queries stand in for real ones only roughly.
UNSEEN_MARGIN = 0.4


@dataclass
class TuneResult:
    """What :meth:`Index.tune` found: ``settings`` (the keyword arguments of ``search``),
    their estimated ``recall`` and ``qps``, whether the target was ``reached``, and when not,
    ``advice`` on what would reach it. ``tried``: every setting measured."""

    settings: Dict[str, Any]
    recall: float
    qps: float
    reached: bool
    target_recall: float
    k: int
    queries: int
    advice: Optional[str] = None
    tried: List[Dict[str, Any]] = field(default_factory=list)
    threads: int = 1  # the threads the QPS were measured with (batched searches of the queries)
    source: str = "queries"  # what the queries were
    aimed: Optional[float] = None  # the recall aimed at on them (above the target without queries)
    seconds: float = 0.0  # how long tune() took

    def __str__(self) -> str:
        s = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        aim = f", aimed at {self.aimed:.3f}" if self.aimed not in (None, self.target_recall) else ""
        head = (
            f"{s}: recall@{self.k} {self.recall:.3f} (target {self.target_recall:.2f}{aim}, "
            f"{self.queries} {self.source}), {self.qps:,.0f} QPS on {self.threads} "
            f"thread{'s' if self.threads != 1 else ''}"
        )
        return head if self.reached else f"target not reached; best {head}. {self.advice}"


def ladder(lo: int, hi: int, step: float = LADDER_STEP) -> List[int]:
    """Integers from lo to hi growing by about `step` (both ends included)."""
    out, v = [], float(max(lo, 1))
    while int(v) < hi:
        if not out or int(v) > out[-1]:
            out.append(int(v))
        v *= step
    out.append(hi)
    return out


def exact_topk(index, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product with the stored vectors (what rerank scores)."""
    rows = truth_rows(queries, index.vectors, k, scales=index.scales)
    return np.asarray(index.ids)[rows]


def tune(
    index,
    queries: Optional[np.ndarray] = None,
    target_recall: float = 0.95,
    k: int = 10,
    sample: int = 200,
    max_candidates: Optional[int] = None,
    max_nprobe: Optional[int] = None,
    threads: Optional[int] = None,
    seed: int = 0,
    store: bool = True,
    query_source: Optional[str] = None,
) -> TuneResult:
    """See the module docstring. ``max_candidates`` / ``max_nprobe``: the caller's budget;
    ``store=False`` returns the result without changing the index; ``query_source``: what
    the queries given are, kept with the settings."""
    started = time.perf_counter()
    target = number(target_recall, "target_recall", 0.0, 1.0)
    k = count(k, "k", 1)
    if index.vectors is None:
        raise InvalidInputError(
            "tune() measures recall against exact search over the stored "
            "vectors: build the index with store='float32' (or float16/int8)"
        )
    n = len(index)
    if n == 0:
        raise InvalidInputError("tune() needs a non-empty index")
    k = min(k, n)
    aim = target
    if queries is None:
        q = synthetic_queries(index, count(sample, "sample", 1), seed)
        source = "synthetic queries"
        aim = 1 - UNSEEN_MARGIN * (1 - target)
    else:
        q = as_embeddings(queries, "queries", index.dim)
        if len(q) == 0:
            raise InvalidInputError(
                "tune() got 0 queries: give at least one held-out query (or none at all, "
                "to tune on stored vectors searched as queries)"
            )
        if not (q != 0).any(axis=1).all():
            raise ZeroVectorError("tune() queries contain an all-zero vector: drop it")
        source = query_source or "queries"
    if index.metric == "cosine":
        q = unit_rows(q)
    truth = exact_topk(index, q, k)
    max_L = min(
        n,
        count(max_candidates, "max_candidates", k)
        if max_candidates is not None
        else max(DEFAULT_MAX_CANDIDATES, 40 * k),
    )
    groups = index.shape().n_groups
    if index.capabilities.source == "all":
        probes: Sequence[Optional[int]] = [None]
    else:
        top = groups if max_nprobe is None else min(groups, count(max_nprobe, "max_nprobe", 1))
        probes = ladder(1, top)
    tried: List[Dict[str, Any]] = []

    seconds: Dict[tuple, float] = {}

    recalls: Dict[tuple, float] = {}

    def measure(nprobe: Optional[int], L: int, bound: float = 0.0) -> float:
        key = (nprobe, L) if not bound else (nprobe, L, bound)
        if key in recalls:
            return recalls[key]
        kw = _keywords(nprobe, L, bound)
        t0 = time.perf_counter()
        _, ids = index.search(q, k, threads=threads, **kw)
        seconds[key] = time.perf_counter() - t0
        r = recalls[key] = recall_at(ids, truth, k)
        tried.append({**kw, "recall": r})
        return r

    def smallest_L(nprobe: Optional[int], Ls: List[int]) -> int:
        """The smallest of Ls reaching the target (recall grows with L; Ls[-1] reaches it)."""
        lo, hi = 0, len(Ls) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if measure(nprobe, Ls[mid]) >= aim:
                hi = mid
            else:
                lo = mid + 1
        return Ls[lo]

    feasible: List[tuple] = []
    best_seen = (-1.0, None, None)
    for nprobe in probes:
        Ls = ladder(k, max_L)
        if feasible:
            fastest = min(seconds[f] for f in feasible)
            measure(nprobe, Ls[0])
            if seconds[(nprobe, Ls[0])] > STOP_SLOWER * fastest:
                break
        r_top = measure(nprobe, Ls[-1])
        best_seen = max(best_seen, (r_top, nprobe, Ls[-1]), key=lambda t: t[0])
        if r_top < aim:
            continue
        feasible.append((nprobe, smallest_L(nprobe, Ls)))
        if nprobe is not None and feasible[-1][1] == Ls[0]:
            break  # more lists cannot lower candidates further
    if feasible:  # the second pass: fine steps of candidates at every feasible nprobe and
        # at fine nprobes around the fastest setting of the first pass
        nprobe0, L0 = min(feasible, key=lambda f: seconds[f])
        near = {nprobe for nprobe, _ in feasible}
        if nprobe0 is not None:
            lo_p, hi_p = max(1, int(nprobe0 / LADDER_STEP)), min(top, int(nprobe0 * LADDER_STEP))
            near |= set(ladder(lo_p, hi_p, FINE_STEP))
        Ls = ladder(k, min(max_L, int(L0 * LADDER_STEP**2)), FINE_STEP)  # fewer lists, more L
        fine = [
            (p, smallest_L(p, Ls))
            for p in sorted(near, key=lambda p: p or 0)
            if measure(p, Ls[-1]) >= aim
        ]
        feasible = fine or feasible
    reached = bool(feasible)
    if not reached:
        feasible = [best_seen[1:]]
    elif index.capabilities.source == "lists":
        fastest = sorted(feasible, key=lambda f: seconds[f])[:BOUND_TRIES]
        for p, L in fastest:
            for L2 in (L, min(max_L, math.ceil(L * LADDER_STEP))):
                if measure(p, L2, TUNED_BOUND) >= aim:
                    feasible.append((p, L2, TUNED_BOUND))
                    break
    timed = _time(index, q, k, feasible, threads)
    nprobe, L, bound, qps = max(timed, key=lambda t: t[3])
    settings = _keywords(nprobe, L, bound)
    recall = recalls[(nprobe, L) if not bound else (nprobe, L, bound)]
    if index.shape().extra_bits:  # what the default re-estimate was, kept with the setting
        settings["reestimate"] = index.plan(k, **settings).reestimate
    advice = None if reached else _advice(index, q, truth, k, aim, max_L, probes, recall)
    used = threads if threads is not None else int(_core.cpu_features()["threads"])
    result = TuneResult(
        settings,
        recall,
        qps,
        reached,
        target,
        k,
        len(q),
        advice,
        tried,
        used,
        source,
        aim,
        time.perf_counter() - started,
    )
    if not reached:
        warnings.warn(f"tune(): {result}", UserWarning, stacklevel=3)
    if store and reached and np.isfinite(recall) and np.isfinite(qps):  # JSON holds it
        index.tuned = {
            **settings,
            "target_recall": target,
            "k": k,
            "recall": round(recall, 4),
            "qps": round(qps, 1),
            "qps_threads": used,
            "queries": f"{len(q)} {source}",
            "aimed": round(aim, 4),
        }
    return result


def synthetic_queries(index, m: int, seed: int = 0) -> np.ndarray:
    """m queries that sit among the stored vectors rather than on one (see the module
    docstring): each a stored vector plus SYNTHETIC_MIX drawn from its nearest ranks
    SYNTHETIC_RANKS (x sqrt(rows / SYNTHETIC_ROWS)), scaled to the stored vector's norm."""
    n = len(index)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, min(m, n), replace=False))
    seeds = _stored(index, pick)
    grow = math.sqrt(n / SYNTHETIC_ROWS)
    lo, hi = (max(1, int(r * grow)) for r in SYNTHETIC_RANKS)
    hi = min(hi, n - 1)
    if hi < 1:
        return seeds
    near = truth_rows(seeds, index.vectors, hi + 1, scales=index.scales)[:, 1:]  # not itself
    lo = min(lo, hi - 1)
    drawn = near[np.arange(len(pick))[:, None], rng.integers(lo, hi, (len(pick), SYNTHETIC_MIX))]
    q = seeds + _stored(index, drawn.ravel()).reshape(len(pick), SYNTHETIC_MIX, -1).sum(axis=1)
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    return q * (np.linalg.norm(seeds, axis=1, keepdims=True) / np.maximum(norms, 1e-30))


def _stored(index, rows: np.ndarray) -> np.ndarray:
    """The stored vectors of these rows as float32 (int8 rows scaled back)."""
    x = np.asarray(index.vectors[rows], dtype=np.float32)
    if index.scales is not None:
        x = x * np.asarray(index.scales[rows], dtype=np.float32)[:, None]
    return x


def _keywords(nprobe: Optional[int], L: int, bound: float = 0.0) -> Dict[str, Any]:
    """search()'s keyword arguments for one setting (no bound: none given)."""
    kw: Dict[str, Any] = {"candidates": int(L)}
    if nprobe is not None:
        kw["nprobe"] = int(nprobe)
    if bound:
        kw["bound"] = float(bound)
    return kw


def _time(index, q: np.ndarray, k: int, settings, threads) -> List[tuple]:
    """(nprobe, candidates, bound, median QPS) of each setting, timed in turn."""
    full = [(*s, 0.0) if len(s) == 2 else s for s in settings]
    rates: Dict[int, List[float]] = {i: [] for i in range(len(full))}
    for _ in range(TIMING_ROUNDS):
        for i, (nprobe, L, bound) in enumerate(full):
            t0 = time.perf_counter()
            index.search(q, k, threads=threads, **_keywords(nprobe, L, bound))
            rates[i].append(len(q) / max(time.perf_counter() - t0, 1e-9))
    return [(*s, float(np.median(rates[i]))) for i, s in enumerate(full)]


def _advice(index, q, truth, k, target, max_L, probes, best) -> str:
    """What would reach the target: more candidates (measured beyond the budget) or bits."""
    n = len(index)
    kw = {} if probes == [None] else {"nprobe": index.shape().n_groups}
    for L in ladder(max_L * 2, n, 2.0):
        _, ids = index.search(q, k, candidates=L, **kw)
        r = recall_at(ids, truth, k)
        if r >= target:
            extra = f", nprobe={kw['nprobe']}" if kw else ""
            return (
                f"candidates={L}{extra} reaches recall {r:.3f} (beyond the budget of "
                f"{max_L} candidates)"
            )
    bits = index.n_bits * 2
    return (
        f"recall@{k} is at most {best:.3f} within the budget; even every row reranked "
        f"does not reach {target:.2f} (check the store's precision), or rebuild with "
        f"n_bits={bits} for better candidates"
    )


def settings_table(result: TuneResult) -> str:
    """The settings tried, as a Markdown table."""
    lines = ["| nprobe | candidates | bound | recall |", "|---|---|---|---|"]
    for t in result.tried:
        row = f"| {t.get('nprobe', '')} | {t['candidates']} | {t.get('bound', '')} |"
        lines.append(f"{row} {t['recall']:.3f} |")
    return "\n".join(lines)


__all__ = ["TuneResult", "exact_topk", "ladder", "recall_at", "synthetic_queries", "tune"]
