"""How a search runs: a pure function from :meth:`Index.search`'s arguments (and what the index
is: layout, rows, bits, tuned settings) to a :class:`Plan`, which the C++ engine executes in one
call. No arrays here: every rule of the search's options lives in this module and is tested
without data (tests/test_plan.py).

A plan has three stages: the first ranks the rows of a *source* (every row, the pivot band's
windows, the probed partitions or lists, or the allowed rows of a filter) by Hamming distance or
by the quantized asymmetric score and keeps ``pool`` rows; an asymmetric search re-scores those
exactly and keeps ``candidates``; with ``rerank`` the stored vectors score the candidates exactly
and the best ``k`` are returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Literal, Mapping, Optional, Union

from . import _core
from ._validate import count, number
from ._validate import threads as _threads
from .errors import InvalidInputError
from .layouts import Capabilities

Scoring = Literal["asymmetric", "hamming"]
SourceName = Literal["all", "band", "partitions", "lists", "allowed"]

DEFAULT_CANDIDATES = 300
# The 16-level quantized scan keeps twice the rows it must hand on (at least 64 more), and their
# exact float scores choose: on the shared corpus this keeps the exact asymmetric top-L.
QUANTIZED_POOL_FACTOR = 2
QUANTIZED_POOL_EXTRA = 64
# A Hamming shortlist for asymmetric scoring holds 3 x candidates rows (bench_asymmetric.py:
# 1.14-1.26x the Hamming-only time on 1M codes for the same quality as a full asymmetric scan).
SHORTLIST_FACTOR = 3
# Up to this many rows an asymmetric search scans every row; beyond, a Hamming shortlist is
# cheaper (a full asymmetric scan costs about 2.3 Hamming scans).
AUTO_FULL_SCAN = 200_000
# A filter allowing at most this share of the rows scores them directly (their codes gathered)
# instead of scanning every row (bench/bench_filter.py).
DIRECT_SELECTIVITY = 0.02
# Lists probed by default: the share of an IVF index's lists (tune() finds the cheapest
# setting for a target recall).
DEFAULT_PROBE_SHARE = 1 / 8
# IVF lists are probed by <q, c> + PROBE_SPREAD |q| r (r: the list's rms residual norm), not by
# <q, c> alone: a wide list's best rows lie further beyond its centre. On the realistic 100k
# corpus the true top-10 within 10k scanned rows rose from 0.936 to 0.956 (real queries) and
# 0.978 to 0.988 (documents as queries); 0.1-0.2 were within 0.003 of the best on both.
PROBE_SPREAD = 0.15
# The ivf rerank's error bound, in standard deviations of the estimate's error (RaBitQ's
# epsilon_0 is 1.9): tune() tries it against none. bench/SECOND_STAGE_RESULTS.md (realistic 1M,
# 256 bits, nprobe 120): 100 candidates bounded at 3 reranked 68.4 a query, recall@10 0.958 as
# with all 100.
TUNED_BOUND = 3.0
MAX_BOUND = 1e6
# With extra bits, the rows the re-score keeps for the re-estimate: this many times the
# candidates reranked. bench/ESTIMATOR_RESULTS.md (realistic 100k, 256 bits, 3 bits a dimension
# in all, nprobe 157): the 1-bit estimate's top 150 re-estimated hold 0.948 of the true top-10
# in their top 20, the 1-bit estimate's own top 75 0.951.
REESTIMATE_FACTOR = 5


def quantized_pool(L: int) -> int:
    """Rows the quantized asymmetric scan keeps so that exact scores can choose L."""
    return max(QUANTIZED_POOL_FACTOR * L, L + QUANTIZED_POOL_EXTRA)


def tuned_candidates(tuned: Mapping[str, Any], k: int) -> int:
    """The candidates of a search that gives none: the tuned count, a rule rather than a fixed
    number: tuned at k_t, a search for more results reranks k / k_t times as many (else 300)."""
    if "candidates" not in tuned:
        return DEFAULT_CANDIDATES
    L = int(tuned["candidates"])
    k_tuned = max(int(tuned.get("k", k)), 1)
    return L if k <= k_tuned else math.ceil(L * k / k_tuned)


def tuned_reestimate(tuned: Mapping[str, Any], L: int) -> int:
    """The tuned re-estimate as a share of the tuned candidates: it grows with the candidates
    that a larger k asks for, so a tuned setting never makes a valid search an error."""
    rows, base = int(tuned["reestimate"]), max(int(tuned.get("candidates", L)), 1)
    return rows if rows == 0 or base >= L else math.ceil(rows * L / base)


def default_nprobe(n_lists: int) -> int:
    return max(1, min(n_lists, math.ceil(n_lists * DEFAULT_PROBE_SHARE)))


@dataclass(frozen=True)
class IndexShape:
    """What a plan needs to know about an index: its layout's capabilities, no name."""

    capabilities: Capabilities
    n_rows: int
    n_bits: int
    has_itq: bool
    has_store: bool
    n_groups: int = 0  # partitions or lists
    n_pivots: int = 0
    extra_bits: int = 0  # ivf: extra bit planes a row (the re-estimate)


