// The index's search path. Rows are stored sorted by their distance to the first pivots, so the
// band on those pivots is a few contiguous row windows (read through `offsets`); the other pivots
// are checked only for rows that beat the running top-L threshold; the L candidates are then
// reranked by exact inner product with the stored vectors.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <utility>
#include <iterator>
#include <vector>

#include "dispatch.h"
#include "search.h"
#include "thread_pool.h"
#include "topk.h"

namespace hashpivot {

// Cell starts of the sorted layout: cell = d0 (levels 1) or d0 * (n_bits + 1) + d1 (levels 2).
struct PivotLayout {
  const int64_t* offsets;  // (n_bits + 1)^levels + 1 entries
  int levels;
  int n_bits;
};

using Window = RowRange;

// The row windows holding exactly the rows inside the band on the sorted pivots.
inline void band_windows(const PivotLayout& L, const int32_t* lo, const int32_t* hi,
                         std::vector<Window>& out) {
  out.clear();
  const int64_t B = L.n_bits + 1;
  const int l0 = std::max(lo[0], 0), h0 = std::min(hi[0], L.n_bits);
  if (L.levels == 1) {
    if (l0 <= h0 && L.offsets[l0] < L.offsets[h0 + 1])
      out.push_back({L.offsets[l0], L.offsets[h0 + 1]});
    return;
  }
  const int l1 = std::max(lo[1], 0), h1 = std::min(hi[1], L.n_bits);
  if (l1 > h1) return;
  for (int64_t v0 = l0; v0 <= h0; ++v0) {
    const int64_t b = L.offsets[v0 * B + l1], e = L.offsets[v0 * B + h1 + 1];
    if (b >= e) continue;
    if (!out.empty() && out.back().end == b)
      out.back().end = e;
    else
      out.push_back({b, e});
  }
}

namespace detail {

// One query over row ranges: distance first, the band checked for rows that beat the threshold.
template <class C>
void scan_ranges(const KernelTable& kt, const uint8_t* q, const Codes& codes, const Band& band,
                 int64_t qi, const std::vector<Window>& ranges, C* col) {
  if (ranges.empty()) return;
  if (band.wide)
    band_late(kt, q, codes.data, codes.nbytes, static_cast<const uint16_t*>(band.table), band.P,
              ranges.data(), ranges.size(), band.lo + qi * band.P, band.hi + qi * band.P, col);
  else
    band_late(kt, q, codes.data, codes.nbytes, static_cast<const uint8_t*>(band.table), band.P,
              ranges.data(), ranges.size(), band.lo + qi * band.P, band.hi + qi * band.P, col);
}

// The rows [from, to) of the concatenation of `wins`, as ranges of the table.
inline void slice_windows(const std::vector<Window>& wins, int64_t from, int64_t to,
                          std::vector<Window>& out) {
  out.clear();
  int64_t pos = 0;
  for (const Window& w : wins) {
    const int64_t len = w.end - w.begin;
    const int64_t b = std::max(from, pos), e = std::min(to, pos + len);
    if (b < e) out.push_back({w.begin + (b - pos), w.begin + (e - pos)});
    pos += len;
  }
}

// A chunk of queries over the whole table, one L2-sized block of rows at a time: every query
// scans its windows' part of the block before the next block, as the unfiltered batch does.
template <class C>
void scan_windows_batched(const KernelTable& kt, const uint8_t* queries, const Codes& codes,
                          const Band& band, const std::vector<std::vector<Window>>& wins,
                          int64_t q0, int64_t q1, C* cols) {
  constexpr int64_t kBlockBytes = 128 * 1024;
  const int64_t block = std::max<int64_t>(64, kBlockBytes / codes.nbytes);
  std::vector<size_t> next(q1 - q0, 0);  // each query's first window not yet finished
  std::vector<Window> part;
  for (int64_t b = 0; b < codes.n; b += block) {
    const int64_t e = std::min(codes.n, b + block);
    for (int64_t q = q0; q < q1; ++q) {
      const std::vector<Window>& w = wins[q];
      size_t& i = next[q - q0];
      while (i < w.size() && w[i].end <= b) ++i;
      part.clear();
      for (size_t j = i; j < w.size() && w[j].begin < e; ++j)
        part.push_back({std::max(b, w[j].begin), std::min(e, w[j].end)});
      scan_ranges(kt, queries + q * codes.nbytes, codes, band, q, part, &cols[q - q0]);
    }
  }
}

template <class C>
void banded_impl(const uint8_t* queries, int64_t nq, const Codes& codes, const Band& band,
                 const PivotLayout& layout, int k, int threads, int32_t* D, int64_t* I,
                 int64_t* scanned) {
  const KernelTable& kt = kernels();
  const int kk = static_cast<int>(std::min<int64_t>(k, std::max<int64_t>(codes.n, 1)));
  std::vector<std::vector<Window>> wins(nq);
  std::vector<int64_t> total(nq, 0);
  int64_t all = 0;
  for (int64_t q = 0; q < nq; ++q) {
    band_windows(layout, band.lo + q * band.P, band.hi + q * band.P, wins[q]);
    for (auto& w : wins[q]) total[q] += w.end - w.begin;
    all += total[q];
  }
  if (scanned) *scanned = all;
  ThreadPool& pool = ThreadPool::get();
  threads = threads_for(threads, all);
  if (nq >= threads) {  // chunks of queries share each block of codes
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(64, nq / (4 * threads)));
    pool.parallel_for((nq + chunk - 1) / chunk, threads, [&](int64_t t) {
      const int64_t q0 = t * chunk, q1 = std::min(nq, q0 + chunk);
      std::vector<C> cols(q1 - q0);
      for (auto& c : cols) c.reset(kk, codes.n_bits());
      scan_windows_batched(kt, queries, codes, band, wins, q0, q1, cols.data());
      for (int64_t q = q0; q < q1; ++q)
        write_padded(cols[q - q0].take(), k, codes.n_bits() + 1, D + q * k, I + q * k);
    });
    return;
  }
  const int parts = threads;  // fewer queries than threads: each query's rows are split
  std::vector<std::vector<Neighbor>> partial(nq * parts);
  pool.parallel_for(nq * parts, threads, [&](int64_t t) {
    const int64_t q = t / parts, p = t % parts;
    C col;
    col.reset(kk, codes.n_bits());
    std::vector<Window> part;
    slice_windows(wins[q], total[q] * p / parts, total[q] * (p + 1) / parts, part);
    scan_ranges(kt, queries + q * codes.nbytes, codes, band, q, part, &col);
    partial[t] = col.take();
  });
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<std::vector<Neighbor>> mine(std::make_move_iterator(partial.begin() + q * parts),
                                            std::make_move_iterator(partial.begin() + (q + 1) * parts));
    write_padded(merge_topk(mine, kk), k, codes.n_bits() + 1, D + q * k, I + q * k);
  }
}

}  // namespace detail

