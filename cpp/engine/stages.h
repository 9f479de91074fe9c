// The stages of one query: prepare it (projection, code, quantized planes, pivot band), list the
// rows its first stage reads (segments of the source), run the first stage (top `pool` by the
// metric), re-score the pool exactly (asymmetric), rerank with the stored vectors, write.
#pragma once
#include "scan.h"

namespace hashpivot {
namespace {

constexpr int64_t kBlockBytes = 128 * 1024;  // codes a chunk of queries shares while in L2
constexpr size_t kWarmPartitions = 8;        // exact mode: nearest partitions visited first
constexpr int kRerankAhead = 4;              // stored vectors prefetched ahead of the rerank

// Rows [begin, end) of one partition or list (or the whole table, or a pivot-band window).
struct Segment {
  int64_t begin, end;
  float centre_score;   // lists: <q, c>
  int32_t centre_dist;  // partitions: key of the centre (Hamming: the ring bound's d(q, c))
  int64_t group;        // the partition or list (-1: none)
};

struct QueryState {
  const float* vec = nullptr;        // the query vector (unit length under cosine)
  std::vector<float> unit;           // its normalised copy, when normalising
  std::vector<float> z;              // float projection
  std::vector<uint8_t> code;         // packed sign(z) (or the given code)
  AsymQuery asym;                    // quantized z
  NibbleLuts luts;                   // its nibble tables, for blocked ivf codes (fast scan)
  std::vector<int32_t> lo, hi;       // pivot band bounds
  std::vector<Segment> segs;         // what the first stage reads
  int64_t seg_rows = 0;              // rows in segs
  std::vector<float> centre_scores;  // lists: <q, c> of every list
  std::vector<Scored<float>> pool;   // first stage, then each later stage, in place
  int64_t scanned = 0;
  int64_t reranked = 0;  // stored vectors the rerank read
};

struct FirstStage {
  std::vector<Scored<float>> pool;
  int64_t scanned = 0;
};

struct Ctx {
  const SnapshotView& s;
  const Plan& p;
  const Queries& q;
  const RowFilter& f;
  int nb, n_bits;
  int pool_k;  // rows the first stage keeps (at most the rows there are)
};

template <class K>
void to_float(std::vector<Scored<K>>&& in, std::vector<Scored<float>>& out) {
  out.resize(in.size());
  for (size_t j = 0; j < in.size(); ++j) out[j] = {static_cast<float>(in[j].key), in[j].row};
}

inline int64_t count_bits(const uint64_t* w, int64_t b, int64_t e) {
  int64_t n = 0;
  for (int64_t r = b; r < e && (r & 63);) n += (w[r >> 6] >> (r & 63)) & 1, ++r, b = r;
  for (; b + 64 <= e; b += 64) n += __builtin_popcountll(w[b >> 6]);
  for (; b < e; ++b) n += (w[b >> 6] >> (b & 63)) & 1;
  return n;
}

// 64 partial sums in a fixed order: vectorised by the compiler (four independent vector
// chains with AVX-512, eight with AVX2), the same result on every ISA.
constexpr int kDotLanes = 64;
template <class T, class Conv>
HP_INLINE float dot_lanes(const float* q, const T* x, int dim, Conv conv) {
  float acc[kDotLanes] = {0};
  int j = 0;
  for (; j + kDotLanes <= dim; j += kDotLanes)
    for (int u = 0; u < kDotLanes; ++u) acc[u] += q[j + u] * conv(x[j + u]);
  float s = 0;
  for (; j < dim; ++j) s += q[j] * conv(x[j]);
  for (int u = 0; u < kDotLanes; ++u) s += acc[u];
  return s;
}

// ---- prepare ----
// The probe's order: every list's <q, c> from int8 levels (centres.h), kCentreChunkBlocks blocks
// of centres at a time (24 KiB at 384 dimensions: in L1 for every query of the batch), each
// block pass the ISA's tile: A::kCentreQueries queries, or one query and kCentreBlocksAlone
// blocks (independent sums either way).
constexpr int64_t kCentreChunkBlocks = 4;
template <class A>
void approx_centre_scores(const FloatLists& L, int64_t nq, QueryState* sts) {
  constexpr int M = A::kCentreQueries, B = A::kCentreBlocksAlone;
  static_assert(kCentreChunkBlocks % B == 0, "a chunk holds whole single-query tiles");
  const int groups = centre_groups(L.dim);
  const int64_t block_bytes = centre_block_bytes(L.dim), n_blocks = centre_blocks(L.C);
  thread_local std::vector<CentreQuery> cq;
  if (static_cast<int64_t>(cq.size()) < nq) cq.resize(nq);
  for (int64_t i = 0; i < nq; ++i) {
    cq[i].set(sts[i].vec, L.dim);
    sts[i].centre_scores.resize(L.C);
  }
  alignas(64) int32_t dots[std::max(M, B) * kCentreBlock];
  // dots of queries [i, i + m) x blocks [b, b + nb) to scores, the level offset taken out
  auto put = [&](int64_t i, int m, int64_t b, int nb) {
    for (int r = 0; r < m; ++r)
      for (int j = 0; j < nb; ++j)
        for (int c = 0; c < kCentreBlock; ++c) {
          const int64_t g = (b + j) * kCentreBlock + c;
          if (g >= L.C) break;
          const int32_t dot = dots[(r * nb + j) * kCentreBlock + c] - kCentreOffset * cq[i + r].sum;
          sts[i + r].centre_scores[g] =
              cq[i + r].step * L.centre_steps[g] * static_cast<float>(dot);
        }
  };
  for (int64_t b0 = 0; b0 < n_blocks; b0 += kCentreChunkBlocks) {
    const int64_t b1 = std::min(n_blocks, b0 + kCentreChunkBlocks);
    int64_t i = 0;
    const int8_t* q[std::max(M, B)];
    if constexpr (M > 1)
      for (; i + M <= nq; i += M)
        for (int64_t b = b0; b < b1; ++b) {
          for (int r = 0; r < M; ++r) q[r] = cq[i + r].levels.data();
          A::template centre_tile<M, 1>(L.centre_blocks + b * block_bytes, block_bytes, groups, q,
                                        dots);
          put(i, M, b, 1);
        }
    for (; i < nq; ++i) {
      q[0] = cq[i].levels.data();
      int64_t b = b0;
      if constexpr (B > 1)
        for (; b + B <= b1; b += B) {
          A::template centre_tile<1, B>(L.centre_blocks + b * block_bytes, block_bytes, groups, q,
                                        dots);
          put(i, 1, b, B);
        }
      for (; b < b1; ++b) {
        A::template centre_tile<1, 1>(L.centre_blocks + b * block_bytes, block_bytes, groups, q,
                                      dots);
        put(i, 1, b, 1);
      }
    }
  }
}

// The list holding a row.
inline int64_t list_of(const FloatLists& L, int64_t row) {
  return std::upper_bound(L.offsets + 1, L.offsets + L.C + 1, row) - (L.offsets + 1);
}

constexpr int kProjectRowsMax = 4;  // rows projected together: each matrix load serves them

// Rows x_0 .. x_{n-1} less the transform's mean, gathered into xc (rows x dim, rows past n
// zero): what project_cols reads.
template <class A>
void centre_rows(const Transform& t, const float* const* x, int n, int rows, float* xc) {
  std::fill(xc, xc + static_cast<size_t>(rows) * t.dim, 0.0f);
  for (int r = 0; r < n; ++r)
    for (int d = 0; d < t.dim; ++d) xc[r * t.dim + d] = t.mean ? x[r][d] - t.mean[d] : x[r][d];
}

// z_i[j] = xc_i @ proj[:, j] for columns [j_begin, j_end) (multiples of 64): each z_ij is the
// sum over d ascending of xc_id P[d, j], the same sums on every ISA and however many rows share
// the pass (no FMA contraction: -ffp-contract=off). kRows x vectors of sums stay in registers
// (kRows x the ISA's kProjectVecs, of 16, 8 or 4 float lanes) while the matrix's columns stream
// by once.
template <class A, int kRows>
void project_cols(const Transform& t, const float* xc, int n, float* const* z, int j_begin,
                  int j_end) {
  constexpr int L = A::kFloatLanes, kVecs = A::kProjectVecs;
  constexpr int kCols = L * kVecs;
  typedef float FV __attribute__((vector_size(sizeof(float) * L)));
  for (int j0 = j_begin; j0 < j_end; j0 += kCols) {
    FV acc[kRows][kVecs] = {};
    const float* col =
        t.block ? t.proj + static_cast<int64_t>(j0 / t.block) * t.block * t.dim + j0 % t.block
                : t.proj + j0;
    const int64_t stride = t.block ? t.block : t.n_bits;
    for (int d = 0; d < t.dim; ++d) {
      const float* row = col + d * stride;
      FV p[kVecs];
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) std::memcpy(&p[v], row + L * v, sizeof(FV));
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        const float xd = xc[r * t.dim + d];
#pragma GCC unroll 4
        for (int v = 0; v < kVecs; ++v) acc[r][v] += xd * p[v];
      }
    }
    for (int r = 0; r < n; ++r) std::memcpy(z[r] + j0, acc[r], sizeof(acc[r]));
  }
}

