// The quantized asymmetric score as a scan metric (see asymmetric.h): 5 popcounts a code word.
// Included once per instruction set by kernels.cpp, after hamming.h.
#include <immintrin.h>

#include "asymmetric.h"

namespace hashpivot {
namespace HP_ISA {

template <int W>
struct AsymMetric {
  static constexpr bool kGroup = (HP_ISA_LEVEL == 3) && (W == 1 || W == 2);
  const AsymQuery* a;
  int words, bias;
#if HP_ISA_LEVEL == 3
  __m512i v[4], even, odd, biasv;
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
  HP_INLINE __m256i group(const uint8_t*) const { return _mm256_setzero_si256(); }  // unused
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
