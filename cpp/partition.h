// Partitioned layout: rows stored contiguously per partition (the nearest of C centre codes),
// each partition with its covering radius r_p = max d(x, c_p) and its rows ordered by their
// distance to the centre. A query visits partitions by increasing d(q, c_p): `nprobe` of them
// (approximate), or, exact, every one whose lower bound d(q, c_p) - r_p does not exceed the
// k-th distance found (triangle inequality). Inside a partition only the ring of rows with
// |d(q, c_p) - d(x, c_p)| <= k-th distance can do better, and it is one contiguous window.
// Ties go to the smaller row (TieHeap), so exact mode equals the flat scan, ties included.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "search.h"
#include "thread_pool.h"
#include "topk.h"

namespace hashpivot {

template <class T>  // uint8_t or uint16_t: the pivot table's type (n_bits <= 255 or not)
struct Partitions {
  const uint8_t* centres;  // (C, nbytes)
  int64_t C;
  const int64_t* offsets;  // C + 1 row starts
  const int32_t* radius;   // C covering radii
  const T* cdist;          // each row's distance to its centre, ascending inside a partition
};

// The optional pivot band inside partitions: rows of `table` (n, P); lo/hi are (nq, P).
template <class T>
struct PartitionBand {
  const T* table = nullptr;  // null: no band
  int P = 0;
  const int32_t* lo = nullptr;
  const int32_t* hi = nullptr;
};

constexpr size_t kWarmPartitions = 8;

// First row r of [b, e) with a[r] >= v (a ascending), e if none: branch-free binary search
// (conditional moves; an ordinary one mispredicts about half its steps).
template <class T>
inline int64_t first_at_least(const T* a, int64_t b, int64_t e, int32_t v) {
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

// The rows of partition c that can still enter a collector whose threshold is thr (a row needs
// d(q, x) < thr, and d(q, x) >= |d(q, c) - d(x, c)|): one contiguous window of the ring, empty
// when d(q, c) - radius_c cannot beat it. The threshold only shrinks, so a window found with an
// earlier value is a superset: still exact.
template <class T>
inline void ring_window(const Partitions<T>& P, int64_t c, int32_t dq, int32_t thr, int n_bits,
                        int64_t* b, int64_t* e) {
  *b = P.offsets[c];
  *e = P.offsets[c + 1];
  if (thr > n_bits || *b >= *e) return;  // not full yet: every row may enter
  const int32_t bound = thr - 1;
  if (dq - P.radius[c] > bound) {
    *e = *b;
    return;
  }
  if (P.cdist[*b] < dq - bound) *b = first_at_least(P.cdist, *b, *e, dq - bound);
  if (P.cdist[*e - 1] > dq + bound) *e = first_at_least(P.cdist, *b, *e, dq + bound + 1);
}

// Asks for the cache lines of rows [b, e) ahead of their scan (at most 8 KB).
inline void prefetch_rows(const uint8_t* codes, int64_t b, int64_t e, int nb) {
  const uint8_t* p = codes + b * nb;
  const int64_t bytes = std::min<int64_t>((e - b) * nb, 8192);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o);
}

struct PartitionScratch {
  std::vector<int32_t> dc;
  std::vector<int64_t> start, order;
  std::vector<uint8_t> todo;
  TieHeap tie;
  HeapTopK heap;
  CountingTopK count;
};

// nprobe > 0: the nprobe nearest partitions; nprobe == 0: exact. `scanned`: rows read in all.
template <class T>
inline void partition_knn(const uint8_t* queries, int64_t nq, const Codes& codes,
                          const Partitions<T>& P, const PartitionBand<T>& band, int k, int nprobe,
                          int threads, int32_t* D, int64_t* I, int64_t* scanned) {
  if (nq <= 0 || k <= 0) return;
  const KernelTable& kt = kernels();
  const int nb = codes.nbytes, n_bits = codes.n_bits();
  const int kk = static_cast<int>(std::min<int64_t>(k, std::max<int64_t>(codes.n, 1)));
  std::vector<int64_t> read(nq, 0);
  const int64_t per_query = nprobe > 0 ? std::min<int64_t>(codes.n, codes.n / std::max<int64_t>(P.C, 1) * nprobe)
                                       : codes.n / 2;
  ThreadPool::get().parallel_for(nq, threads_for(threads, nq * (per_query + P.C)), [&](int64_t q) {
    const uint8_t* qc = queries + q * nb;
    thread_local PartitionScratch tls;  // reused: a query costs microseconds at small nprobe
    PartitionScratch& scratch = tls;    // one TLS lookup (each costs a call in a shared library)
    auto& [dc, start, order, todo, tie, heap, count] = scratch;
    int64_t rows = 0;
    auto scan_rows = [&](auto& col, int64_t b, int64_t e) {
      const RowRange range{b, e};
      if (band.table)
        band_late(kt, qc, codes.data, nb, band.table, band.P, &range, 1, band.lo + q * band.P,
                  band.hi + q * band.P, &col);
      else
        knn_rows(kt, qc, 1, codes.data, b, e, nb, &col);
      rows += e - b;
    };
    auto finish = [&](auto& col) {
      read[q] = rows;
      write_padded(col.take(), k, n_bits + 1, D + q * k, I + q * k);
    };
    dc.resize(P.C);
    if (nprobe > 0) {
      // The nprobe nearest centres by the top-k scan (ties by partition), then their rows in
      // memory order: the result is the top-k by (distance, row) over those rows whatever the
      // order, and in row order the plain heap keeps ties right while the next partition is
      // prefetched (before, nearest first with the tie-aware heap and no prefetch: about 1.3x
      // slower at nprobe=16 on 1M codes).
      const int limit = static_cast<int>(std::min<int64_t>(nprobe, P.C));
      std::vector<Neighbor> near;
      if (limit <= kHeapMaxK) {
        heap.reset(limit, n_bits);
        knn_rows(kt, qc, 1, P.centres, 0, P.C, nb, &heap);
        near = heap.take();
      } else {
        count.reset(limit, n_bits);
        knn_rows(kt, qc, 1, P.centres, 0, P.C, nb, &count);
        near = count.take();
      }
      order.resize(near.size());
      for (size_t j = 0; j < near.size(); ++j) {
        order[j] = near[j].id;
        dc[near[j].id] = near[j].d;
      }
      std::sort(order.begin(), order.end());
      auto probe = [&](auto& col) {
        col.reset(kk, n_bits);
        for (size_t j = 0; j < order.size(); ++j) {
          if (j + 1 < order.size()) {  // its codes, and the ring bounds' distances to centre
            const int64_t b1 = P.offsets[order[j + 1]], e1 = P.offsets[order[j + 1] + 1];
            prefetch_rows(codes.data, b1, e1, nb);
            if (b1 < e1) {
              __builtin_prefetch(P.cdist + b1);
              __builtin_prefetch(P.cdist + e1 - 1);
            }
          }
          int64_t b, e;
          ring_window(P, order[j], dc[order[j]], col.threshold(), n_bits, &b, &e);
          if (b < e) scan_rows(col, b, e);
        }
        finish(col);
      };
      if (kk <= kHeapMaxK)
        probe(heap);
      else
        probe(count);
      return;
    }
    // Exact: every partition by increasing distance (a counting sort over 0..n_bits).
    if (P.C) kt.distance_row(qc, P.centres, 0, P.C, nb, dc.data());
    start.assign(n_bits + 2, 0);
    for (int64_t c = 0; c < P.C; ++c) ++start[dc[c] + 1];
    for (int d = 0; d <= n_bits; ++d) start[d + 1] += start[d];
    order.resize(P.C);
    for (int64_t c = 0; c < P.C; ++c) order[start[dc[c]]++] = c;
    TieHeap& col = tie;  // rows arrive out of order: ties are settled by row in the heap
    col.reset(kk, n_bits);
    auto window = [&](int64_t c, int64_t* b, int64_t* e) {
      ring_window(P, c, dc[c], col.threshold(), n_bits, b, e);
    };
    // The nearest partitions first, until the k-th distance is a good bound; then every other
    // partition that can still hold a result, in memory order, the next window prefetched
    // while one is scanned: short windows in distance order jump around memory (measured:
    // several times the cost per row).
    size_t j = 0;
    int64_t b, e;
    for (; j < order.size() && (j < kWarmPartitions || !col.full()); ++j) {
      window(order[j], &b, &e);
      if (b < e) scan_rows(col, b, e);
    }
    if (j < order.size()) {
      todo.assign(P.C, 0);
      for (size_t i = j; i < order.size(); ++i)
        todo[order[i]] = dc[order[i]] - P.radius[order[i]] <= col.kth();
      auto next = [&](int64_t c, int64_t* b, int64_t* e) {  // first non-empty window from c
        for (; c < P.C; ++c) {
          if (!todo[c]) continue;
          window(c, b, e);
          if (*b < *e) break;
        }
        return c;
      };
      int64_t c = next(0, &b, &e), b2, e2;
      int32_t kth = col.kth();
      while (c < P.C) {
        if (col.kth() != kth) window(c, &b, &e);  // narrow it to the new bound
        const int64_t c2 = next(c + 1, &b2, &e2);
        kth = col.kth();
        if (c2 < P.C) prefetch_rows(codes.data, b2, std::min(e2, b2 + 32), nb);
        if (b < e) scan_rows(col, b, e);
        c = c2;
        b = b2;
        e = e2;
      }
    }
    finish(col);
  });
  if (scanned) {
    *scanned = 0;
    for (int64_t r : read) *scanned += r;
  }
}

// Asymmetric scoring over partitions (nprobe > 0 only: a score is not a metric, so no bound
// prunes): the nprobe partitions whose centres score best for the query's float projection,
// then the quantized asymmetric scan of their rows, visited in row order, top-M per query.
inline void asym_partition_knn(const AsymQuery* qs, int64_t nq, const Codes& codes,
                               const uint8_t* centres, int64_t C, const int64_t* offsets,
                               int nprobe, int M, int threads, int32_t* D, int64_t* I,
                               int64_t* scanned) {
  if (nq <= 0 || M <= 0) return;
  const KernelTable& kt = kernels();
  const int nb = codes.nbytes, max_d = asym_max_distance(codes.n_bits());
  const int64_t limit = std::min<int64_t>(std::max(nprobe, 1), C);
  const int mm = static_cast<int>(std::min<int64_t>(M, std::max<int64_t>(codes.n, 1)));
  std::vector<int64_t> read(nq, 0);
  const int64_t per_query = 4 * (C + codes.n / std::max<int64_t>(C, 1) * limit);
  auto run = [&](auto* tag) {
    using Col = std::remove_pointer_t<decltype(tag)>;
    ThreadPool::get().parallel_for(nq, threads_for(threads, nq * per_query), [&](int64_t q) {
      std::vector<Neighbor> near;
      if (limit <= kHeapMaxK) {
        HeapTopK h;
        h.reset(static_cast<int>(limit), max_d);
        kt.asym_knn_heap(qs + q, 1, centres, 0, C, nb, &h);
        near = h.take();
      } else {
        CountingTopK h;
        h.reset(static_cast<int>(limit), max_d);
        kt.asym_knn_count(qs + q, 1, centres, 0, C, nb, &h);
        near = h.take();
      }
      std::sort(near.begin(), near.end(), [](const Neighbor& a, const Neighbor& b) { return a.id < b.id; });
      Col col;
      col.reset(mm, max_d);
      int64_t rows = 0;
      for (const Neighbor& p : near) {
        const int64_t b = offsets[p.id], e = offsets[p.id + 1];
        if (b >= e) continue;
        if constexpr (std::is_same_v<Col, HeapTopK>)
          kt.asym_knn_heap(qs + q, 1, codes.data, b, e, nb, &col);
        else
          kt.asym_knn_count(qs + q, 1, codes.data, b, e, nb, &col);
        rows += e - b;
      }
      read[q] = rows;
      write_padded(col.take(), M, max_d + 1, D + q * M, I + q * M);
    });
  };
  if (mm <= kHeapMaxK)
    run(static_cast<HeapTopK*>(nullptr));
  else
    run(static_cast<CountingTopK*>(nullptr));
  if (scanned) {
    *scanned = 0;
    for (int64_t r : read) *scanned += r;
  }
}

}  // namespace hashpivot