// z_i = (x_i - mean) @ proj for rows x_0 .. x_{n-1} (n <= the ISA's kProjectRows), every column;
// a single row alone (a query searched by itself would pay for kProjectRows rows of sums).
template <class A>
void project_rows(const Transform& t, const float* const* x, int n, float* const* z) {
  thread_local std::vector<float> xc;
  const int rows = n == 1 ? 1 : A::kProjectRows;
  xc.resize(static_cast<size_t>(rows) * t.dim);
  centre_rows<A>(t, x, n, rows, xc.data());
  if (n == 1)
    project_cols<A, 1>(t, xc.data(), n, z, 0, t.n_bits);
  else
    project_cols<A, A::kProjectRows>(t, xc.data(), n, z, 0, t.n_bits);
}

template <class A>
void project(const Transform& t, const float* x, float* z) {
  project_rows<A>(t, &x, 1, &z);
}

inline void pack_signs(const float* z, int n_bits, uint8_t* code) {  // bit j: z_j >= 0
  for (int m = 0; m < n_bits / 8; ++m) {
    uint8_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint8_t>(z[8 * m + i] >= 0) << (7 - i);
    code[m] = v;
  }
}

// Queries [q0, q1): projections (a few rows per pass), codes, quantized planes, pivot bands.
template <class A>
void prepare(const Ctx& c, int64_t q0, int64_t q1, QueryState* sts) {
  const SnapshotView& s = c.s;
  for (int64_t qi = q0; qi < q1; ++qi) {
    QueryState& st = sts[qi - q0];
    st.code.resize(c.nb);
    st.z.resize(c.n_bits);
    st.scanned = 0;
    st.reranked = 0;
    st.vec = c.q.vectors ? c.q.vectors + qi * c.q.dim : nullptr;
    if (st.vec && c.q.normalize) {  // scaled by the largest entry first: no underflow
      st.unit.resize(c.q.dim);
      float big = 0;
      for (int d = 0; d < c.q.dim; ++d) big = std::max(big, std::fabs(st.vec[d]));
      float sum = 0;
      for (int d = 0; d < c.q.dim; ++d) sum += (st.vec[d] / big) * (st.vec[d] / big);
      const float norm = std::sqrt(sum);
      for (int d = 0; d < c.q.dim; ++d) st.unit[d] = (st.vec[d] / big) / norm;
      st.vec = st.unit.data();
    }
  }
  if (!c.q.codes && !c.q.projections) {
    for (int64_t b = q0; b < q1; b += A::kProjectRows) {
      const int m = static_cast<int>(std::min<int64_t>(A::kProjectRows, q1 - b));
      const float* x[kProjectRowsMax];
      float* z[kProjectRowsMax];
      for (int r = 0; r < m; ++r) {
        x[r] = sts[b + r - q0].vec;
        z[r] = sts[b + r - q0].z.data();
      }
      project_rows<A>(s.transform, x, m, z);
    }
    if (s.lists.C) approx_centre_scores<A>(s.lists, q1 - q0, sts);
  }
  for (int64_t qi = q0; qi < q1; ++qi) {
    QueryState& st = sts[qi - q0];
    if (c.q.codes) {
      std::memcpy(st.code.data(), c.q.codes + qi * c.nb, c.nb);
    } else {
      if (c.q.projections)
        std::memcpy(st.z.data(), c.q.projections + qi * c.n_bits, sizeof(float) * c.n_bits);
      pack_signs(st.z.data(), c.n_bits, st.code.data());
      if (c.p.scoring == Scoring::kAsymmetric) {
        st.asym = make_asym_query(st.z.data(), c.n_bits);
        if (s.lists.blocked) make_nibble_luts(st.asym, &st.luts);
      }
    }
    if (c.p.threshold >= 0) {
      const int P = s.pivots.P;
      st.lo.resize(P);
      st.hi.resize(P);
      if (c.q.lo) {
        std::memcpy(st.lo.data(), c.q.lo + qi * P, sizeof(int32_t) * P);
        std::memcpy(st.hi.data(), c.q.hi + qi * P, sizeof(int32_t) * P);
        continue;
      }
      const QueryWords<0> qw(st.code.data(), c.nb / 8);
      for (int i = 0; i < P; ++i) {
        const int d = hamming<typename A::Pop, 0>(qw, s.pivots.pivots + i * c.nb);
        st.lo[i] = d - c.p.threshold;
        st.hi[i] = d + c.p.threshold;
      }
    }
  }
}

