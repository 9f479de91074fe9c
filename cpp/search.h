// Threaded drivers over the dispatched kernels: exact k-NN, range search, distance matrices and
// the pivot band filter. Queries are split across threads; a query batch smaller than the thread
// count splits the database instead, with one collector per part merged at the end.
#pragma once
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "thread_pool.h"
#include "topk.h"

namespace hashpivot {

struct Codes {
  const uint8_t* data;
  int64_t n;
  int nbytes;
  int n_bits() const { return nbytes * 8; }
};

// An optional pivot band: per query P lower and upper bounds (nq x P each), table (n x P).
struct Band {
  const void* table = nullptr;
  bool wide = false;  // uint16 table (n_bits >= 256) instead of uint8
  int P = 0;
  const int32_t* lo = nullptr;
  const int32_t* hi = nullptr;
  bool active() const { return table != nullptr; }
};

// Per-query row windows [begin[q], end[q]) (all rows when null).
struct Rows {
  const int64_t* begin = nullptr;
  const int64_t* end = nullptr;
};

namespace detail {

template <class C>
void scan_part(const KernelTable& kt, const uint8_t* q, const Codes& codes, const Band& band,
               int64_t qi, int64_t b, int64_t e, C* col) {
  if (b >= e) return;
  if (!band.active()) {
    knn_rows(kt, q, 1, codes.data, b, e, codes.nbytes, col);
  } else if (band.wide) {
    band_knn(kt, q, codes.data, codes.nbytes, static_cast<const uint16_t*>(band.table), band.P, b,
             e, band.lo + qi * band.P, band.hi + qi * band.P, col);
  } else {
    band_knn(kt, q, codes.data, codes.nbytes, static_cast<const uint8_t*>(band.table), band.P, b,
             e, band.lo + qi * band.P, band.hi + qi * band.P, col);
  }
}

// The threading of every top-k search. scan(q0, q1, part, parts, cols) feeds queries [q0, q1)
// over part `part` of `parts` of their rows into cols[0 .. q1 - q0). With at least as many
// queries as threads, chunks of queries run in parallel (`chunk` queries share each block of
// codes); with fewer, each query's rows are split into parts whose results are merged.
template <class C, class Scan>
void topk_driver(int64_t nq, int64_t n, int64_t work, int k, int max_d, int threads,
                 int64_t chunk, const Scan& scan, int32_t* D, int64_t* I) {
  const int kk = static_cast<int>(std::min<int64_t>(k, std::max<int64_t>(n, 1)));
  ThreadPool& pool = ThreadPool::get();
  threads = threads_for(threads, work);
  if (nq >= threads) {
    chunk = std::max<int64_t>(1, std::min<int64_t>(chunk, nq / (4 * threads)));
    pool.parallel_for((nq + chunk - 1) / chunk, threads, [&](int64_t t) {
      const int64_t q0 = t * chunk, q1 = std::min(nq, q0 + chunk);
      std::vector<C> cols(q1 - q0);
      for (auto& c : cols) c.reset(kk, max_d);
      scan(q0, q1, 0, 1, cols.data());
      for (int64_t q = q0; q < q1; ++q)
        write_padded(cols[q - q0].take(), k, max_d + 1, D + q * k, I + q * k);
    });
    return;
  }
  const int parts = threads;
  std::vector<std::vector<Neighbor>> partial(nq * parts);
  pool.parallel_for(nq * parts, threads, [&](int64_t t) {
    const int64_t q = t / parts;
    C col;
    col.reset(kk, max_d);
    scan(q, q + 1, t % parts, parts, &col);
    partial[t] = col.take();
  });
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<std::vector<Neighbor>> mine(std::make_move_iterator(partial.begin() + q * parts),
                                            std::make_move_iterator(partial.begin() + (q + 1) * parts));
    write_padded(merge_topk(mine, kk), k, max_d + 1, D + q * k, I + q * k);
  }
}

template <class C>
void knn_impl(const uint8_t* queries, int64_t nq, const Codes& codes, int k, int threads,
              const Band& band, const Rows& rows, int32_t* D, int64_t* I) {
  const KernelTable& kt = kernels();
  const int nb = codes.nbytes;
  const bool batched = !band.active() && !rows.begin;
  auto scan = [&](int64_t q0, int64_t q1, int part, int parts, C* cols) {
    if (batched && parts == 1) {
      knn_rows(kt, queries + q0 * nb, q1 - q0, codes.data, 0, codes.n, nb, cols);
      return;
    }
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t b = rows.begin ? std::max<int64_t>(0, rows.begin[q]) : 0;
      const int64_t e = rows.end ? std::min<int64_t>(codes.n, rows.end[q]) : codes.n;
      const int64_t len = std::max<int64_t>(0, e - b);
      scan_part(kt, queries + q * nb, codes, band, q, b + len * part / parts,
                b + len * (part + 1) / parts, &cols[q - q0]);
    }
  };
  topk_driver<C>(nq, codes.n, nq * codes.n, k, codes.n_bits(), threads, batched ? 64 : 1, scan,
                 D, I);
}

}  // namespace detail

