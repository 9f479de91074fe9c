// Asymmetric scoring: the query stays a float projection z (n_bits values) and a code scores
// z . (2b - 1), its +-1 bits weighted by the query. Two forms:
// * for a full scan, z is quantized to 16 levels, v_j = round(z_j / step) + 8, and kept as four
//   bit planes shaped like a code, so a score is 5 popcounts (asymmetric_scan.h);
// * for re-scoring a candidate list, exact float tables: one 256-entry table per code byte.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "codes.h"
#include "thread_pool.h"

namespace hashpivot {

constexpr int kAsymLevels = 16;  // 4 bit planes

struct AsymQuery {
  uint64_t planes[4][kMaxWords];  // plane p, bit j = bit p of v_j, in the codes' bit order
  int words;
  int n_bits;
};

// Bit j of a code (np.packbits order) is bit 7 - j % 8 of byte j / 8; in the little-endian
// 64-bit word holding that byte it is bit 8 * (j / 8 % 8) + 7 - j % 8.
inline AsymQuery make_asym_query(const float* z, int n_bits) {
  AsymQuery a{};
  a.words = n_bits / 64;
  a.n_bits = n_bits;
  float zmax = 0;
  for (int j = 0; j < n_bits; ++j) zmax = std::max(zmax, std::fabs(z[j]));
  const float step = zmax > 0 ? zmax / 7.5f : 1.0f;
  for (int j = 0; j < n_bits; ++j) {
    const long v = std::clamp(std::lround(z[j] / step) + 8, 0L, 15L);
    const int word = j / 64, bit = 8 * (j / 8 % 8) + 7 - j % 8;
    for (int p = 0; p < 4; ++p)
      if ((v >> p) & 1) a.planes[p][word] |= uint64_t(1) << bit;
  }
  return a;
}

// Distances from the quantized score, smaller = better: 7 n - (sum_j v_j b_j - 8 popcount(b)),
// in [0, 15 n] (the constant sum of z does not change the order).
inline int asym_max_distance(int n_bits) { return 15 * n_bits; }

// Exact float scores of candidate rows: the k best (score descending, ties by smaller row).
inline void asym_rescore(const float* z, int64_t nq, int n_bits, const uint8_t* codes,
                         const int64_t* cand, int M, int k, int threads, float* S, int64_t* R) {
  const int nbytes = n_bits / 8;
  ThreadPool::get().parallel_for(nq, threads_for(threads, nq * M * 8), [&](int64_t q) {
    const float* zq = z + q * n_bits;
    std::vector<float> T(static_cast<size_t>(nbytes) * 256);
    for (int m = 0; m < nbytes; ++m) {
      float* t = T.data() + m * 256;
      float total = 0;
      for (int i = 0; i < 8; ++i) total += zq[8 * m + i];
      t[0] = -total;
      for (int v = 1; v < 256; ++v) t[v] = t[v & (v - 1)] + 2 * zq[8 * m + 7 - __builtin_ctz(v)];
    }
    std::vector<std::pair<float, int64_t>> sc;
    sc.reserve(M);
    constexpr int kAhead = 16;  // candidates are random rows: keep several misses in flight
    for (int j = 0; j < std::min(M, kAhead); ++j)
      if (cand[q * M + j] >= 0) __builtin_prefetch(codes + cand[q * M + j] * nbytes);
    for (int j = 0; j < M; ++j) {
      if (j + kAhead < M && cand[q * M + j + kAhead] >= 0)
        __builtin_prefetch(codes + cand[q * M + j + kAhead] * nbytes);
      const int64_t r = cand[q * M + j];
      if (r < 0) continue;
      const uint8_t* c = codes + r * nbytes;
      float s = 0;
      for (int m = 0; m < nbytes; ++m) s += T[m * 256 + c[m]];
      sc.push_back({-s, r});
    }
    const size_t keep = std::min<size_t>(k, sc.size());
    std::partial_sort(sc.begin(), sc.begin() + keep, sc.end());
    for (int j = 0; j < k; ++j) {
      const bool ok = j < static_cast<int>(keep);
      S[q * k + j] = ok ? -sc[j].first : -INFINITY;
      R[q * k + j] = ok ? sc[j].second : -1;
    }
  });
}

}  // namespace hashpivot