// ---- what the first stage reads ----
// The row windows holding exactly the rows inside the band on the sorted pivots.
inline void band_windows(const Ctx& c, const QueryState& st, std::vector<Segment>& out) {
  const SortedCells& L = c.s.cells;
  const int n_bits = c.n_bits;
  if (L.levels == 0) {  // rows not sorted: every row, the band checked late
    out.push_back({0, c.s.codes.n, 0, 0, -1});
    return;
  }
  const int l0 = std::max(st.lo[0], 0), h0 = std::min(st.hi[0], n_bits);
  if (L.levels == 1) {
    if (l0 <= h0 && L.offsets[l0] < L.offsets[h0 + 1])
      out.push_back({L.offsets[l0], L.offsets[h0 + 1], 0, 0, -1});
    return;
  }
  const int l1 = std::max(st.lo[1], 0), h1 = std::min(st.hi[1], n_bits);
  if (l1 > h1) return;
  for (int64_t v0 = l0; v0 <= h0; ++v0) {  // cells (v0, l1..h1) are contiguous
    const int64_t b = L.offsets[cell_key(v0, l1, 2, n_bits)];
    const int64_t e = L.offsets[cell_key(v0, h1, 2, n_bits) + 1];
    if (b >= e) continue;
    if (!out.empty() && out.back().end == b)
      out.back().end = e;
    else
      out.push_back({b, e, 0, 0, -1});
  }
}

// The probed groups (partitions or lists) given each group's key (smaller = nearer, made by
// make_keys): the `nprobe` nearest populated ones (an empty group, e.g. a centre k-means left on
// top of another, never takes a probe's place), and as many more as it takes to see k rows, or
// with a filter `probe_rows` allowed rows; segments in memory order.
template <class MakeKeys>
void probe(const Ctx& c, const int64_t* offsets, const MakeKeys& make_keys, const float* scores,
           const int32_t* dists, std::vector<Segment>& out) {
  thread_local std::vector<Scored<float>> keys;
  auto populated_keys = [&] {
    make_keys(keys);
    keys.erase(std::remove_if(
                   keys.begin(), keys.end(),
                   [&](const Scored<float>& k) { return offsets[k.row] == offsets[k.row + 1]; }),
               keys.end());
  };
  populated_keys();
  const size_t take = static_cast<size_t>(
      std::min<int64_t>(std::max(c.p.nprobe, 1), static_cast<int64_t>(keys.size())));
  const bool adaptive = c.f.active() && c.p.probe_rows > 0;
  bool enough = false;
  if (!adaptive) {
    select_front(keys.data(), keys.size(), take);  // what lies beyond `take` is left unspecified
    int64_t rows = 0;
    for (size_t j = 0; j < take; ++j) rows += offsets[keys[j].row + 1] - offsets[keys[j].row];
    enough = rows >= c.p.k;
    if (enough)
      keys.resize(take);
    else
      populated_keys();  // the nearest few hold fewer than k rows: all keys again, in order
  }
  if (!enough) {  // in order, until enough rows (allowed ones with a filter) are seen
    std::sort(keys.begin(), keys.end());
    const int64_t need = adaptive ? std::max<int64_t>(c.p.probe_rows, c.p.k) : c.p.k;
    int64_t seen = 0;
    size_t j = 0;
    for (; j < keys.size() && (j < take || seen < need); ++j) {
      const int64_t g = keys[j].row;
      seen +=
          adaptive ? count_bits(c.f.bits, offsets[g], offsets[g + 1]) : offsets[g + 1] - offsets[g];
    }
    keys.resize(j);
  }
  std::sort(keys.begin(), keys.end(),
            [](const Scored<float>& a, const Scored<float>& b) { return a.row < b.row; });
  for (const auto& k : keys) {
    const int64_t g = k.row;
    out.push_back({offsets[g], offsets[g + 1], scores ? scores[g] : 0.0f, dists ? dists[g] : 0, g});
  }
}