// Top-k rows of each query among the rows inside its pivot band (all P pivots), using the
// sorted layout's windows. `scanned` (optional) receives the rows read over all queries.
inline void banded_knn(const uint8_t* queries, int64_t nq, const Codes& codes, const Band& band,
                       const PivotLayout& layout, int k, int threads, int32_t* D, int64_t* I,
                       int64_t* scanned = nullptr) {
  if (nq <= 0 || k <= 0) return;
  if (k <= kHeapMaxK)
    detail::banded_impl<HeapTopK>(queries, nq, codes, band, layout, k, threads, D, I, scanned);
  else
    detail::banded_impl<CountingTopK>(queries, nq, codes, band, layout, k, threads, D, I,
                                      scanned);
}

// ---- exact rerank with the stored vectors ----
enum class StoreType { kFloat32 = 0, kFloat16 = 1, kInt8 = 2 };

struct Store {
  const void* data;
  StoreType type;
  int dim;
  const float* scales;  // int8: one per row (x ~ scale * int8)
};

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal half: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while (!(mant & 0x400));
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3FF) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// 16 partial sums vectorise without -ffast-math; one clone for AVX2+FMA, one baseline.
template <class T, class Conv>
inline float dot_impl(const float* q, const T* x, int dim, Conv conv) {
  float acc[16] = {0};
  int j = 0;
  for (; j + 16 <= dim; j += 16)
    for (int u = 0; u < 16; ++u) acc[u] += q[j + u] * conv(x[j + u]);
  float s = 0;
  for (; j < dim; ++j) s += q[j] * conv(x[j]);
  for (int u = 0; u < 16; ++u) s += acc[u];
  return s;
}
__attribute__((target_clones("avx2", "default"))) static float dot_f32(const float* q,
                                                                        const float* x, int dim) {
  return dot_impl(q, x, dim, [](float v) { return v; });
}
__attribute__((target_clones("avx2", "default"))) static float dot_i8(const float* q,
                                                                       const int8_t* x, int dim) {
  return dot_impl(q, x, dim, [](int8_t v) { return static_cast<float>(v); });
}
static float dot_f16(const float* q, const uint16_t* x, int dim, float* tmp) {
  for (int j = 0; j < dim; ++j) tmp[j] = half_to_float(x[j]);
  return dot_f32(q, tmp, dim);
}

