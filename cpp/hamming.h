// Hamming kernels: one-to-many scans feeding a top-k or range collector, blocked many-to-many
// scans, and raw distance rows. This file is included once per instruction set by kernels.cpp,
// inside `#pragma GCC target` regions, with HP_ISA (namespace), HP_ISA_LEVEL (0 portable,
// 1 popcnt, 2 avx2, 3 avx512-vpopcntdq) and HP_POP (popcount policy) defined.
// No include guard on purpose: each inclusion is a different instruction set.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "codes.h"
#include "topk.h"

namespace hashpivot {
namespace HP_ISA {

// ---- 8 codes at a time: distances as 8 x int32 in row order (SIMD levels only) ----
template <int W>
struct Group8 {
  static constexpr bool kEnabled = false;
  HP_INLINE explicit Group8(const uint8_t*) {}
};

#if HP_ISA_LEVEL == 2
// Mula's nibble-lookup popcount of each 64-bit lane (AVX2 has no vector popcount).
HP_INLINE __m256i popcount_epi64(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                       2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  const __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
  return _mm256_sad_epu8(cnt, _mm256_setzero_si256());
}

template <>
struct Group8<1> {
  static constexpr bool kEnabled = true;
  __m256i qv;
  HP_INLINE explicit Group8(const uint8_t* q) : qv(_mm256_set1_epi64x(load_u64(q))) {}
  HP_INLINE __m256i dist(const uint8_t* c) const {
    const __m256i a = popcount_epi64(_mm256_xor_si256(_mm256_loadu_si256((const __m256i*)c), qv));
    const __m256i b =
        popcount_epi64(_mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(c + 32)), qv));
    const __m256i m = _mm256_or_si256(a, _mm256_slli_epi64(b, 32));  // d0 d4 d1 d5 d2 d6 d3 d7
    return _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
  }
};

template <>
struct Group8<2> {
  static constexpr bool kEnabled = true;
  __m256i qv;
  HP_INLINE explicit Group8(const uint8_t* q)
      : qv(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)q))) {}
  HP_INLINE __m256i pair(__m256i c) const {  // (d, d, d', d') as u64 for 2 codes
    const __m256i p = popcount_epi64(_mm256_xor_si256(c, qv));
    return _mm256_add_epi64(p, _mm256_shuffle_epi32(p, 0x4E));
  }
  // 8 distances from four registers of two codes each (codes 0-1, 2-3, 4-5, 6-7).
  HP_INLINE __m256i dist(__m256i c01, __m256i c23, __m256i c45, __m256i c67) const {
    const __m256i w0 = _mm256_blend_epi32(pair(c01), pair(c23), 0xCC);  // d0 d2 d1 d3
    const __m256i w1 = _mm256_blend_epi32(pair(c45), pair(c67), 0xCC);  // d4 d6 d5 d7
    const __m256i m = _mm256_or_si256(w0, _mm256_slli_epi64(w1, 32));  // d0 d4 d2 d6 d1 d5 d3 d7
    return _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7));
  }
  HP_INLINE __m256i dist(const uint8_t* c) const {
    auto load = [c](int o) { return _mm256_loadu_si256((const __m256i*)(c + o)); };
    return dist(load(0), load(32), load(64), load(96));
  }
};
#endif

#if HP_ISA_LEVEL == 3
template <>
struct Group8<1> {
  static constexpr bool kEnabled = true;
  __m512i qv;
  HP_INLINE explicit Group8(const uint8_t* q) : qv(_mm512_set1_epi64((long long)load_u64(q))) {}
  HP_INLINE __m256i dist(const uint8_t* c) const {
    const __m512i p = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c), qv));
    return _mm512_cvtepi64_epi32(p);
  }
};

template <>
struct Group8<2> {
  static constexpr bool kEnabled = true;
  __m512i qv, even, odd;
  HP_INLINE explicit Group8(const uint8_t* q)
      : qv(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)q))),
        even(_mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14)),
        odd(_mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15)) {}
  HP_INLINE __m256i dist(const uint8_t* c) const {
    const __m512i p0 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c), qv));
    const __m512i p1 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c + 64), qv));
    const __m512i s = _mm512_add_epi64(_mm512_permutex2var_epi64(p0, even, p1),
                                       _mm512_permutex2var_epi64(p0, odd, p1));
    return _mm512_cvtepi64_epi32(s);
  }
};
#endif

// Accepts every row (the plain scan).
struct AcceptAll {
  HP_INLINE bool operator()(int64_t) const { return true; }
};

// A metric gives an integer distance for one code (`one`) and, when kGroup, for 8 codes at once
// as 8 x int32 (`group`). The Hamming distance to a query held in registers:
template <int W>
struct HammingMetric {
  static constexpr bool kGroup = Group8<W>::kEnabled;
  QueryWords<W> qw;
  Group8<W> g;
  HP_INLINE HammingMetric(const uint8_t* q, int nbytes) : qw(q, nbytes / 8), g(q) {}
  HP_INLINE int one(const uint8_t* c) const { return hamming<HP_POP, W>(qw, c); }
#if HP_ISA_LEVEL >= 2
  HP_INLINE __m256i group(const uint8_t* c) const { return g.dist(c); }
#endif
};