// The nprobe partitions nearest by Hamming distance d (ties: the smaller partition), in memory
// order, as probe() picks them: a count of each distance (0..n_bits) finds the cut and one more
// pass takes them, with no sort (selecting 1 of 4,000 by nth_element took most of a query).
inline void nearest_partitions(const Ctx& c, const int32_t* d, std::vector<Segment>& out) {
  const HammingPartitions& P = c.s.parts;
  int64_t tied = std::min<int64_t>(std::max(c.p.nprobe, 1), P.C);
  thread_local std::vector<int64_t> counts;
  counts.assign(static_cast<size_t>(c.n_bits) + 1, 0);
  for (int64_t g = 0; g < P.C; ++g)  // empty partitions never take a probe's place
    if (P.offsets[g] < P.offsets[g + 1]) ++counts[d[g]];
  int64_t populated = 0;
  for (const int64_t n : counts) populated += n;
  tied = std::min(tied, populated);
  if (tied == 0) return;
  int32_t edge = 0;  // the distance of the farthest partition taken
  while (tied > counts[edge]) tied -= counts[edge++];
  for (int64_t g = 0; g < P.C; ++g) {  // tied: how many at the edge distance are still taken
    if (P.offsets[g] == P.offsets[g + 1] || d[g] > edge || (d[g] == edge && tied-- <= 0)) continue;
    out.push_back({P.offsets[g], P.offsets[g + 1], 0.0f, d[g], g});
  }
}

// Keys of n consecutive codes (every one: the threshold never stops a row).
template <class M>
void all_keys(const M& m, const uint8_t* codes, int64_t nb, int64_t n, typename M::Key* out) {
  int64_t i = 0;
  if constexpr (M::kGroup) {
    for (; i + 8 <= n; i += 8) M::store(m.group(codes + i * nb, i), out + i);
  }
  for (; i < n; ++i) out[i] = m.one(codes + i * nb, i);
}

template <class A, int W>
void list_segments(const Ctx& c, QueryState& st) {
  const SnapshotView& s = c.s;
  st.segs.clear();
  switch (c.p.source) {
    case Source::kAll:
      st.segs.push_back({0, s.codes.n, 0, 0, -1});
      break;
    case Source::kBand:
      band_windows(c, st, st.segs);
      break;
    case Source::kPartitions: {
      if (c.p.nprobe == 0) break;  // exact mode plans its own visit
      const HammingPartitions& P = s.parts;
      thread_local std::vector<int32_t> d;
      d.resize(P.C);
      const bool hamming = c.p.scoring == Scoring::kHamming || c.p.hamming_first;
      if (hamming)
        all_keys(HammingOf<A, W>(st.code.data(), c.nb), P.centres, c.nb, P.C, d.data());
      else
        all_keys(AsymMetric<A, kAsymWidth<A, W>>(st.asym), P.centres, c.nb, P.C, d.data());
      if (hamming && !(c.f.active() && c.p.probe_rows > 0)) {
        nearest_partitions(c, d.data(), st.segs);
        int64_t rows = 0;
        for (const Segment& g : st.segs) rows += g.end - g.begin;
        if (rows >= c.p.k) break;
        st.segs.clear();  // fewer than k rows: probe() takes more partitions, nearest first
      }
      auto keys = [&](std::vector<Scored<float>>& k) {
        k.resize(P.C);
        for (int64_t g = 0; g < P.C; ++g) k[g] = {static_cast<float>(d[g]), g};
      };
      probe(c, P.offsets, keys, nullptr, d.data(), st.segs);
      break;
    }
    case Source::kLists: {
      const FloatLists& L = s.lists;
      // a list's best rows lie about its radius beyond its centre (toward q): wide lists first
      float spread = 0;
      if (L.radii && c.p.probe_spread > 0 && st.vec) {
        float qq = 0;
        for (int d = 0; d < L.dim; ++d) qq += st.vec[d] * st.vec[d];
        spread = c.p.probe_spread * std::sqrt(qq);
      }
      auto keys = [&](std::vector<Scored<float>>& k) {
        k.resize(L.C);
        for (int64_t g = 0; g < L.C; ++g)
          k[g] = {spread > 0 ? -st.centre_scores[g] - spread * L.radii[g] : -st.centre_scores[g],
                  g};
      };
      probe(c, L.offsets, keys, st.centre_scores.data(), nullptr, st.segs);
      break;
    }
    case Source::kAllowed:
      break;
  }
  st.seg_rows = 0;
  for (const Segment& g : st.segs) st.seg_rows += g.end - g.begin;
  if (c.p.source == Source::kAllowed) st.seg_rows = c.f.n_rows;
}