// Exact k nearest codes of each query by Hamming distance, faiss' order: ascending distance,
// ties by smaller row; (n_bits + 1, -1) where fewer than k rows exist. D, I: nq x k.
inline void knn(const uint8_t* queries, int64_t nq, const Codes& codes, int k, int threads,
                int32_t* D, int64_t* I, const Band& band = {}, const Rows& rows = {}) {
  if (nq <= 0 || k <= 0) return;
  if (k <= kHeapMaxK)
    detail::knn_impl<HeapTopK>(queries, nq, codes, k, threads, band, rows, D, I);
  else
    detail::knn_impl<CountingTopK>(queries, nq, codes, k, threads, band, rows, D, I);
}

// Top-k rows of each query by the quantized asymmetric score (asymmetric.h): D holds the
// integer distances (smaller = better), I the rows.
inline void asym_knn(const AsymQuery* qs, int64_t nq, const Codes& codes, int k, int threads,
                     int32_t* D, int64_t* I) {
  if (nq <= 0 || k <= 0) return;
  const KernelTable& kt = kernels();
  const int max_d = asym_max_distance(codes.n_bits());
  auto run = [&](auto* tag) {
    using C = std::remove_pointer_t<decltype(tag)>;
    auto scan = [&](int64_t q0, int64_t q1, int part, int parts, C* cols) {
      const int64_t b = codes.n * part / parts, e = codes.n * (part + 1) / parts;
      if constexpr (std::is_same_v<C, HeapTopK>)
        kt.asym_knn_heap(qs + q0, q1 - q0, codes.data, b, e, codes.nbytes, cols);
      else
        kt.asym_knn_count(qs + q0, q1 - q0, codes.data, b, e, codes.nbytes, cols);
    };
    // an asymmetric score costs ~4 Hamming distances: split the work sooner
    detail::topk_driver<C>(nq, codes.n, 4 * nq * codes.n, k, max_d, threads, 64, scan, D, I);
  };
  if (k <= kHeapMaxK)
    run(static_cast<HeapTopK*>(nullptr));
  else
    run(static_cast<CountingTopK*>(nullptr));
}

// Every row within `radius` (inclusive) of each query, sorted by (distance, row).
inline std::vector<std::vector<Neighbor>> range_search(const uint8_t* queries, int64_t nq,
                                                       const Codes& codes, int radius,
                                                       int threads) {
  const KernelTable& kt = kernels();
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = std::max<int64_t>(1, (codes.n + kChunk - 1) / kChunk);
  std::vector<std::vector<Neighbor>> parts(nq * chunks);
  ThreadPool::get().parallel_for(nq * chunks, threads_for(threads, nq * codes.n), [&](int64_t t) {
    const int64_t q = t / chunks, c = t % chunks;
    RangeCollector col(radius);
    kt.range(queries + q * codes.nbytes, codes.data, c * kChunk,
             std::min(codes.n, (c + 1) * kChunk), codes.nbytes, &col);
    parts[t] = std::move(col.items());
  });
  std::vector<std::vector<Neighbor>> out(nq);
  for (int64_t q = 0; q < nq; ++q) {
    for (int64_t c = 0; c < chunks; ++c) {
      auto& p = parts[q * chunks + c];
      out[q].insert(out[q].end(), p.begin(), p.end());
    }
    std::sort(out[q].begin(), out[q].end());
  }
  return out;
}

// All distances, out: nq x n int32.
inline void distance_matrix(const uint8_t* queries, int64_t nq, const Codes& codes, int threads,
                            int32_t* out) {
  const KernelTable& kt = kernels();
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = std::max<int64_t>(1, (codes.n + kChunk - 1) / kChunk);
  ThreadPool::get().parallel_for(nq * chunks, threads_for(threads, nq * codes.n), [&](int64_t t) {
    const int64_t q = t / chunks, c = t % chunks;
    const int64_t b = c * kChunk, e = std::min(codes.n, b + kChunk);
    if (b < e)
      kt.distance_row(queries + q * codes.nbytes, codes.data, b, e, codes.nbytes,
                      out + q * codes.n + b);
  });
}

// Rows of [begin, end) inside one query's band (lo/hi: P bounds), in row order.
inline std::vector<int64_t> band_filter_rows(const Band& band, int64_t begin, int64_t end,
                                             int threads) {
  const KernelTable& kt = kernels();
  constexpr int64_t kChunk = 1 << 16;
  const int64_t len = std::max<int64_t>(0, end - begin);
  const int64_t chunks = std::max<int64_t>(1, (len + kChunk - 1) / kChunk);
  std::vector<std::vector<int64_t>> parts(chunks);
  ThreadPool::get().parallel_for(chunks, threads_for(threads, len * band.P / 2), [&](int64_t c) {
    const int64_t b = begin + c * kChunk, e = std::min(end, b + kChunk);
    if (b >= e) return;
    parts[c].resize(e - b);
    int64_t m = band.wide ? band_filter(kt, static_cast<const uint16_t*>(band.table), band.P, b, e,
                                        band.lo, band.hi, parts[c].data())
                          : band_filter(kt, static_cast<const uint8_t*>(band.table), band.P, b, e,
                                        band.lo, band.hi, parts[c].data());
    parts[c].resize(m);
  });
  std::vector<int64_t> out;
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace hashpivot
