// Whole-call kernels besides search: range search, distance matrices, the pivot band's rows,
// projection and encoding, exact asymmetric scores of given candidates. Each runs its tasks on
// the thread pool, split into chunks of rows or queries.
#pragma once
#include "search.h"

namespace hashpivot {
namespace {

constexpr int64_t kRangeChunk = 1 << 16;     // rows a range-search task scans
constexpr int64_t kDistanceChunk = 1 << 14;  // rows a distance-matrix task fills
constexpr int64_t kEncodeChunk = 256;        // rows an encoding task projects

// Every row within `radius` (inclusive) of each query, sorted by (distance, row).
template <class A>
std::vector<std::vector<Scored<int32_t>>> range_search(const uint8_t* queries, int64_t nq,
                                                       const CodeView& codes, int radius,
                                                       int threads) {
  const int64_t chunks = std::max<int64_t>(1, (codes.n + kRangeChunk - 1) / kRangeChunk);
  std::vector<std::vector<Scored<int32_t>>> parts(nq * chunks);
  ThreadPool::get().parallel_for(nq * chunks, threads_for(threads, nq * codes.n), [&](int64_t t) {
    const int64_t qi = t / chunks, ch = t % chunks;
    RangeCollector col(radius);
    with_width(codes.nbytes, [&](auto w) {
      constexpr int W = decltype(w)::value;
      const HammingOf<A, W> m(queries + qi * codes.nbytes, codes.nbytes);
      scan_range(m, codes.data, codes.nbytes, ch * kRangeChunk,
                 std::min(codes.n, (ch + 1) * kRangeChunk), codes.n, col, NoFilter{}, NoBand{});
    });
    parts[t] = std::move(col.items());
  });
  std::vector<std::vector<Scored<int32_t>>> out(nq);
  for (int64_t qi = 0; qi < nq; ++qi) {
    for (int64_t ch = 0; ch < chunks; ++ch) {
      auto& p = parts[qi * chunks + ch];
      out[qi].insert(out[qi].end(), p.begin(), p.end());
    }
    std::sort(out[qi].begin(), out[qi].end());
  }
  return out;
}

// All distances, out: nq x n int32.
template <class A>
void distances(const uint8_t* queries, int64_t nq, const CodeView& codes, int threads,
               int32_t* out) {
  const int64_t chunks = std::max<int64_t>(1, (codes.n + kDistanceChunk - 1) / kDistanceChunk);
  ThreadPool::get().parallel_for(nq * chunks, threads_for(threads, nq * codes.n), [&](int64_t t) {
    const int64_t qi = t / chunks, b = (t % chunks) * kDistanceChunk;
    const int64_t e = std::min(codes.n, b + kDistanceChunk);
    if (b >= e) return;
    with_width(codes.nbytes, [&](auto w) {
      constexpr int W = decltype(w)::value;
      const HammingOf<A, W> m(queries + qi * codes.nbytes, codes.nbytes);
      all_keys(m, codes.data + b * codes.nbytes, codes.nbytes, e - b, out + qi * codes.n + b);
    });
  });
}

// Rows of [begin, end) inside one query's band, in row order.
template <class A>
std::vector<int64_t> band_filter_rows(const PivotTable& piv, int64_t n, const int32_t* lo,
                                      const int32_t* hi, int64_t begin, int64_t end, int threads) {
  const int64_t len = std::max<int64_t>(0, end - begin);
  const int64_t chunks = std::max<int64_t>(1, (len + kRangeChunk - 1) / kRangeChunk);
  std::vector<std::vector<int64_t>> parts(chunks);
  (void)n;
  ThreadPool::get().parallel_for(chunks, threads_for(threads, len * piv.P / 2), [&](int64_t ch) {
    const int64_t b = begin + ch * kRangeChunk, e = std::min(end, b + kRangeChunk);
    auto keep = [&](int64_t r) { parts[ch].push_back(r); };
    if (piv.wide)
      band_rows<A>(BandCheck<uint16_t>{static_cast<const uint16_t*>(piv.table), piv.P, lo, hi}, b,
                   e, keep);
    else
      band_rows<A>(BandCheck<uint8_t>{static_cast<const uint8_t*>(piv.table), piv.P, lo, hi}, b, e,
                   keep);
  });
  std::vector<int64_t> out;
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// z = (x - mean) @ proj for n rows (z: n x n_bits), and with codes non-null, sign(z) packed.
template <class A>
void encode(const Transform& t, const float* x, int64_t n, float* z, uint8_t* codes, int threads) {
  const int64_t chunks = (n + kEncodeChunk - 1) / kEncodeChunk;
  ThreadPool::get().parallel_for(
      chunks, threads_for(threads, n * t.dim * t.n_bits / 64), [&](int64_t ch) {
        thread_local std::vector<float> tmp;
        tmp.resize(static_cast<size_t>(A::kProjectRows) * t.n_bits);
        const int64_t end = std::min(n, (ch + 1) * kEncodeChunk);
        for (int64_t b = ch * kEncodeChunk; b < end; b += A::kProjectRows) {
          const int m = static_cast<int>(std::min<int64_t>(A::kProjectRows, end - b));
          const float* xs[kProjectRowsMax];
          float* zs[kProjectRowsMax];
          for (int r = 0; r < m; ++r) {
            xs[r] = x + (b + r) * t.dim;
            zs[r] = z ? z + (b + r) * t.n_bits : tmp.data() + r * t.n_bits;
          }
          project_rows<A>(t, xs, m, zs);
          if (codes)
            for (int r = 0; r < m; ++r)
              pack_signs(zs[r], t.n_bits, codes + (b + r) * (t.n_bits / 8));
        }
      });
}

// Exact asymmetric scores of candidate rows (nq x M, -1 = none): the k best per query, scores
// descending (ties by row), padded with (-inf, -1).
template <class A>
void asym_rescore(const float* z, int64_t nq, const CodeView& codes, const int64_t* cand, int64_t M,
                  int k, int threads, float* S, int64_t* R) {
  ThreadPool::get().parallel_for(nq, threads_for(threads, nq * M * 8), [&](int64_t qi) {
    AsymTables tables;
    tables.build(z + qi * codes.n_bits(), codes.n_bits());
    std::vector<Scored<float>> sc;
    sc.reserve(M);
    for (int64_t j = 0; j < M; ++j) {
      const int64_t r = cand[qi * M + j];
      if (r >= 0) sc.push_back({-tables.score(codes.data + r * codes.nbytes), r});
    }
    keep_smallest(sc, static_cast<size_t>(k));
    for (int j = 0; j < k; ++j) {
      const bool ok = j < static_cast<int>(sc.size());
      S[qi * k + j] = ok ? -sc[j].key : -std::numeric_limits<float>::infinity();
      R[qi * k + j] = ok ? sc[j].row : -1;
    }
  });
}

}  // namespace
}  // namespace hashpivot