// The rows [from, to) of the concatenation of segments, one call per piece.
template <class F>
HP_INLINE void for_slice(const std::vector<Segment>& segs, int64_t from, int64_t to, F&& fn) {
  int64_t pos = 0;
  for (const Segment& g : segs) {
    const int64_t len = g.end - g.begin;
    const int64_t b = std::max(from, pos), e = std::min(to, pos + len);
    if (b < e) fn(g, g.begin + (b - pos), g.begin + (e - pos));
    pos += len;
    if (pos >= to) break;
  }
}

// ---- the ring bound of a Hamming partition ----
// First r of [b, e) with a[r] >= v (a ascending), e if none: branch-free binary search
// (conditional moves; an ordinary one mispredicts about half its steps).
template <class T>
HP_INLINE int64_t first_at_least(const T* a, int64_t b, int64_t e, int32_t v) {
  int64_t len = e - b;
  if (len <= 0) return e;
  const T* base = a + b;
  while (len > 1) {
    const int64_t half = len / 2;
    base = static_cast<int32_t>(base[half - 1]) < v ? base + half : base;
    len -= half;
  }
  return (base - a) + (static_cast<int32_t>(*base) < v);
}

// The rows of partition g that can still enter a collector whose threshold is thr (a row needs
// d(q, x) < thr, and d(q, x) >= |d(q, c) - d(x, c)|): one contiguous window, empty when
// d(q, c) - radius cannot beat thr. The threshold only shrinks, so a window found with an
// earlier value is a superset: still exact.
template <class T>
HP_INLINE void ring_window_t(const HammingPartitions& P, const T* cd, int64_t g, int32_t dq,
                             int32_t thr, int n_bits, int64_t* b, int64_t* e) {
  *b = P.offsets[g];
  *e = P.offsets[g + 1];
  if (thr > n_bits || *b >= *e) return;  // not full yet: every row may enter
  const int32_t bound = thr - 1;
  if (dq - P.radius[g] > bound) {
    *e = *b;
    return;
  }
  if (cd[*b] < dq - bound) *b = first_at_least(cd, *b, *e, dq - bound);
  if (cd[*e - 1] > dq + bound) *e = first_at_least(cd, *b, *e, dq + bound + 1);
}
HP_INLINE void ring_window(const HammingPartitions& P, int64_t g, int32_t dq, int32_t thr,
                           int n_bits, int64_t* b, int64_t* e) {
  if (P.wide)
    ring_window_t(P, static_cast<const uint16_t*>(P.cdist), g, dq, thr, n_bits, b, e);
  else
    ring_window_t(P, static_cast<const uint8_t*>(P.cdist), g, dq, thr, n_bits, b, e);
}

inline void prefetch_rows(const uint8_t* codes, int64_t b, int64_t e, int nb) {
  const uint8_t* p = codes + b * nb;
  const int64_t bytes = std::min<int64_t>((e - b) * nb, 8192);  // the first 8 KB
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o);
}

// ---- the first stage, one instantiation per metric x collector (filter and band at run time) ----
template <class M>
HP_INLINE M make_metric(const Ctx& c, const QueryState& st) {
  if constexpr (M::kIsHamming)
    return M(st.code.data(), c.nb);
  else if constexpr (M::kIsList) {
    M m(st.asym, c.s.lists.factors, c.s.lists.biases);
    if (c.s.lists.blocked) {
      m.blocked = c.s.lists.blocked;
      m.luts = &st.luts;
      m.rows = c.s.codes.n;
    }
    return m;
  } else
    return M(st.asym);
}

// The filter and the pivot band of a search, both checked at run time (metrics.h).
inline BitFilter filter_of(const Ctx& c) { return BitFilter{c.f.active() ? c.f.bits : nullptr}; }
inline PivotBand band_of(const Ctx& c, const QueryState& st) {
  if (c.p.threshold < 0) return PivotBand{};
  return PivotBand{c.s.pivots.table, c.s.pivots.wide, c.s.pivots.P, st.lo.data(), st.hi.data()};
}

template <class A, class M, class C>
struct FirstStageImpl {
  static constexpr bool kRing = std::is_same_v<typename M::Key, int32_t> && M::kIsHamming;

  static typename C::Key none(const Ctx& c) {
    if constexpr (std::is_same_v<typename C::Key, float>)
      return std::numeric_limits<float>::infinity();
    else if constexpr (M::kIsHamming)
      return c.n_bits + 1;
    else
      return asym_max_distance(c.n_bits) + 1;
  }

  // rows [from, to) of the query's segments (or of the allowed rows) into out
  static void part(const Ctx& c, const QueryState& st, int64_t from, int64_t to, FirstStage& out) {
    M m = make_metric<M>(c, st);
    C col;
    col.reset(c.pool_k, none(c));
    const BitFilter f = filter_of(c);
    const PivotBand bd = band_of(c, st);
    const uint8_t* codes = c.s.codes.data;
    int64_t scanned = 0;
    if (c.p.source == Source::kAllowed) {
      if constexpr (M::kIsList) {  // rows of several lists: each list's base score in turn
        const FloatLists& L = c.s.lists;
        for (int64_t j = from; j < to;) {
          const int64_t g = list_of(L, c.f.rows[j]);
          int64_t e = j;
          while (e < to && c.f.rows[e] < L.offsets[g + 1]) ++e;
          m.set_list(st.centre_scores[g]);
          scan_list(m, codes, c.nb, c.f.rows + j, e - j, col, bd);
          j = e;
        }
      } else {
        scan_list(m, codes, c.nb, c.f.rows + from, to - from, col, bd);
      }
      scanned = to - from;
    } else {
      const bool ring = kRing && c.p.source == Source::kPartitions;
      for_slice(st.segs, from, to, [&](const Segment& g, int64_t b, int64_t e) {
        if constexpr (M::kIsList) m.set_list(g.centre_score);
        if (ring) {
          int64_t rb, re;
          ring_window(c.s.parts, g.group, g.centre_dist, col.threshold(), c.n_bits, &rb, &re);
          b = std::max(b, rb);
          e = std::min(e, re);
          if (b >= e) return;
        }
        scan_range(m, codes, c.nb, b, e, c.s.codes.n, col, f, bd);
        scanned += e - b;
      });
    }
    to_float(col.take(), out.pool);
    out.scanned = scanned;
  }

