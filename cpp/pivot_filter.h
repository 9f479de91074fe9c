// Pivot band filter: keep rows whose distance to every pivot lies within t of the query's,
// |d(q, p_i) - d(x, p_i)| <= t for all i (by the triangle inequality this never drops a row
// within distance t of the query). Tables are (n, P) row-major, uint8 (n_bits < 256) or uint16.
// Included once per instruction set by kernels.cpp, like hamming.h.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "codes.h"
#include "topk.h"

namespace hashpivot {
namespace HP_ISA {

template <class T>
HP_INLINE bool band_pass(const T* row, const int32_t* lo, const int32_t* hi, int P) {
  bool ok = true;
  for (int p = 0; p < P; ++p) ok &= (row[p] >= lo[p]) & (row[p] <= hi[p]);
  return ok;
}

// One row of 8 uint8 pivot distances with SSE2 (baseline x86-64): the index's late check.
struct Band8Row {
  __m128i lo, hi;
  HP_INLINE Band8Row(const int32_t* l, const int32_t* h) {
    alignas(16) uint8_t bl[16] = {0}, bh[16] = {0};
    for (int j = 0; j < 8; ++j) {
      bl[j] = static_cast<uint8_t>(std::clamp(l[j], 0, 255));
      bh[j] = static_cast<uint8_t>(std::clamp(h[j], 0, 255));
    }
    lo = _mm_load_si128((const __m128i*)bl);
    hi = _mm_load_si128((const __m128i*)bh);
  }
  HP_INLINE bool pass(const uint8_t* row) const {
    const __m128i x = _mm_loadl_epi64((const __m128i*)row);
    const __m128i in = _mm_cmpeq_epi8(_mm_min_epu8(_mm_max_epu8(x, lo), hi), x);
    return (_mm_movemask_epi8(in) & 0xFF) == 0xFF;
  }
};

#if HP_ISA_LEVEL >= 2
// 4 rows of 8 uint8 pivot distances per instruction: a bit per row inside the band.
struct Band8x4 {
  __m256i lo, hi;
  HP_INLINE Band8x4(const int32_t* l, const int32_t* h) {
    alignas(32) uint8_t bl[32], bh[32];
    for (int j = 0; j < 32; ++j) {
      bl[j] = static_cast<uint8_t>(std::clamp(l[j % 8], 0, 255));
      bh[j] = static_cast<uint8_t>(std::clamp(h[j % 8], 0, 255));
    }
    lo = _mm256_load_si256((const __m256i*)bl);
    hi = _mm256_load_si256((const __m256i*)bh);
  }
  HP_INLINE unsigned pass(const uint8_t* rows) const {
    const __m256i x = _mm256_loadu_si256((const __m256i*)rows);
    const __m256i in = _mm256_cmpeq_epi8(_mm256_min_epu8(_mm256_max_epu8(x, lo), hi), x);
    const __m256i all = _mm256_cmpeq_epi64(in, _mm256_set1_epi64x(-1));
    return static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(all)));
  }
};
#endif

// Calls on_pass(row) for each row in [begin, end) inside the band, in row order.
template <class T, class F>
HP_INLINE void band_rows(const T* table, int P, int64_t begin, int64_t end, const int32_t* lo,
                         const int32_t* hi, F&& on_pass) {
  int64_t i = begin;
#if HP_ISA_LEVEL >= 2
  if constexpr (sizeof(T) == 1) {
    if (P == 8) {
      const Band8x4 band(lo, hi);
      for (; i + 4 <= end; i += 4) {
        unsigned m = band.pass(reinterpret_cast<const uint8_t*>(table) + i * 8);
        while (m) {
          on_pass(i + __builtin_ctz(m));
          m &= m - 1;
        }
      }
    }
  }
#endif
  for (; i < end; ++i)
    if (band_pass(table + i * P, lo, hi, P)) on_pass(i);
}

// Writes the passing rows of [begin, end) to out; returns how many.
template <class T>
HP_INLINE int64_t band_filter(const T* table, int P, int64_t begin, int64_t end, const int32_t* lo,
                           const int32_t* hi, int64_t* out) {
  int64_t m = 0;
  band_rows(table, P, begin, end, lo, hi, [&](int64_t r) { out[m++] = r; });
  return m;
}