@dataclass(frozen=True)
class Plan:
    k: int  # ids returned per query (at most the rows there are)
    scoring: Scoring
    source: SourceName
    pool: int  # rows the first stage keeps
    candidates: int  # rows after the exact asymmetric re-score (reranked when rerank)
    reestimate: int  # ivf with extra bits: the scan's rows re-estimated (0: none): the pool
    hamming_first: bool  # asymmetric scoring over a Hamming shortlist
    threshold: Optional[int]
    nprobe: int  # partitions or lists probed (0 with partitions: exact mode)
    probe_rows: int  # with a filter: allowed rows the probed lists must hold
    probe_spread: float  # lists: probed by <q, c> + probe_spread |q| radius
    bound: float  # ivf: the rerank stops at the error bound of this many sigmas (0: none)
    rerank: bool
    exact_allowed: bool  # the few allowed rows are reranked directly
    threads: int

    @property
    def output(self) -> Literal["scores", "distances"]:
        return "distances" if self.scoring == "hamming" and not self.rerank else "scores"

    def to_core(self) -> _core.Plan:
        p = _core.Plan()
        p.k, p.pool, p.candidates = self.k, self.pool, self.candidates
        p.reestimate = self.reestimate
        p.scoring = getattr(_core.Scoring, self.scoring)
        p.source = getattr(_core.Source, self.source)
        p.hamming_first = self.hamming_first
        p.threshold = -1 if self.threshold is None else self.threshold
        p.nprobe, p.probe_rows, p.probe_spread = self.nprobe, self.probe_rows, self.probe_spread
        p.bound = self.bound
        p.rerank, p.exact_allowed, p.threads = self.rerank, self.exact_allowed, self.threads
        return p


