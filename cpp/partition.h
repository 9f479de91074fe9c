// Partitioned layout: rows stored contiguously per partition (the nearest of C centre codes),
// each partition with its covering radius r_p = max d(x, c_p). A query visits partitions by
// increasing d(q, c_p): `nprobe` of them (approximate), or, exact, until the lower bound
// d(q, c_p) - r_p of every remaining one exceeds the k-th distance found (triangle inequality),
// which gives exactly the flat scan's result, ties by smaller row included (TieHeap).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "dispatch.h"
#include "search.h"
#include "thread_pool.h"
#include "topk.h"

namespace hashpivot {

struct Partitions {
  const uint8_t* centres;  // (C, nbytes)
  int64_t C;
  const int64_t* offsets;  // C + 1 row starts
  const int32_t* radius;   // C covering radii
};

// nprobe > 0: the nprobe nearest partitions; nprobe == 0: exact. `scanned`: rows read in all.
inline void partition_knn(const uint8_t* queries, int64_t nq, const Codes& codes,
                          const Partitions& P, int k, int nprobe, int threads, int32_t* D,
                          int64_t* I, int64_t* scanned) {
  if (nq <= 0 || k <= 0) return;
  const KernelTable& kt = kernels();
  const int nb = codes.nbytes, n_bits = codes.n_bits();
  const int kk = static_cast<int>(std::min<int64_t>(k, std::max<int64_t>(codes.n, 1)));
  std::vector<int64_t> read(nq, 0);
  const int64_t per_query = nprobe > 0 ? std::min<int64_t>(codes.n, codes.n / std::max<int64_t>(P.C, 1) * nprobe)
                                       : codes.n / 2;
  ThreadPool::get().parallel_for(nq, threads_for(threads, nq * (per_query + P.C)), [&](int64_t q) {
    const uint8_t* qc = queries + q * nb;
    thread_local std::vector<int32_t> dc;  // reused: a query costs microseconds at small nprobe
    thread_local std::vector<int64_t> start, order;
    thread_local TieHeap col;
    const int64_t limit = nprobe > 0 ? std::min<int64_t>(nprobe, P.C) : P.C;
    if (nprobe > 0) {  // the nprobe nearest centres by the top-k scan (ties by partition)
      std::vector<Neighbor> near;
      if (limit <= kHeapMaxK) {
        HeapTopK h;
        h.reset(static_cast<int>(limit), n_bits);
        knn_rows(kt, qc, 1, P.centres, 0, P.C, nb, &h);
        near = h.take();
      } else {
        CountingTopK h;
        h.reset(static_cast<int>(limit), n_bits);
        knn_rows(kt, qc, 1, P.centres, 0, P.C, nb, &h);
        near = h.take();
      }
      order.resize(near.size());
      dc.resize(P.C);
      for (size_t j = 0; j < near.size(); ++j) {
        order[j] = near[j].id;
        dc[near[j].id] = near[j].d;
      }
    } else {  // every partition by increasing distance: a counting sort over 0..n_bits
      dc.resize(P.C);
      if (P.C) kt.distance_row(qc, P.centres, 0, P.C, nb, dc.data());
      start.assign(n_bits + 2, 0);
      for (int64_t c = 0; c < P.C; ++c) ++start[dc[c] + 1];
      for (int d = 0; d <= n_bits; ++d) start[d + 1] += start[d];
      order.resize(P.C);
      for (int64_t c = 0; c < P.C; ++c) order[start[dc[c]]++] = c;
    }
    col.reset(kk, n_bits);
    int64_t rows = 0;
    for (size_t j = 0; j < order.size(); ++j) {
      const int64_t c = order[j];
      if (nprobe == 0 && col.full() && dc[c] - P.radius[c] > col.kth()) continue;
      const int64_t b = P.offsets[c], e = P.offsets[c + 1];
      if (b >= e) continue;
      kt.knn_tie(qc, codes.data, b, e, nb, &col);
      rows += e - b;
    }
    read[q] = rows;
    write_padded(col.take(), k, n_bits + 1, D + q * k, I + q * k);
  });
  if (scanned) {
    *scanned = 0;
    for (int64_t r : read) *scanned += r;
  }
}

}  // namespace hashpivot