  // every segment of several queries, one L2-sized block of rows at a time: each query scans
  // its part of a block before the next block, so a batch costs compute, not bandwidth
  static void batch(const Ctx& c, QueryState* const* sts, int64_t count) {
    std::vector<M> ms;
    std::vector<PivotBand> bands;
    std::vector<C> cols(count);
    std::vector<size_t> next(count, 0);
    ms.reserve(count);
    bands.reserve(count);
    for (int64_t j = 0; j < count; ++j) {
      ms.push_back(make_metric<M>(c, *sts[j]));
      bands.push_back(band_of(c, *sts[j]));
      cols[j].reset(c.pool_k, none(c));
    }
    const BitFilter f = filter_of(c);
    const int64_t n = c.s.codes.n;
    const int64_t block = std::max<int64_t>(64, kBlockBytes / c.nb) & ~int64_t(7);
    for (int64_t b0 = 0; b0 < n; b0 += block) {
      const int64_t e0 = std::min(n, b0 + block);
      for (int64_t j = 0; j < count; ++j) {
        const std::vector<Segment>& w = sts[j]->segs;
        size_t& i = next[j];
        while (i < w.size() && w[i].end <= b0) ++i;
        for (size_t h = i; h < w.size() && w[h].begin < e0; ++h) {
          const int64_t b = std::max(b0, w[h].begin), e = std::min(e0, w[h].end);
          scan_range(ms[j], c.s.codes.data, c.nb, b, e, n, cols[j], f, bands[j]);
          sts[j]->scanned += e - b;
        }
      }
    }
    for (int64_t j = 0; j < count; ++j) to_float(cols[j].take(), sts[j]->pool);
  }
};

// Exact search over Hamming partitions: every partition whose lower bound d(q, c) - r can still
// beat the k-th distance, nearest first until the bound is good, then in memory order (short
// windows in distance order jump around memory: measured several times the cost per row).
// Rows arrive out of order, so ties are settled by row in the heap.
template <class A, class M>
void exact_partitions(const Ctx& c, const QueryState& st, int64_t, int64_t, FirstStage& out) {
  const HammingPartitions& P = c.s.parts;
  const M m = make_metric<M>(c, st);
  const BitFilter f = filter_of(c);
  const PivotBand bd = band_of(c, st);
  const int n_bits = c.n_bits;
  TieHeap<int32_t> col;
  col.reset(c.pool_k, n_bits + 1);
  std::vector<int32_t> dc(P.C);
  all_keys(m, P.centres, c.nb, P.C, dc.data());
  std::vector<int64_t> start(n_bits + 2, 0), order(P.C);  // counting sort by distance
  for (int64_t g = 0; g < P.C; ++g) ++start[dc[g] + 1];
  for (int d = 0; d <= n_bits; ++d) start[d + 1] += start[d];
  for (int64_t g = 0; g < P.C; ++g) order[start[dc[g]]++] = g;
  int64_t scanned = 0;
  auto scan = [&](int64_t b, int64_t e) {
    scan_range(m, c.s.codes.data, c.nb, b, e, c.s.codes.n, col, f, bd);
    scanned += e - b;
  };
  auto window = [&](int64_t g, int64_t* b, int64_t* e) {
    ring_window(P, g, dc[g], col.threshold(), n_bits, b, e);
  };
  size_t j = 0;
  int64_t b, e;
  for (; j < order.size() && (j < kWarmPartitions || !col.full()); ++j) {
    window(order[j], &b, &e);
    if (b < e) scan(b, e);
  }
  if (j < order.size()) {
    std::vector<uint8_t> todo(P.C, 0);
    for (size_t i = j; i < order.size(); ++i)
      todo[order[i]] = dc[order[i]] - P.radius[order[i]] <= col.kth();
    auto next = [&](int64_t g, int64_t* b, int64_t* e) {  // first non-empty window from g
      for (; g < P.C; ++g) {
        if (!todo[g]) continue;
        window(g, b, e);
        if (*b < *e) break;
      }
      return g;
    };
    int64_t g = next(0, &b, &e), b2, e2;
    int32_t kth = col.kth();
    while (g < P.C) {
      if (col.kth() != kth) window(g, &b, &e);  // narrow it to the new bound
      const int64_t g2 = next(g + 1, &b2, &e2);
      kth = col.kth();
      if (g2 < P.C) prefetch_rows(c.s.codes.data, b2, std::min(e2, b2 + 32), c.nb);
      if (b < e) scan(b, e);
      g = g2;
      b = b2;
      e = e2;
    }
  }
  to_float(col.take(), out.pool);
  out.scanned = scanned;
}

// ---- later stages ----