def make_plan(
    shape: IndexShape,
    k: object = 10,
    *,
    candidates: object = None,
    oversample: object = None,
    rerank: object = True,
    scoring: object = "asymmetric",
    shortlist: Union[int, str, None] = "auto",
    nprobe: object = None,
    bound: object = None,
    reestimate: object = None,
    threshold: object = None,
    threads: object = None,
    tuned: Optional[Mapping[str, Any]] = None,
    allowed: Optional[int] = None,
    query_codes: bool = False,
) -> Plan:
    """The plan of one search. ``candidates`` (an absolute count) wins over ``oversample`` (a
    factor of k); without either, the tuned setting, else 300. ``bound`` (ivf): the rerank
    stops once no remaining candidate's estimate + bound sigma can beat the k-th exact score
    (0: every candidate reranked); without it, the tuned bound when the candidates are the
    tuned ones too, else 0. ``reestimate`` (ivf built with extra bits): rows the re-score
    keeps for the extra bits' re-estimate, which keeps the candidates (0: none; default the
    tuned one with the tuned candidates, else REESTIMATE_FACTOR x candidates). ``allowed``:
    rows a filter lets through (None: no filter). ``query_codes``: the queries are packed codes
    (Hamming only)."""
    tuned = dict(tuned or {})
    n = shape.n_rows
    k = count(k, "k", 1)
    if scoring not in ("asymmetric", "hamming"):
        raise InvalidInputError(f"scoring must be 'asymmetric' or 'hamming', got {scoring!r}")
    if not isinstance(rerank, bool):
        raise InvalidInputError(f"rerank must be True or False, got {rerank!r}")
    if query_codes:
        scoring, rerank = "hamming", False
    if scoring == "asymmetric" and not shape.has_itq:
        raise InvalidInputError(
            "asymmetric scoring needs the ITQ model: an index built from "
            "codes is searched with search_codes()"
        )
    caps = shape.capabilities
    if scoring not in caps.scorings:
        raise InvalidInputError(
            "an ivf index scores asymmetrically (its codes are residuals): use scoring='asymmetric'"
        )
    if candidates is not None:
        L = count(candidates, "candidates", 1)
    elif oversample is not None:
        L = math.ceil(number(oversample, "oversample", 1.0, 1e9) * k)
        L = min(L, 2**31 - 1)
    else:
        L = tuned_candidates(tuned, k)
    if bound is not None:
        bound = number(bound, "bound", 0.0, MAX_BOUND)
        if bound and caps.source != "lists":
            raise InvalidInputError(
                "bound is the ivf layout's error bound: build with layout='ivf'"
            )
    elif candidates is None and oversample is None:
        bound = float(tuned.get("bound", 0.0))
    else:
        bound = 0.0
    if reestimate is not None:
        reestimate = count(reestimate, "reestimate", 0)
        if reestimate and not shape.extra_bits:
            raise InvalidInputError(
                "reestimate needs extra bits: build with layout='ivf', extra_bits=1 to "
                f"{_core.MAX_EXTRA_BITS}"
            )
    elif not shape.extra_bits:
        reestimate = 0
    elif candidates is None and oversample is None and "reestimate" in tuned:
        reestimate = tuned_reestimate(tuned, L)
    else:
        reestimate = None  # REESTIMATE_FACTOR x the candidates, once they are known
    if nprobe is not None:
        nprobe = count(nprobe, "nprobe", 1)
        if caps.source == "all":
            raise InvalidInputError("nprobe needs layout='partitioned' or 'ivf'")
    elif caps.probe_by_default:
        nprobe = int(tuned.get("nprobe", default_nprobe(shape.n_groups)))
    elif caps.source != "all" and "nprobe" in tuned:
        nprobe = int(tuned["nprobe"])
    if threshold is not None:
        threshold = count(threshold, "threshold", 0)
        if threshold > shape.n_bits:
            raise InvalidInputError(
                f"threshold must be from 0 to n_bits={shape.n_bits}, got {threshold}"
            )
        if not shape.n_pivots:
            raise InvalidInputError(
                "the pivot threshold needs pivots: build with n_pivots > 0 (layout 'flat' or "
                "'partitioned')"
            )
    if shortlist != "auto" and shortlist is not None:
        shortlist = count(shortlist, "shortlist", 1)
        if scoring != "asymmetric":
            raise InvalidInputError("shortlist is the Hamming stage of scoring='asymmetric'")
        if not caps.hamming_shortlist:
            raise InvalidInputError("an ivf index has no Hamming shortlist")
    elif shortlist not in ("auto", None):
        raise InvalidInputError(f"shortlist must be 'auto', None or a count, got {shortlist!r}")

    exact = rerank and shape.has_store
    rows = n if allowed is None else min(n, allowed)
    k_out = min(k, n)  # a k beyond the rows would only allocate padding
    L = max(k, L) if exact else k
    L = max(1, min(L, max(rows, 1)))
    M = REESTIMATE_FACTOR * L if reestimate is None else reestimate
    if M and M < L and candidates is None and oversample is None:
        L = max(M, min(k, max(rows, 1)))  # the default candidates give way to the caller's count
    if M and M < L:
        raise InvalidInputError(
            f"reestimate ({M}) must be at least candidates ({L}), or 0 for no re-estimate"
        )
    M = min(M, max(rows, 1)) if M > L else 0  # nothing more to re-estimate: the re-score keeps L

    # the first stage: source, metric, pool
    hamming_first = False
    partition_scan = (
        scoring == "asymmetric"
        and caps.source == "partitions"
        and nprobe is not None
        and threshold is None
        and shortlist == "auto"
    )
    if scoring == "asymmetric" and caps.hamming_shortlist:
        if shortlist == "auto":
            shortlist = None
            if not partition_scan and (
                threshold is not None or n > AUTO_FULL_SCAN or caps.source == "partitions"
            ):
                shortlist = SHORTLIST_FACTOR * L
        if threshold is not None and shortlist is None:
            raise InvalidInputError(
                "the pivot filter works on the Hamming ranking: with "
                "scoring='asymmetric' give a shortlist=M as well"
            )
        hamming_first = shortlist is not None
    if caps.source == "lists":
        source: SourceName = "lists"
    elif caps.source == "partitions" and (scoring == "hamming" or hamming_first or partition_scan):
        source = "partitions"
    elif threshold is not None:
        source = "band"
    else:
        source = "all"
    if hamming_first:
        pool = max(int(shortlist), L)
    elif scoring == "asymmetric" and M:  # the scan's best M, all re-estimated
        pool = max(M, quantized_pool(L))
    elif scoring == "asymmetric":
        pool = quantized_pool(L)
    else:
        pool = L
    pool = max(1, min(pool, max(rows, 1)))
    probe = 0 if source == "partitions" and nprobe is None else int(nprobe or 0)

    # a filter: few allowed rows are scored directly; lists probe until they hold enough of them
    probe_rows, exact_allowed = 0, False
    if allowed is not None:
        if exact and allowed <= L:
            source, exact_allowed, pool = "allowed", True, 0
        elif n and allowed <= DIRECT_SELECTIVITY * n:
            source = "allowed"
        elif source in ("lists", "partitions") and probe:
            probe_rows = n * probe // max(shape.n_groups, 1)
    return Plan(
        k=k_out,
        scoring=scoring,
        source=source,
        pool=pool,
        candidates=L,
        reestimate=M if scoring == "asymmetric" and caps.source == "lists" else 0,
        hamming_first=hamming_first,
        threshold=threshold,
        nprobe=0 if source == "allowed" else probe,
        probe_rows=probe_rows,
        probe_spread=PROBE_SPREAD if source == "lists" else 0.0,
        bound=bound if exact and caps.source == "lists" and not exact_allowed else 0.0,
        rerank=exact,
        exact_allowed=exact_allowed,
        threads=_threads(threads),
    )


def describe(plan: Plan) -> Dict[str, Any]:
    """The plan as a dict (for stats and the CLI)."""
    return {f: getattr(plan, f) for f in plan.__dataclass_fields__}
