// The quantized asymmetric score as a scan metric (see asymmetric.h): 5 popcounts a code word.
// Included once per instruction set by kernels.cpp, after hamming.h.
#include <immintrin.h>

#include "asymmetric.h"

namespace hashpivot {
namespace HP_ISA {

template <int W>
struct AsymMetric {
  static constexpr bool kGroup =
      (HP_ISA_LEVEL == 3 && (W == 1 || W == 2)) || (HP_ISA_LEVEL == 2 && W == 2);
  const AsymQuery* a;
  int words, bias;
#if HP_ISA_LEVEL == 3
  __m512i v[4], even, odd, biasv;
#elif HP_ISA_LEVEL == 2
  // Nibble lookups (Mula) with the plane weights 2^p folded into the tables.
  __m256i vlo[4], vhi[4], lut[4], lut8, low, biasv;
#endif
  HP_INLINE AsymMetric(const AsymQuery* q) : a(q), words(W > 0 ? W : q->words), bias(7 * q->n_bits) {
#if HP_ISA_LEVEL == 3
    for (int p = 0; p < 4; ++p)
      v[p] = W == 1 ? _mm512_set1_epi64((long long)q->planes[p][0])
                    : _mm512_set4_epi64((long long)q->planes[p][1], (long long)q->planes[p][0],
                                        (long long)q->planes[p][1], (long long)q->planes[p][0]);
    even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    biasv = _mm512_set1_epi64(bias);
#elif HP_ISA_LEVEL == 2
    low = _mm256_set1_epi8(0x0f);
    alignas(32) int8_t t[5][32];
    for (int i = 0; i < 32; ++i) {
      const int pc = __builtin_popcount(static_cast<unsigned>(i & 15));
      for (int p = 0; p < 4; ++p) t[p][i] = static_cast<int8_t>(pc << p);
      t[4][i] = static_cast<int8_t>(pc << 3);
    }
    for (int p = 0; p < 4; ++p) {
      const long long w0 = (long long)q->planes[p][0], w1 = (long long)q->planes[p][W > 1 ? 1 : 0];
      const __m256i v = _mm256_setr_epi64x(w0, w1, w0, w1);
      vlo[p] = _mm256_and_si256(v, low);
      vhi[p] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
      lut[p] = _mm256_load_si256((const __m256i*)t[p]);
    }
    lut8 = _mm256_load_si256((const __m256i*)t[4]);
    biasv = _mm256_set1_epi32(bias);
#endif
  }
  HP_INLINE int one(const uint8_t* c) const {
    int s = bias;
    for (int w = 0; w < words; ++w) {
      const uint64_t b = load_u64(c + 8 * w);
      s += 8 * HP_POP::count(b) - HP_POP::count(b & a->planes[0][w]) -
           2 * HP_POP::count(b & a->planes[1][w]) - 4 * HP_POP::count(b & a->planes[2][w]) -
           8 * HP_POP::count(b & a->planes[3][w]);
    }
    return s;
  }
#if HP_ISA_LEVEL == 3
  // 8 u64 lanes: 8 popcount(b) - sum_p 2^p popcount(b & V_p), one lane per code word.
  HP_INLINE __m512i lanes(__m512i b) const {
    __m512i s = _mm512_slli_epi64(_mm512_popcnt_epi64(b), 3);
    for (int p = 0; p < 4; ++p)
      s = _mm512_sub_epi64(s, _mm512_slli_epi64(_mm512_popcnt_epi64(_mm512_and_si512(b, v[p])), p));
    return s;
  }
  HP_INLINE __m256i group(const uint8_t* c) const {
    if constexpr (W == 1) {
      return _mm512_cvtepi64_epi32(_mm512_add_epi64(lanes(_mm512_loadu_si512(c)), biasv));
    } else {
      const __m512i s0 = lanes(_mm512_loadu_si512(c)), s1 = lanes(_mm512_loadu_si512(c + 64));
      const __m512i s = _mm512_add_epi64(_mm512_permutex2var_epi64(s0, even, s1),
                                         _mm512_permutex2var_epi64(s0, odd, s1));
      return _mm512_cvtepi64_epi32(_mm512_add_epi64(s, biasv));
    }
  }
#elif HP_ISA_LEVEL == 2
  // Two 128-bit codes: (s, s, s', s') as 64-bit lanes, s = 8 pc(b) - sum_p 2^p pc(b & V_p).
  HP_INLINE __m256i pair(const uint8_t* c) const {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i b = _mm256_loadu_si256((const __m256i*)c);
    const __m256i lo = _mm256_and_si256(b, low), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
    const __m256i pos = _mm256_add_epi8(_mm256_shuffle_epi8(lut8, lo), _mm256_shuffle_epi8(lut8, hi));
    __m256i neg = zero;  // at most 8 + 16 + 32 + 64 = 120 a byte: no overflow
    for (int p = 0; p < 4; ++p)
      neg = _mm256_add_epi8(neg, _mm256_add_epi8(
                                     _mm256_shuffle_epi8(lut[p], _mm256_and_si256(lo, vlo[p])),
                                     _mm256_shuffle_epi8(lut[p], _mm256_and_si256(hi, vhi[p]))));
    const __m256i s = _mm256_sub_epi64(_mm256_sad_epu8(pos, zero), _mm256_sad_epu8(neg, zero));
    return _mm256_add_epi64(s, _mm256_shuffle_epi32(s, 0x4E));
  }
  HP_INLINE __m256i group(const uint8_t* c) const {
    const __m256i w0 = _mm256_blend_epi32(pair(c), pair(c + 32), 0xCC);       // d0 d2 d1 d3
    const __m256i w1 = _mm256_blend_epi32(pair(c + 64), pair(c + 96), 0xCC);  // d4 d6 d5 d7
    // low 32 bits of each (possibly negative) 64-bit sum: blend, not OR
    const __m256i m = _mm256_blend_epi32(w0, _mm256_slli_epi64(w1, 32), 0xAA);
    return _mm256_add_epi32(
        _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7)), biasv);
  }
#endif
};

template <class C>
HP_INLINE void asym_batch(const AsymQuery* qs, int64_t nq, const uint8_t* codes, int64_t begin,
                          int64_t end, int nbytes, C* cols) {
  constexpr int64_t kBlockBytes = 128 * 1024;
  const int64_t block = nq == 1 ? end - begin : std::max<int64_t>(64, kBlockBytes / nbytes);
  for (int64_t b = begin; b < end; b += block) {
    const int64_t e = std::min(end, b + block);
    for (int64_t q = 0; q < nq; ++q) {
      HP_DISPATCH_WIDTH(nbytes, {
        const AsymMetric<W> m(qs + q);
        scan_with(m, codes, b, e, nbytes, cols[q]);
      });
    }
  }
}

inline void asym_knn_heap(const AsymQuery* qs, int64_t nq, const uint8_t* codes, int64_t begin,
                          int64_t end, int nbytes, HeapTopK* cols) {
  asym_batch(qs, nq, codes, begin, end, nbytes, cols);
}
inline void asym_knn_count(const AsymQuery* qs, int64_t nq, const uint8_t* codes, int64_t begin,
                           int64_t end, int nbytes, CountingTopK* cols) {
  asym_batch(qs, nq, codes, begin, end, nbytes, cols);
}

}  // namespace HP_ISA
}  // namespace hashpivot