// The extra bits' re-estimate of each row of the pool: <z, l> = sum_p 2^p <z, 2b_p - 1> over its
// planes (the top one its sign code) = sum_p 2^(p+1) (z over the bits set in plane p) -
// (2^planes - 1) sum z; with masked adds (AVX-512) or from the re-score's byte tables.
template <class A>
void reestimate(const Ctx& c, QueryState& st, AsymTables& tables) {
  const FloatLists& L = c.s.lists;
  const int planes = L.extra_planes, nb = c.nb;
  const int64_t stride = static_cast<int64_t>(planes) * nb;
  thread_local std::vector<float> zw;  // z in each word's bit order, a copy a plane, weighted
  float zsum = 0;
  if constexpr (A::kMaskedPlanes) {
    zw.resize(static_cast<size_t>(planes) * c.n_bits);
    for (int j = 0; j < c.n_bits; ++j) zsum += st.z[j];
    for (int p = 0; p < planes; ++p)
      for (int j = 0; j < c.n_bits; ++j)  // lane i of word w: bit i of bytes 2w, 2w + 1 (LSB first)
        zw[p * c.n_bits + (j & ~7) + 7 - (j & 7)] = static_cast<float>(2 << p) * st.z[j];
  } else {
    tables.build(st.z.data(), c.n_bits);
  }
  auto& pool = st.pool;
  auto fetch = [&](size_t j) {  // random rows: their planes, factor and bias ahead
    const int64_t r = pool[j].row;
    const uint8_t* row = L.extra + r * stride;
    for (int64_t o = 0; o < stride; o += 64) __builtin_prefetch(row + o);
    __builtin_prefetch(row + stride - 1);
    __builtin_prefetch(L.extra_factors + r);
    __builtin_prefetch(L.extra_biases + r);
  };
  for (size_t j = 0; j < std::min<size_t>(pool.size(), kGatherAhead); ++j) fetch(j);
  const float all_planes = static_cast<float>((1 << planes) - 1);
  for (size_t j = 0; j < pool.size(); ++j) {
    if (j + kGatherAhead < pool.size()) fetch(j + kGatherAhead);
    const int64_t r = pool[j].row;
    const uint8_t* row = L.extra + r * stride;
    float dot = 0;
    if constexpr (A::kMaskedPlanes) {
      dot = A::masked_planes(zw.data(), row, planes, nb) - all_planes * zsum;
    } else {
      for (int p = 0; p < planes; ++p)
        dot += static_cast<float>(1 << p) * tables.score(row + static_cast<int64_t>(p) * nb);
    }
    pool[j].key =
        -((st.centre_scores[L.row_lists[r]] + L.extra_biases[r]) + L.extra_factors[r] * dot);
  }
}

// Exact asymmetric scores of the pool (float tables), the best `candidates` kept; with extra
// bits the pool (the scan's best `reestimate`) is re-estimated instead.
template <class A>
void rescore(const Ctx& c, QueryState& st) {
  thread_local AsymTables tables;
  const uint8_t* codes = c.s.codes.data;
  const bool lists = c.s.lists.C > 0;  // ivf rows: base score of the list + factor * code score
  const uint8_t* blocked = c.s.lists.blocked;  // ivf: the scan's blocks (just read: in cache)
  auto& pool = st.pool;
  if (c.p.reestimate > 0 && lists && c.s.lists.extra) {  // the pool is what it re-estimates
    reestimate<A>(c, st, tables);
    select_smallest(pool, static_cast<size_t>(c.p.candidates));
    return;
  }
  tables.build(st.z.data(), c.n_bits);
  for (size_t j = 0; !blocked && j < std::min<size_t>(pool.size(), kGatherAhead); ++j)
    __builtin_prefetch(codes + pool[j].row * c.nb);
  for (size_t j = 0; j < pool.size(); ++j) {
    if (!blocked && j + kGatherAhead < pool.size())
      __builtin_prefetch(codes + pool[j + kGatherAhead].row * c.nb);
    const int64_t r = pool[j].row;
    float s = blocked
                  ? tables.score(blocked + (r / kScanBlock * kScanBlock * c.nb + r % kScanBlock),
                                 kScanBlock)
                  : tables.score(codes + r * c.nb);
    if (lists)
      s = (st.centre_scores[c.s.lists.row_lists[r]] + c.s.lists.biases[r]) +
          c.s.lists.factors[r] * s;
    pool[j].key = -s;
  }
  select_smallest(pool, static_cast<size_t>(c.p.candidates));  // the rerank or write sorts
}

template <class A>
float stored_dot(const VectorStore& st, const float* q, const void* row, float scale, float* tmp) {
  switch (st.type) {
    case StoreType::kFloat32:
      return dot_lanes(q, static_cast<const float*>(row), st.dim, [](float v) { return v; });
    case StoreType::kFloat16: {
      const uint16_t* x = static_cast<const uint16_t*>(row);
      int j = 0;
      for (; j + 8 <= st.dim; j += 8) A::half8(x + j, tmp + j);
      for (; j < st.dim; ++j) tmp[j] = half_to_float(x[j]);
      return dot_lanes(q, tmp, st.dim, [](float v) { return v; });
    }
    default:
      return scale * dot_lanes(q, static_cast<const int8_t*>(row), st.dim,
                               [](int8_t v) { return static_cast<float>(v); });
  }
}

