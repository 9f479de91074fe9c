"""``ivf``: rows grouped by the nearest of C float k-means centres (torch, CUDA when present,
seeded, on a sample), coded as ITQ codes of the residual x - c with one per-row factor;
``nprobe`` lists are chosen by <q, c> + s |q| r_c (r_c: the list's rms residual norm, saved with
the centres; s: plan.PROBE_SPREAD), so that a wide list, whose best rows lie further beyond its
centre, is probed before a tight one of the same <q, c>.

A row scores <q, c> + beta_x + a_x <W^T q, 2b - 1>: the exact inner product with its centre
plus an estimate of <q, r>, r = x - c, from its residual code b (W: the residual ITQ's
projection). With y = W^T (r - mean_r) the residual's projection, a_x = ||y||^2 / sum_j |y_j|
(RaBitQ's unbiased scale: <z, y> ~ ||y||^2 <z, b> / <y, b>). beta_x = <c, r> - a_x <W^T c, 2b - 1>
swaps the code's estimate of the centre's share <c, r> for its exact value, so the code estimates
<q - c, r> only: its error scales with |q - c| (small: a query lies near the lists it probes)
instead of |q|, as RaBitQ's estimator uses the query's residual. bench/estimator_study.py, 100k
realistic corpus, 300 real queries, 10% of the lists: recall@10 within the estimate's top 40
0.482 -> 0.812 at 128 bits, 0.738 -> 0.934 at 384 bits (RaBitQ's reference: 0.927). Earlier:
0.583 with one scale for all rows, 0.621 with the least-squares a_x = sum |y| / n_bits, 0.668
with this one (100 candidates, mixture corpus); probing lists by <q, c> beat probing by L2
distance at equal rows scanned (bench/SCALE_RESULTS.md), and <q, c> + s |q| r_c beat both.

The estimate is off by exactly <q - c, v>, v = a_x W (2b - 1) - r: each row keeps |v| as a
one-byte level (rounded up), for the rerank's error bound (RaBitQ's: sigma = |q - c| |v| /
sqrt(dim) for a uniform direction of q - c; tests/test_error_bound.py). With ``extra_bits`` each
row also keeps y coded with 1 + extra_bits bits a dimension (Extended RaBitQ; the planes on disk
beside the stored vectors), which re-estimates the scan's best rows before the rerank.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import numpy as np

from .. import _core
from .._validate import count
from .._validate import seed as _seed
from ..errors import InvalidInputError
from ..itq import ITQ, resolve_device
from .base import (
    F32,
    I32,
    I64,
    MAX_GROUPS,
    U8,
    Capabilities,
    Derived,
    Expectation,
    Layout,
    Rows,
    TrainOptions,
    default_groups,
    register,
    require,
)
from .base import starts as _starts

if TYPE_CHECKING:  # pragma: no cover
    from ..storage import IndexHeader

# k-means trains on 40 rows a centre (faiss warns below 39): its cost grows as rows x lists. 100k
# scale corpus, 256 bits: 64 rows gave recall@10 0.775 / 0.912 / 0.949 (nprobe 37 / 151 / 316),
# 40 rows 0.768 / 0.903 / 0.949, and the build went from 15.9 to 11.3 s (1M: k-means 88 -> 35 s).
TRAIN_PER_LIST = 40
BIASES_FROM = 5  # the index format version whose ivf files carry the per-row biases
RADII_FROM = 6  # ... and the lists' radii (older files: zero radii, probed by <q, c> alone)
ERRORS_FROM = 7  # ... and the rows' error levels (older files: none, never pruned by the bound)
# and, built with extra_bits > 0, the rows' extra bit planes
EXTRA_STEPS = 16  # per-row steps tried for the extra bits (the share of max |y| at the top level)
EXTRA_LOWEST_SHARE = 0.3  # ... from this share to all of it
KMEANS_ITERS = 10  # as faiss' IVF training
ASSIGN_CHUNK = 8192  # rows a k-means assignment step scores at once (C x 8192 floats)
RESIDUAL_CHUNK = 1 << 14  # rows coded at once: a few (rows x dim) float32 temporaries (25 MB each)


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
    # a copy: a loaded file's centres are read-only, which torch.from_numpy warns about
    ct = torch.tensor(np.asarray(centres, dtype=np.float32), device=dev)
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
    C = default_groups(n) if n_lists is None else count(n_lists, "n_lists", 1, min(n, MAX_GROUPS))
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


def list_radii(
    x: np.ndarray, centres: np.ndarray, lists: np.ndarray, chunk: int = ASSIGN_CHUNK
) -> np.ndarray:
    """(C,) float32: each list's rms residual norm sqrt(mean ||x - c||^2) over its rows
    (0 for an empty list)."""
    C = len(centres)
    sq = np.zeros(C, dtype=np.float64)
    for s in range(0, len(x), chunk):
        at = lists[s : s + chunk]
        r = np.asarray(x[s : s + chunk], dtype=np.float32) - centres[at]
        sq += np.bincount(at, np.einsum("ij,ij->i", r, r), minlength=C)
    sizes = np.bincount(lists, minlength=C)
    return np.sqrt(sq / np.maximum(sizes, 1)).astype(np.float32)


def multibit_levels(y: np.ndarray, bits: int, device: str = "auto") -> np.ndarray:
    """(n, d) int8 odd levels l in [-(2^bits - 1), 2^bits - 1], l_j of the sign of y_j: y on a
    grid of step s (l s ~ y) with the per-row s, of EXTRA_STEPS tried, whose levels have the best
    cosine with y (Extended RaBitQ's code, by a grid search instead of its exact one; in torch:
    half the time of numpy on two cores, CUDA when present)."""
    import torch

    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).to(resolve_device(device))
    top = 2**bits - 1
    amax = yt.abs().amax(1, keepdim=True)
    y_norm = torch.linalg.vector_norm(yt, dim=1)
    best = torch.ones(yt.shape, dtype=torch.int8, device=yt.device)
    best_cos = torch.full((len(yt),), -float("inf"), device=yt.device)
    for share in np.linspace(EXTRA_LOWEST_SHARE, 1.0, EXTRA_STEPS):
        step = torch.clamp(amax * float(share / top), min=float(np.finfo(np.float32).tiny))
        lv = torch.clamp(2 * torch.floor(yt / (2 * step)) + 1, -top, top)
        cos = (lv * yt).sum(1) / torch.clamp(
            torch.linalg.vector_norm(lv, dim=1) * y_norm, min=1e-30
        )
        better = cos > best_cos
        best[better] = lv[better].to(torch.int8)
        best_cos = torch.where(better, cos, best_cos)
    return best.cpu().numpy()


def extra_planes(levels: np.ndarray, extra_bits: int) -> np.ndarray:
    """(n, (extra_bits + 1) * d / 8) uint8: bit planes 0 .. extra_bits of v = (l + 2^B - 1) / 2,
    B = extra_bits + 1, each packed as the codes are; the top plane is the sign code, kept here
    too so that a re-estimate reads one contiguous row."""
    v = (levels.astype(np.int16) + (2 ** (extra_bits + 1) - 1)) // 2
    return np.concatenate(
        [np.packbits(((v >> p) & 1).astype(np.uint8), axis=1) for p in range(extra_bits + 1)],
        axis=1,
    )


def residual_codes(
    itq: ITQ,
    x: np.ndarray,
    centres: np.ndarray,
    lists: np.ndarray,
    extra_bits: int = 0,
    chunk: int = RESIDUAL_CHUNK,
) -> Tuple[np.ndarray, Derived]:
    """(codes, {lists, factors, biases, errors}) of rows x in lists: the sign of the residual's
    projection, a_x = ||y||^2 / sum |y_j| (1 where y is zero),
    beta_x = <c, r> - a_x <W^T c, 2b - 1> (see the module docstring) and the level of
    |v|, v = a_x W (2b - 1) - r: the estimate of <q, x> is off by <q - c, v> (the error bound).
    With ``extra_bits``: {extra, extra_factors, extra_biases}, the multi-bit levels l of y
    (multibit_levels) as bit planes, f = ||y||^2 / <l, y> and <c, r> - f <W^T c, l>."""
    n = len(x)
    codes = np.empty((n, itq.n_bits // 8), dtype=np.uint8)
    factors = np.empty(n, dtype=np.float32)
    biases = np.empty(n, dtype=np.float32)
    errors = np.empty(n, dtype=np.uint8)
    if extra_bits:
        extra = np.empty((n, (extra_bits + 1) * itq.n_bits // 8), dtype=np.uint8)
        extra_factors = np.empty(n, dtype=np.float32)
        extra_biases = np.empty(n, dtype=np.float32)
    centres_w = centres @ itq.projection  # W^T c of every list
    for s in range(0, n, chunk):
        at = lists[s : s + chunk]
        r = np.asarray(x[s : s + chunk], dtype=np.float32) - centres[at]
        y = itq.project(r)
        codes[s : s + chunk] = np.packbits(y >= 0, axis=1)
        l1 = np.abs(y).sum(1)
        a = np.where(l1 > 0, (y * y).sum(1) / np.maximum(l1, 1e-30), 1.0)
        signs = np.where(y >= 0, 1.0, -1.0).astype(np.float32)
        centre_share = np.einsum("ij,ij->i", centres[at], r)
        biases[s : s + chunk] = centre_share - a * np.einsum("ij,ij->i", centres_w[at], signs)
        factors[s : s + chunk] = a
        v = (a[:, None] * signs) @ itq.projection.T - r
        errors[s : s + chunk] = _core.error_levels(np.sqrt(np.einsum("ij,ij->i", v, v)))
        if extra_bits:
            lv = multibit_levels(y, extra_bits + 1, itq.device)
            ly = np.einsum("ij,ij->i", lv, y)
            f = np.where(ly > 0, (y * y).sum(1) / np.maximum(ly, 1e-30), 0.0)
            extra[s : s + chunk] = extra_planes(lv, extra_bits)
            extra_factors[s : s + chunk] = f
            extra_biases[s : s + chunk] = centre_share - f * np.einsum(
                "ij,ij->i", centres_w[at], lv
            )
    derived = {"lists": lists, "factors": factors, "biases": biases, "errors": errors}
    if extra_bits:
        derived.update(extra=extra, extra_factors=extra_factors, extra_biases=extra_biases)
    return codes, derived


@register
class IVFLayout(Layout):
    name = "ivf"
    first_version = 3
    build_options = ("n_lists", "extra_bits")
    # 2 bits a dimension: the fastest at recall 0.95 of 0-3 (bench/DEFAULTS_RESULTS.md)
    default_extra_bits = 2
    group_array = "list_centres"
    capabilities = Capabilities(
        source="lists",
        scorings=("asymmetric",),  # its codes are residuals: no Hamming between them and a query
        code_input=False,
        hamming_shortlist=False,
        probe_by_default=True,
        group_noun="lists",
    )

    def __init__(
        self,
        n_bits: int,
        itq: ITQ,
        centres: np.ndarray,
        radii: Optional[np.ndarray] = None,
        extra_bits: int = 0,
    ) -> None:
        super().__init__(n_bits, itq)
        self.extra_bits = count(extra_bits, "extra_bits", 0, _core.MAX_EXTRA_BITS)
        self._centres = np.ascontiguousarray(centres, dtype=np.float32)
        self._radii = np.ascontiguousarray(
            np.zeros(len(self._centres)) if radii is None else radii, dtype=np.float32
        )

    @classmethod
    def train(cls, x: np.ndarray, opts: TrainOptions) -> Tuple[Layout, np.ndarray, Derived]:
        """k-means centres, each row's list, then the residual ITQ fitted on a sample."""
        centres = kmeans(x, opts.n_groups, opts.seed, device=opts.device)
        lists = assign(x, centres, opts.device)
        itq = opts.itq()
        train_rows = itq.max_train or max(32768, 10 * x.shape[1])
        rng = np.random.default_rng(opts.seed)
        rows = (
            np.sort(rng.choice(len(x), train_rows, replace=False))
            if len(x) > train_rows
            else np.arange(len(x))
        )
        itq.fit(
            np.asarray(x[rows], dtype=np.float32) - centres[lists[rows]], progress=opts.progress
        )
        radii = list_radii(x, centres, lists)
        layout = cls(opts.n_bits, itq, centres, radii, opts.extra_bits)
        codes, derived = residual_codes(itq, x, centres, lists, opts.extra_bits)
        return layout, codes, derived

    @property
    def centres(self) -> np.ndarray:
        return self._centres

    @property
    def n_groups(self) -> int:
        return int(self._centres.shape[0])

    def model_arrays(self) -> Dict[str, np.ndarray]:
        return {"list_centres": self._centres, "list_radii": self._radii}

    def empty(self) -> Rows:
        rows = Rows(np.zeros((0, self.n_bits // 8), np.uint8), np.zeros(0, np.int64))
        none = {"lists": np.zeros(0, np.int32), "factors": np.zeros(0, F32)}
        none.update(biases=np.zeros(0, F32), errors=np.zeros(0, U8))
        if self.extra_bits:
            none.update(
                extra=np.zeros((0, (self.extra_bits + 1) * self.n_bits // 8), np.uint8),
                extra_factors=np.zeros(0, F32),
                extra_biases=np.zeros(0, F32),
            )
        return self.order(rows, none)

    def encode(self, x: np.ndarray) -> Tuple[np.ndarray, Derived]:
        lists = assign(x, self._centres, self.itq.device)
        return residual_codes(self.itq, x, self._centres, lists, self.extra_bits)

    def derive(self, codes: np.ndarray, x: Optional[np.ndarray]) -> Derived:
        raise InvalidInputError("an ivf index encodes embeddings itself: use add()")

    def order(self, rows: Rows, derived: Derived) -> Rows:
        lists = derived.get("lists", rows.lists)
        order = np.argsort(lists, kind="stable")
        rows = replace(
            rows,
            lists=lists,
            factors=derived.get("factors", rows.factors),
            biases=derived.get("biases", rows.biases),
            errors=derived.get("errors", rows.errors),
            extra=derived.get("extra", rows.extra),
            extra_factors=derived.get("extra_factors", rows.extra_factors),
            extra_biases=derived.get("extra_biases", rows.extra_biases),
        )
        return rows.take(order, offsets=_starts(lists[order], self.n_groups))

    def snapshot(self, rows: Rows) -> _core.Snapshot:
        # queries are not centred: <q, x> = <q, c> + <q, r>, and <q, r> ~ <W^T q, y>
        return _core.Snapshot(
            **self.common(rows, centre_queries=False),
            list_centres=self._centres,
            list_radii=self._radii,
            list_offsets=rows.offsets,
            factors=rows.factors,
            biases=rows.biases,
            lists=rows.lists,
            error_levels=rows.errors,
            extra=rows.extra,
            extra_factors=rows.extra_factors,
            extra_biases=rows.extra_biases,
        )

    @classmethod
    def from_header(
        cls, header: IndexHeader, itq: Optional[ITQ], model: Dict[str, np.ndarray]
    ) -> IVFLayout:
        radii = model.get("list_radii")
        return cls(header.n_bits, itq, model["list_centres"], radii, header.extra_bits)

    def header(self) -> Dict[str, int]:
        return {**super().header(), "extra_bits": self.extra_bits}

    @classmethod
    def check_header(cls, header: IndexHeader) -> Optional[str]:
        if not header.has_itq:
            return "an ivf index needs its residual ITQ model"
        if header.n_pivots or header.levels:
            return "an ivf index has no pivots"
        return None

    @classmethod
    def expect(cls, header: IndexHeader) -> Expectation:
        n, C = header.n, header.groups
        want = {
            "list_centres": (F32, (C, header.dim)),
            "offsets": (I64, (C + 1,)),
            "lists": (I32, (n,)),
            "factors": (F32, (n,)),
        }
        if header.version >= BIASES_FROM:
            want["biases"] = (F32, (n,))
        if header.version >= RADII_FROM:
            want["list_radii"] = (F32, (C,))
        if header.version >= ERRORS_FROM:
            want["errors"] = (U8, (n,))
            if header.extra_bits:
                want["extra"] = (U8, (n, (header.extra_bits + 1) * header.n_bits // 8))
                want["extra_factors"] = (F32, (n,))
                want["extra_biases"] = (F32, (n,))
        return want

    def upgrade(self, rows: Rows) -> Rows:
        """An index saved before the biases: zero biases (the estimate of <q, r> from the code
        alone, as it was built); before the error levels: none (the bound never prunes a row).
        Rebuild it for the better ranking."""
        if rows.biases is None:
            rows = replace(rows, biases=np.zeros(rows.n, F32))
        if rows.errors is None:
            rows = replace(rows, errors=np.full(rows.n, _core.ERROR_LEVEL_NONE, U8))
        return rows

    def verify(self, rows: Rows) -> None:
        C = self.n_groups
        require(bool(((rows.lists >= 0) & (rows.lists < C)).all()), "list out of range")
        require(bool((np.diff(rows.lists) >= 0).all()), "rows not grouped by list")
        require(
            bool((_starts(rows.lists, C) == rows.offsets).all()),
            "list offsets do not match the rows",
        )
        require(
            bool(np.isfinite(rows.factors).all() and np.isfinite(self._centres).all()),
            "non-finite factors or centres",
        )
        require(bool(np.isfinite(rows.biases).all()), "non-finite biases")
        if self.extra_bits:
            require(
                rows.extra is not None
                and rows.extra.shape == (rows.n, (self.extra_bits + 1) * self.n_bits // 8),
                "extra bits do not match the header",
            )
            require(
                bool(
                    np.isfinite(rows.extra_factors).all() and np.isfinite(rows.extra_biases).all()
                ),
                "non-finite extra factors or biases",
            )
        require(bool((self._radii >= 0).all() and np.isfinite(self._radii).all()), "bad radii")