// Scores of each query's candidate rows (nq x L, -1 = none); the k best by score (descending,
// ties by smaller row) go to S/R, padded with (-inf, -1).
inline void rerank(const float* queries, int64_t nq, const int64_t* cand, int L, const Store& st,
                   int k, int threads, float* S, int64_t* R) {
  if (nq <= 0 || k <= 0) return;
  ThreadPool::get().parallel_for(nq, threads_for(threads, nq * L * st.dim / 16), [&](int64_t q) {
    const float* qv = queries + q * st.dim;
    std::vector<std::pair<float, int64_t>> sc;
    sc.reserve(L);
    std::vector<float> tmp(st.dim);
    const size_t elem = st.type == StoreType::kFloat32 ? 4 : st.type == StoreType::kFloat16 ? 2 : 1;
    const size_t row_bytes = elem * st.dim;
    auto prefetch_row = [&](int64_t r) {  // candidates are random rows: fetch ahead
      const char* p = static_cast<const char*>(st.data) + r * row_bytes;
      for (size_t o = 0; o < row_bytes; o += 64) __builtin_prefetch(p + o);
    };
    constexpr int kAhead = 4;
    for (int j = 0; j < std::min(L, kAhead); ++j)
      if (cand[q * L + j] >= 0) prefetch_row(cand[q * L + j]);
    for (int j = 0; j < L; ++j) {
      if (j + kAhead < L && cand[q * L + j + kAhead] >= 0) prefetch_row(cand[q * L + j + kAhead]);
      const int64_t r = cand[q * L + j];
      if (r < 0) continue;
      float s;
      switch (st.type) {
        case StoreType::kFloat32:
          s = dot_f32(qv, static_cast<const float*>(st.data) + r * st.dim, st.dim);
          break;
        case StoreType::kFloat16:
          s = dot_f16(qv, static_cast<const uint16_t*>(st.data) + r * st.dim, st.dim, tmp.data());
          break;
        default:
          s = st.scales[r] * dot_i8(qv, static_cast<const int8_t*>(st.data) + r * st.dim, st.dim);
      }
      sc.push_back({-s, r});  // ascending (-score, row) = descending score, smaller row first
    }
    const size_t m = std::min<size_t>(k, sc.size());
    std::partial_sort(sc.begin(), sc.begin() + m, sc.end());
    for (size_t j = 0; j < m; ++j) {
      S[q * k + j] = -sc[j].first;
      R[q * k + j] = sc[j].second;
    }
    for (int j = static_cast<int>(m); j < k; ++j) {
      S[q * k + j] = -std::numeric_limits<float>::infinity();
      R[q * k + j] = -1;
    }
  });
}

}  // namespace hashpivot