// ---- one query over rows [begin, end): feed every row with d < col.threshold() ----
// Collectors: HeapTopK, CountingTopK, RangeCollector (all take rows in increasing order).
// `accept(row)` is asked only for rows that beat the threshold, so a filter there is nearly free.
template <class M, class C, class A = AcceptAll>
HP_INLINE void scan_with(const M& m, const uint8_t* codes, int64_t begin, int64_t end, int64_t nb,
                         C& col, const A& accept = A()) {
  int32_t thr = col.threshold();
  int64_t i = begin;
#if HP_ISA_LEVEL >= 2
  if constexpr (M::kGroup) {
    __m256i thrv = _mm256_set1_epi32(thr);
    for (; i + 8 <= end; i += 8) {
      const __m256i d = m.group(codes + i * nb);
      unsigned mask = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(thrv, d)));
      if (__builtin_expect(mask != 0, 0)) {
        alignas(32) int32_t tmp[8];
        _mm256_store_si256((__m256i*)tmp, d);
        do {
          const int j = __builtin_ctz(mask);
          mask &= mask - 1;
          if (tmp[j] < thr && accept(i + j)) {
            col.push(tmp[j], i + j);
            thr = col.threshold();
          }
        } while (mask);
        thrv = _mm256_set1_epi32(thr);
      }
    }
  }
#endif
  for (; i < end; ++i) {
    const int d = m.one(codes + i * nb);
    if (d < thr && accept(i)) {
      col.push(d, i);
      thr = col.threshold();
    }
  }
}

template <int W, class C, class A = AcceptAll>
HP_INLINE void scan(const uint8_t* q, const uint8_t* codes, int64_t begin, int64_t end,
                    int nbytes, C& col, const A& accept = A()) {
  const HammingMetric<W> m(q, nbytes);
  scan_with(m, codes, begin, end, W > 0 ? 8 * W : nbytes, col, accept);
}

// Many queries over rows [begin, end): a block of codes small enough for L2 is reused by every
// query before moving on, so a batch costs compute, not memory bandwidth.
template <int W, class C>
HP_INLINE void scan_batch(const uint8_t* queries, int64_t nq, const uint8_t* codes, int64_t begin,
                          int64_t end, int nbytes, C* cols) {
  if (nq == 1) {
    scan<W>(queries, codes, begin, end, nbytes, cols[0]);
    return;
  }
  constexpr int64_t kBlockBytes = 128 * 1024;
  const int64_t block = std::max<int64_t>(64, kBlockBytes / nbytes) & ~int64_t(7);
  for (int64_t b = begin; b < end; b += block) {
    const int64_t e = std::min(end, b + block);
    for (int64_t q = 0; q < nq; ++q) scan<W>(queries + q * nbytes, codes, b, e, nbytes, cols[q]);
  }
}

// Distances of one query to rows [begin, end), written to out[0 .. end - begin).
template <int W>
HP_INLINE void distances(const uint8_t* q, const uint8_t* codes, int64_t begin, int64_t end,
                         int nbytes, int32_t* out) {
  const int64_t nb = W > 0 ? 8 * W : nbytes;
  const QueryWords<W> qw(q, nbytes / 8);
  int64_t i = begin;
#if HP_ISA_LEVEL >= 2
  if constexpr (Group8<W>::kEnabled) {
    const Group8<W> g(q);
    for (; i + 8 <= end; i += 8)
      _mm256_storeu_si256((__m256i*)(out + (i - begin)), g.dist(codes + i * nb));
  }
#endif
  for (; i < end; ++i) out[i - begin] = hamming<HP_POP, W>(qw, codes + i * nb);
}

// ---- entry points with concrete types, one set per instruction set ----
#ifndef HP_DISPATCH_WIDTH
#define HP_DISPATCH_WIDTH(nbytes, CALL) \
  switch (nbytes) {                     \
    case 8: {                           \
      constexpr int W = 1;              \
      CALL;                             \
    } break;                            \
    case 16: {                          \
      constexpr int W = 2;              \
      CALL;                             \
    } break;                            \
    case 32: {                          \
      constexpr int W = 4;              \
      CALL;                             \
    } break;                            \
    default: {                          \
      constexpr int W = 0;              \
      CALL;                             \
    }                                   \
  }
#endif

inline void knn_heap(const uint8_t* queries, int64_t nq, const uint8_t* codes, int64_t begin,
                     int64_t end, int nbytes, HeapTopK* cols) {
  HP_DISPATCH_WIDTH(nbytes, scan_batch<W>(queries, nq, codes, begin, end, nbytes, cols));
}
inline void knn_count(const uint8_t* queries, int64_t nq, const uint8_t* codes, int64_t begin,
                      int64_t end, int nbytes, CountingTopK* cols) {
  HP_DISPATCH_WIDTH(nbytes, scan_batch<W>(queries, nq, codes, begin, end, nbytes, cols));
}
inline void knn_tie(const uint8_t* q, const uint8_t* codes, int64_t begin, int64_t end,
                    int nbytes, TieHeap* col) {
  HP_DISPATCH_WIDTH(nbytes, scan<W>(q, codes, begin, end, nbytes, *col));
}
inline void range(const uint8_t* q, const uint8_t* codes, int64_t begin, int64_t end, int nbytes,
                  RangeCollector* col) {
  HP_DISPATCH_WIDTH(nbytes, scan<W>(q, codes, begin, end, nbytes, *col));
}
inline void distance_row(const uint8_t* q, const uint8_t* codes, int64_t begin, int64_t end,
                         int nbytes, int32_t* out) {
  HP_DISPATCH_WIDTH(nbytes, distances<W>(q, codes, begin, end, nbytes, out));
}

}  // namespace HP_ISA
}  // namespace hashpivot
