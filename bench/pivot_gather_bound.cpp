// How cheap can a per-row pivot band filter be against the dense AVX2 Hamming scan? (issue 3)
//
//   g++ -O2 -Icpp bench/pivot_gather_bound.cpp -o /tmp/pgb && /tmp/pgb
//   (make cpp-bench also builds it as build/tools/pivot_gather_bound)
//
// A best case for "codes are read only for survivors": the band on P pivots checked 32 rows per
// instruction on a column layout (all bands have width 2t, so one add and one max per pivot),
// survivors' row numbers compacted without branches (a 256-entry table per 8 rows), then the
// survivors' codes gathered two per register into the library's own AVX2 arithmetic (Group8 of
// cpp/hamming.h), which the dense scan uses too. Rows pass at random with the survival the real
// filter has (bench_pivot.py: 0.37 on 1M synthetic ITQ codes at t=13, 0.70 on the man pages at
// t=18). A block of 8,192 rows stays in
// L2 as in a batched scan. Goal of issue 3: filtered <= (1 - cut + 0.1) x dense.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

// The library's AVX2 Hamming arithmetic (cpp/hamming.h), compiled here under its own namespace
// the way kernels.cpp does; main() checks the CPU before calling it.
#pragma GCC push_options
#pragma GCC target("avx2,popcnt,bmi,bmi2")
#define HP_ISA isa_bound
#define HP_ISA_LEVEL 2
#define HP_POP PopcountHw
#include "hamming.h"
#undef HP_ISA
#undef HP_ISA_LEVEL
#undef HP_POP

namespace {

using Dist8 = hashpivot::isa_bound::Group8<2>;

__attribute__((noinline)) int64_t dense(const uint8_t* q, const uint8_t* codes, int64_t n,
                                        int thr) {
  const Dist8 g(q);
  const __m256i t = _mm256_set1_epi32(thr);
  int64_t hits = 0;
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i d = g.dist(codes + i * 16);
    hits += __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(t, d))));
  }
  return hits;
}

uint64_t kRowsOf[256];  // the set bits of a byte as up to 8 packed row offsets

__attribute__((noinline)) int64_t filtered(
    const uint8_t* q, const uint8_t* codes, const std::vector<std::vector<uint8_t>>& cols,
    const uint8_t* lo, int width, int64_t n, int thr, int64_t* survivors) {
  const Dist8 g(q);
  const __m256i tv = _mm256_set1_epi32(thr), w = _mm256_set1_epi8(static_cast<char>(width));
  __m256i shift[16];
  const int P = static_cast<int>(cols.size());
  for (int p = 0; p < P; ++p) shift[p] = _mm256_set1_epi8(static_cast<char>(-lo[p]));
  constexpr int kBlock = 2048;
  alignas(32) uint32_t idx[kBlock + 16];
  int64_t hits = 0, kept = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    uint32_t* out = idx;
    for (int64_t i = b; i < b + kBlock; i += 32) {
      // (x - lo) mod 256 > 2t  <=>  outside the band (distances <= 128, t < 128)
      __m256i acc = _mm256_add_epi8(_mm256_loadu_si256((const __m256i*)(cols[0].data() + i)), shift[0]);
      for (int p = 1; p < P; ++p)
        acc = _mm256_max_epu8(acc, _mm256_add_epi8(_mm256_loadu_si256((const __m256i*)(cols[p].data() + i)), shift[p]));
      const uint32_t pass = static_cast<uint32_t>(
          _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(acc, w), acc)));
      for (int k = 0; k < 4; ++k) {
        const uint32_t m = (pass >> (8 * k)) & 0xFF;
        const __m256i rows = _mm256_add_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)&kRowsOf[m])),
                                              _mm256_set1_epi32(static_cast<int>(i + 8 * k)));
        _mm256_storeu_si256((__m256i*)out, rows);
        out += __builtin_popcount(m);
      }
    }
    const int64_t cnt = out - idx;
    kept += cnt;
    for (int64_t j = cnt; j < cnt + 8; ++j) idx[j] = static_cast<uint32_t>(b);
    auto two = [&](const uint32_t* r) {
      return _mm256_loadu2_m128i((const __m128i*)(codes + size_t(r[1]) * 16), (const __m128i*)(codes + size_t(r[0]) * 16));
    };
    for (int64_t j = 0; j < cnt; j += 8) {
      const uint32_t* r = idx + j;
      const __m256i d = g.dist(two(r), two(r + 2), two(r + 4), two(r + 6));
      hits += __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(tv, d))));
    }
  }
  *survivors = kept;
  return hits;
}

}  // namespace
#pragma GCC pop_options

namespace {

template <class F>
double best_ns_per_row(F&& f, int64_t n, int reps) {
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s * 1e9 / (double(reps) * n));
  }
  return best;
}

}  // namespace

int main() {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("popcnt")) {
    std::printf("needs AVX2 and POPCNT\n");
    return 0;
  }
  for (int m = 0; m < 256; ++m) {
    uint8_t rows[8] = {0};
    int c = 0;
    for (int j = 0; j < 8; ++j)
      if (m >> j & 1) rows[c++] = static_cast<uint8_t>(j);
    std::memcpy(&kRowsOf[m], rows, 8);
  }
  const int64_t n = 8192;
  const int P = 6;  // pivots 3..8: the sorted layout's windows already hold pivots 1 and 2
  std::mt19937 rng(1);
  std::vector<uint8_t> codes(n * 16), q(16);
  for (auto& c : codes) c = static_cast<uint8_t>(rng());
  for (auto& c : q) c = static_cast<uint8_t>(rng());
  const uint8_t lo[16] = {50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50};
  std::printf("| survival | cut | dense ns/row | filtered ns/row | ratio | goal <= |\n|---|---|---|---|---|---|\n");
  for (double survival : {0.37, 0.50, 0.70}) {
    std::uniform_real_distribution<double> u(0, 1);
    const double per_pivot = std::pow(survival, 1.0 / P);
    std::vector<std::vector<uint8_t>> cols(P, std::vector<uint8_t>(n));
    for (auto& col : cols)
      for (auto& v : col) v = u(rng) < per_pivot ? 64 : 100;  // band [50, 80]
    volatile int64_t sink = 0;
    int64_t kept = 0;
    const int reps = 20000;
    const double d = best_ns_per_row([&] { sink = sink + dense(q.data(), codes.data(), n, 50); }, n, reps);
    const double f = best_ns_per_row(
        [&] { sink = sink + filtered(q.data(), codes.data(), cols, lo, 30, n, 50, &kept); }, n, reps);
    const double s = double(kept) / n;
    std::printf("| %.2f | %.2f | %.3f | %.3f | %.2f | %.2f |\n", s, 1 - s, d, f, f / d, s + 0.1);
  }
  return 0;
}