// Band filter fused with the Hamming ranking: a code is read only for a row that passes.
template <int W, class T, class C>
HP_INLINE void band_scan(const uint8_t* q, const uint8_t* codes, int nbytes, const T* table, int P,
                         int64_t begin, int64_t end, const int32_t* lo, const int32_t* hi, C& col) {
  const int64_t nb = W > 0 ? 8 * W : nbytes;
  const QueryWords<W> qw(q, nbytes / 8);
  int32_t thr = col.threshold();
  band_rows(table, P, begin, end, lo, hi, [&](int64_t r) {
    const int d = hamming<HP_POP, W>(qw, codes + r * nb);
    if (d < thr) {
      col.push(d, r);
      thr = col.threshold();
    }
  });
}

template <class T, class C>
HP_INLINE void band_knn(const uint8_t* q, const uint8_t* codes, int nbytes, const T* table, int P,
                        int64_t begin, int64_t end, const int32_t* lo, const int32_t* hi, C* col) {
  HP_DISPATCH_WIDTH(nbytes, band_scan<W>(q, codes, nbytes, table, P, begin, end, lo, hi, *col));
}

// Hamming first, band second: the SIMD scan runs over every row of the ranges and the band is
// checked only for rows that beat the top-k threshold. The index uses this inside the windows its
// sorted layout already cut, where a per-row band check would cost as much as the distance.
template <class T, class C>
HP_INLINE void band_late(const uint8_t* q, const uint8_t* codes, int nbytes, const T* table, int P,
                         const RowRange* ranges, int64_t n, const int32_t* lo, const int32_t* hi,
                         C* col) {
  auto each = [&](auto in_band) {
    HP_DISPATCH_WIDTH(nbytes, {
      const HammingMetric<W> m(q, nbytes);
      for (int64_t r = 0; r < n; ++r)
        scan_with(m, codes, ranges[r].begin, ranges[r].end, W > 0 ? 8 * W : nbytes, *col,
                  in_band);
    });
  };
  if constexpr (sizeof(T) == 1) {
    bool empty = false;  // a band with lo > hi on some pivot passes nothing
    for (int p = 0; p < P; ++p) empty |= lo[p] > hi[p] || hi[p] < 0 || lo[p] > 255;
    if (P == 8 && !empty) {
      const Band8Row band(lo, hi);
      each([&](int64_t r) { return band.pass(reinterpret_cast<const uint8_t*>(table) + r * 8); });
      return;
    }
  }
  each([=](int64_t r) { return band_pass(table + r * P, lo, hi, P); });
}

// Concrete entry points (defined inside this ISA's target region, so they carry its flags).
#define HP_BAND_ENTRY(T, C, NAME)                                                              \
  inline void NAME(const uint8_t* q, const uint8_t* codes, int nbytes, const T* table, int P,  \
                   int64_t begin, int64_t end, const int32_t* lo, const int32_t* hi, C* col) { \
    band_knn(q, codes, nbytes, table, P, begin, end, lo, hi, col);                             \
  }
HP_BAND_ENTRY(uint8_t, HeapTopK, band_knn_heap_u8)
HP_BAND_ENTRY(uint8_t, CountingTopK, band_knn_count_u8)
HP_BAND_ENTRY(uint16_t, HeapTopK, band_knn_heap_u16)
HP_BAND_ENTRY(uint16_t, CountingTopK, band_knn_count_u16)
#undef HP_BAND_ENTRY
#define HP_LATE_ENTRY(T, C, NAME)                                                              \
  inline void NAME(const uint8_t* q, const uint8_t* codes, int nbytes, const T* table, int P,  \
                   const RowRange* ranges, int64_t n, const int32_t* lo, const int32_t* hi,    \
                   C* col) {                                                                   \
    band_late(q, codes, nbytes, table, P, ranges, n, lo, hi, col);                             \
  }
HP_LATE_ENTRY(uint8_t, HeapTopK, band_late_heap_u8)
HP_LATE_ENTRY(uint8_t, CountingTopK, band_late_count_u8)
HP_LATE_ENTRY(uint16_t, HeapTopK, band_late_heap_u16)
HP_LATE_ENTRY(uint16_t, CountingTopK, band_late_count_u16)
HP_LATE_ENTRY(uint8_t, TieHeap, band_late_tie_u8)
HP_LATE_ENTRY(uint16_t, TieHeap, band_late_tie_u16)
#undef HP_LATE_ENTRY
inline int64_t band_filter_u8(const uint8_t* table, int P, int64_t begin, int64_t end,
                              const int32_t* lo, const int32_t* hi, int64_t* out) {
  return band_filter(table, P, begin, end, lo, hi, out);
}
inline int64_t band_filter_u16(const uint16_t* table, int P, int64_t begin, int64_t end,
                               const int32_t* lo, const int32_t* hi, int64_t* out) {
  return band_filter(table, P, begin, end, lo, hi, out);
}

}  // namespace HP_ISA
}  // namespace hashpivot