// The error bound's order (snapshot.h): each candidate's key becomes -(estimate + bound sigma),
// sigma = |q - c| |v| / sqrt(dim), and the pool is sorted by it.
inline void order_by_upper_bound(const Ctx& c, QueryState& st) {
  const FloatLists& L = c.s.lists;
  const float* norms = error_norms();
  float qq = 0;
  for (int d = 0; d < L.dim; ++d) qq += st.vec[d] * st.vec[d];
  // The estimate's <q, c> is int8 levels' (centres.h): each side rounded by up to half a step,
  // an error of standard deviation sqrt((s_q^2 |c|^2 + s_c^2 |q|^2) / 12) that the bound adds
  // to the code's in quadrature, so that a query on a centre (|q - c| = 0) is bounded too.
  thread_local std::vector<int8_t> levels;
  levels.resize(L.dim);
  const float q_step = quantize_levels(st.vec, L.dim, levels.data());
  constexpr float kUniformVariance = 1.0f / 12;  // of a rounding error in [-1/2, 1/2] steps
  for (auto& e : st.pool) {
    const uint8_t level = L.error_levels[e.row];
    if (level == kErrorLevelNone) {  // no bound: first in line, never pruned (not 0 x inf = NaN)
      e.key = -std::numeric_limits<float>::infinity();
      continue;
    }
    const int64_t g = L.row_lists[e.row];
    const float qc2 = std::max(qq - 2 * st.centre_scores[g] + L.centre_norms[g], 0.0f);
    const float code = std::sqrt(qc2) * norms[level] / std::sqrt(static_cast<float>(L.dim));
    const float c_step = L.centre_steps[g];
    const float rounding =
        kUniformVariance * (q_step * q_step * L.centre_norms[g] + c_step * c_step * qq);
    e.key -= c.p.bound * std::sqrt(code * code + rounding);
  }
  std::sort(st.pool.begin(), st.pool.end());
}

// Exact scores from the stored vectors, the best k kept. With the error bound the candidates come
// in order of their upper bound and the rerank stops at the first whose bound cannot beat the
// k-th exact score found: a hard query reranks more candidates, an easy one fewer.
template <class A>
void rerank(const Ctx& c, QueryState& st) {
  const VectorStore& vs = c.s.store;
  const float* qv = st.vec;
  const bool bounded = c.p.bound > 0 && c.s.lists.error_levels && !c.p.exact_allowed &&
                       c.p.scoring == Scoring::kAsymmetric && !c.p.quantized_only;
  if (bounded) order_by_upper_bound(c, st);
  thread_local std::vector<float> tmp;
  thread_local std::vector<const void*> at;  // each candidate's stored row, found once
  thread_local std::vector<float> scale;
  thread_local std::vector<float> best;  // bounded: the k best exact scores, a min-heap
  auto& pool = st.pool;
  const size_t k = static_cast<size_t>(c.p.k);
  tmp.resize(vs.dim);
  at.resize(pool.size());
  scale.assign(pool.size(), 1.0f);
  best.clear();
  for (size_t j = 0; j < pool.size(); ++j) at[j] = vs.row(pool[j].row, &scale[j]);
  auto prefetch_row = [&](size_t j) {  // candidates are random rows: fetch ahead
    const char* p = static_cast<const char*>(at[j]);
    for (size_t o = 0; o < vs.row_bytes; o += 64) __builtin_prefetch(p + o);
  };
  for (size_t j = 0; j < std::min<size_t>(pool.size(), kRerankAhead); ++j) prefetch_row(j);
  size_t m = 0;
  for (; m < pool.size(); ++m) {
    if (bounded && best.size() >= k && -pool[m].key <= best.front()) break;  // none can enter
    if (m + kRerankAhead < pool.size()) prefetch_row(m + kRerankAhead);
    const float s = stored_dot<A>(vs, qv, at[m], scale[m], tmp.data());
    pool[m].key = -s;
    if (!bounded) continue;
    best.push_back(s);
    std::push_heap(best.begin(), best.end(), std::greater<float>());
    if (best.size() > k) {
      std::pop_heap(best.begin(), best.end(), std::greater<float>());
      best.pop_back();
    }
  }
  pool.resize(m);
  st.reranked = static_cast<int64_t>(m);
  select_smallest(pool, k);
}

// Scores (or Hamming distances) and ids of one query, padded with (-inf or n_bits + 1, -1).
inline void write(const Ctx& c, const QueryState& st, int64_t qi, Results& r) {
  const int k = c.p.k;
  const size_t m = std::min<size_t>(k, st.pool.size());
  int64_t* ids = r.ids + qi * k;
  for (size_t j = 0; j < m; ++j) {
    const int64_t row = st.pool[j].row;
    ids[j] = c.s.ids32 ? c.s.ids32[row] : c.s.ids ? c.s.ids[row] : row;
  }
  for (size_t j = m; j < static_cast<size_t>(k); ++j) ids[j] = -1;
  if (r.distances) {
    int32_t* d = r.distances + qi * k;
    for (size_t j = 0; j < m; ++j) d[j] = static_cast<int32_t>(st.pool[j].key);
    for (size_t j = m; j < static_cast<size_t>(k); ++j) d[j] = c.n_bits + 1;
  } else {
    float* s = r.scores + qi * k;
    for (size_t j = 0; j < m; ++j) s[j] = -st.pool[j].key;
    for (size_t j = m; j < static_cast<size_t>(k); ++j)
      s[j] = -std::numeric_limits<float>::infinity();
  }
}

template <class A>
void finish(const Ctx& c, QueryState& st, int64_t qi, Results& r) {
  if (c.p.scoring == Scoring::kAsymmetric && !c.p.exact_allowed && !c.p.quantized_only)
    rescore<A>(c, st);
  if (c.p.rerank) rerank<A>(c, st);
  keep_smallest(st.pool, static_cast<size_t>(c.p.k));  // the k best, in order
  write(c, st, qi, r);
}

}  // namespace
}  // namespace hashpivot
