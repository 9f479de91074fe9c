// Threaded drivers over the dispatched kernels: exact k-NN, range search, distance matrices and
// the pivot band filter. Queries are split across threads; a query batch smaller than the thread
// count splits the database instead, with one collector per part merged at the end.
#pragma once
#include <algorithm>
#include <cstdint>
#include <iterator>
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

template <class C>
void knn_impl(const uint8_t* queries, int64_t nq, const Codes& codes, int k, int threads,
              const Band& band, const Rows& rows, int32_t* D, int64_t* I) {
  const KernelTable& kt = kernels();
  const int nb = codes.nbytes;
  const int kk = static_cast<int>(std::min<int64_t>(k, std::max<int64_t>(codes.n, 1)));
  auto row_range = [&](int64_t q, int64_t* b, int64_t* e) {
    *b = rows.begin ? std::max<int64_t>(0, rows.begin[q]) : 0;
    *e = rows.end ? std::min<int64_t>(codes.n, rows.end[q]) : codes.n;
  };
  auto finish = [&](int64_t q, std::vector<Neighbor>&& items) {
    write_padded(items, k, codes.n_bits() + 1, D + q * k, I + q * k);
  };
  ThreadPool& pool = ThreadPool::get();
  threads = threads_for(threads, nq * codes.n);

  if (nq >= threads) {
    // Chunks of queries; without band or windows a chunk shares each block of codes.
    const bool batched = !band.active() && !rows.begin;
    const int64_t chunk = batched ? std::max<int64_t>(1, std::min<int64_t>(64, nq / (4 * threads)))
                                  : 1;
    const int64_t n_tasks = (nq + chunk - 1) / chunk;
    pool.parallel_for(n_tasks, threads, [&](int64_t t) {
      const int64_t q0 = t * chunk, q1 = std::min(nq, q0 + chunk);
      std::vector<C> cols(q1 - q0);
      for (auto& c : cols) c.reset(kk, codes.n_bits());
      if (batched) {
        knn_rows(kt, queries + q0 * nb, q1 - q0, codes.data, 0, codes.n, nb, cols.data());
      } else {
        for (int64_t q = q0; q < q1; ++q) {
          int64_t b, e;
          row_range(q, &b, &e);
          scan_part(kt, queries + q * nb, codes, band, q, b, e, &cols[q - q0]);
        }
      }
      for (int64_t q = q0; q < q1; ++q) finish(q, cols[q - q0].take());
    });
    return;
  }

  // Few queries, many threads: split each query's rows into parts.
  const int parts = threads;
  std::vector<std::vector<Neighbor>> partial(nq * parts);
  pool.parallel_for(nq * parts, threads, [&](int64_t t) {
    const int64_t q = t / parts, p = t % parts;
    int64_t b, e;
    row_range(q, &b, &e);
    const int64_t len = std::max<int64_t>(0, e - b);
    const int64_t pb = b + len * p / parts, pe = b + len * (p + 1) / parts;
    C col;
    col.reset(kk, codes.n_bits());
    scan_part(kt, queries + q * nb, codes, band, q, pb, pe, &col);
    partial[t] = col.take();
  });
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<std::vector<Neighbor>> mine(std::make_move_iterator(partial.begin() + q * parts),
                                            std::make_move_iterator(partial.begin() + (q + 1) * parts));
    finish(q, merge_topk(mine, kk));
  }
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
