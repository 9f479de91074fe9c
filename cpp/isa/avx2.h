// AVX2 arithmetic (with POPCNT, BMI2 and F16C): 8 codes at a time by Mula's nibble-lookup
// popcount (AVX2 has no vector popcount), SIMD threshold masks, the pivot band 4 rows at a time.
// Included only inside a `#pragma GCC target("avx2,...")` region (isa/avx2.cpp, isa/avx512.cpp),
// and in an anonymous namespace, so no AVX2 code can be linked into another ISA's path.
#pragma once
#include <immintrin.h>

#include "../asymmetric.h"
#include "../centres.h"
#include "../codes.h"
#include "../cpu.h"

namespace hashpivot {
namespace {

// Vector members are alignas(32/64): their types were declared at the baseline ISA, where GCC
// aligns them to 16 bytes, yet AVX code loads them with aligned moves (a crash in a vector).

struct Avx2 {
  static constexpr Isa kIsa = Isa::kAvx2;
  using Pop = PopcountHw;
  using V = __m256i;                     // 8 x int32 keys of 8 consecutive codes
  static constexpr int kFloatLanes = 8;  // floats a register holds
  // queries projected together x vectors of columns a pass: 4 x 2 sums in 16 ymm registers, so
  // that each column load serves 4 queries (2 x 4 was bound by reading the matrix from L2)
  static constexpr int kProjectRows = 4;
  static constexpr int kProjectVecs = 2;
  static constexpr bool kMaskedPlanes = false;  // the re-estimate reads byte tables (stages.h)

  static HP_INLINE uint32_t lt_mask(V d, int32_t thr) {
    return static_cast<uint32_t>(
        _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(thr), d))));
  }
  static HP_INLINE void store(V d, int32_t* out) { _mm256_storeu_si256((__m256i*)out, d); }
  // float keys (c0 - b_j) + f_j * (c1 + c2 * d_j) (the scalar path computes the same, in that
  // order)
  static HP_INLINE __m256 affine(V d, const float* f, const float* b, float c0, float c1,
                                 float c2) {
    const __m256 inner =
        _mm256_add_ps(_mm256_set1_ps(c1), _mm256_mul_ps(_mm256_set1_ps(c2), _mm256_cvtepi32_ps(d)));
    const __m256 base = _mm256_sub_ps(_mm256_set1_ps(c0), _mm256_loadu_ps(b));
    return _mm256_add_ps(base, _mm256_mul_ps(_mm256_loadu_ps(f), inner));
  }
  static HP_INLINE uint32_t lt_mask_ps(__m256 k, float thr) {
    return static_cast<uint32_t>(
        _mm256_movemask_ps(_mm256_cmp_ps(k, _mm256_set1_ps(thr), _CMP_LT_OQ)));
  }
  static HP_INLINE void store_ps(__m256 k, float* out) { _mm256_storeu_ps(out, k); }

  // Popcount of each 64-bit lane.
  static HP_INLINE __m256i popcount_epi64(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(v, low);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    const __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
    return _mm256_sad_epu8(cnt, _mm256_setzero_si256());
  }
  static HP_INLINE int64_t hsum_epi64(__m256i v) {
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
  }
  // 32 bytes of a code (or the last 16, zero-extended) starting at byte o.
  template <int W>
  static HP_INLINE __m256i chunk(const uint8_t* c, int o) {
    if (o + 32 <= 8 * W) return _mm256_loadu_si256((const __m256i*)(c + o));
    return _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i*)(c + o)));
  }

  // ---- Hamming distances of 8 consecutive codes of W words ----
  template <int W>
  struct Hamming8 {  // W = 4, 6, ...: a code's 32-byte chunks, summed
    static constexpr bool kEnabled = W >= 4 && W % 2 == 0;
    alignas(32) __m256i q[W >= 4 ? (W + 3) / 4 : 1];
    HP_INLINE explicit Hamming8(const uint8_t* qc) {
      if constexpr (kEnabled)
        for (int o = 0, i = 0; o < 8 * W; o += 32, ++i) q[i] = chunk<W>(qc, o);
    }
    HP_INLINE V dist(const uint8_t* c) const {
      alignas(32) int32_t d[8];
      for (int r = 0; r < 8; ++r) {
        const uint8_t* code = c + r * 8 * W;
        __m256i acc = _mm256_setzero_si256();
        for (int o = 0, i = 0; o < 8 * W; o += 32, ++i)
          acc = _mm256_add_epi64(acc, popcount_epi64(_mm256_xor_si256(chunk<W>(code, o), q[i])));
        d[r] = static_cast<int32_t>(hsum_epi64(acc));
      }
      return _mm256_load_si256((const __m256i*)d);
    }
  };

  // ---- quantized asymmetric distances of 8 consecutive codes (asymmetric.h) ----
  // Nibble lookups with the plane weights 2^p folded into the tables: a 32-byte chunk gives
  // 8 popcount(b) - sum_p 2^p popcount(b & V_p) per 64-bit lane.
  struct AsymLuts {
    alignas(32) __m256i lut[kAsymPlanes];
    alignas(32) __m256i lut8;
    alignas(32) __m256i low;
    HP_INLINE AsymLuts() {
      low = _mm256_set1_epi8(0x0f);
      alignas(32) int8_t t[kAsymPlanes + 1][32];
      for (int i = 0; i < 32; ++i) {
        const int pc = __builtin_popcount(static_cast<unsigned>(i & 15));
        for (int p = 0; p < kAsymPlanes; ++p) t[p][i] = static_cast<int8_t>(pc << p);
        t[kAsymPlanes][i] = static_cast<int8_t>(pc << 3);
      }
      for (int p = 0; p < kAsymPlanes; ++p) lut[p] = _mm256_load_si256((const __m256i*)t[p]);
      lut8 = _mm256_load_si256((const __m256i*)t[kAsymPlanes]);
    }
    // vlo/vhi: the query planes' low and high nibbles for this chunk
    HP_INLINE __m256i lanes(__m256i b, const __m256i* vlo, const __m256i* vhi) const {
      const __m256i zero = _mm256_setzero_si256();
      const __m256i lo = _mm256_and_si256(b, low),
                    hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
      const __m256i pos =
          _mm256_add_epi8(_mm256_shuffle_epi8(lut8, lo), _mm256_shuffle_epi8(lut8, hi));
      __m256i neg = zero;  // at most 8 + 16 + 32 + 64 = 120 a byte: no overflow
      for (int p = 0; p < kAsymPlanes; ++p)
        neg = _mm256_add_epi8(
            neg, _mm256_add_epi8(_mm256_shuffle_epi8(lut[p], _mm256_and_si256(lo, vlo[p])),
                                 _mm256_shuffle_epi8(lut[p], _mm256_and_si256(hi, vhi[p]))));
      return _mm256_sub_epi64(_mm256_sad_epu8(pos, zero), _mm256_sad_epu8(neg, zero));
    }
  };

  template <int W>
  struct Asym8 {  // W = 2 (two codes a chunk), or W = 4, 6, ... (a code's chunks summed)
    static constexpr bool kEnabled = W >= 2 && W % 2 == 0;
    static constexpr int kChunks = W >= 4 ? (W + 3) / 4 : 1;
    AsymLuts luts;
    alignas(32) __m256i vlo[kChunks][kAsymPlanes];
    alignas(32) __m256i vhi[kChunks][kAsymPlanes];
    alignas(32) __m256i biasv;
    HP_INLINE explicit Asym8(const AsymQuery& a) {
      const __m256i low = _mm256_set1_epi8(0x0f);
      biasv = _mm256_set1_epi32(asym_bias(a.n_bits));
      for (int p = 0; p < kAsymPlanes && kEnabled; ++p) {
        for (int i = 0; i < kChunks; ++i) {
          __m256i v;
          if constexpr (W == 2) {
            v = _mm256_setr_epi64x((long long)a.planes[p][0], (long long)a.planes[p][1],
                                   (long long)a.planes[p][0], (long long)a.planes[p][1]);
          } else {
            alignas(32) uint64_t w[4] = {0, 0, 0, 0};
            for (int j = 0; j < 4 && 4 * i + j < W; ++j) w[j] = a.planes[p][4 * i + j];
            v = _mm256_load_si256((const __m256i*)w);
          }
          vlo[i][p] = _mm256_and_si256(v, low);
          vhi[i][p] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        }
      }
    }
    // Two 128-bit codes: (s, s, s', s') as 64-bit lanes.
    HP_INLINE __m256i pair(const uint8_t* c) const {
      const __m256i s = luts.lanes(_mm256_loadu_si256((const __m256i*)c), vlo[0], vhi[0]);
      return _mm256_add_epi64(s, _mm256_shuffle_epi32(s, 0x4E));
    }
    HP_INLINE V dist(const uint8_t* c) const {
      if constexpr (W == 2) {
        const __m256i w0 = _mm256_blend_epi32(pair(c), pair(c + 32), 0xCC);       // d0 d2 d1 d3
        const __m256i w1 = _mm256_blend_epi32(pair(c + 64), pair(c + 96), 0xCC);  // d4 d6 d5 d7
        // low 32 bits of each (possibly negative) 64-bit sum: blend, not OR
        const __m256i m = _mm256_blend_epi32(w0, _mm256_slli_epi64(w1, 32), 0xAA);
        return _mm256_add_epi32(
            _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7)), biasv);
      } else {
        alignas(32) int32_t d[8];
        for (int r = 0; r < 8; ++r) {
          const uint8_t* code = c + r * 8 * W;
          __m256i acc = _mm256_setzero_si256();
          for (int o = 0, i = 0; o < 8 * W; o += 32, ++i)
            acc = _mm256_add_epi64(acc, luts.lanes(chunk<W>(code, o), vlo[i], vhi[i]));
          d[r] = static_cast<int32_t>(hsum_epi64(acc));
        }
        return _mm256_add_epi32(_mm256_load_si256((const __m256i*)d), biasv);
      }
    }
  };

  // ---- fast scan: the quantized distances of a block of 16 codes (asymmetric.h) ----
  // A register holds byte positions m and m + 1 of the 16 codes (one per 128-bit lane, as
  // pshufb looks up within a lane); two registers' lookups (4 nibbles, <= 240) add up in bytes,
  // then widen to 16 bits (at most 60 a nibble, 256 nibbles: no overflow).
  static constexpr bool kFastScan = true;
  static HP_INLINE void block16(const NibbleLuts& t, const uint8_t* blk, V* d0, V* d1) {
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    __m256i acc_a = zero, acc_b = zero;  // 16-bit sums of codes 0..7 (a) and 8..15 (b), per lane
    for (int m = 0; m < t.nbytes; m += 4) {
      const __m256i x = _mm256_loadu_si256((const __m256i*)(blk + m * kScanBlock));
      const __m256i y = _mm256_loadu_si256((const __m256i*)(blk + (m + 2) * kScanBlock));
      const __m256i sx =
          _mm256_add_epi8(_mm256_shuffle_epi8(_mm256_load_si256((const __m256i*)t.hi[m]),
                                              _mm256_and_si256(_mm256_srli_epi16(x, 4), low)),
                          _mm256_shuffle_epi8(_mm256_load_si256((const __m256i*)t.lo[m]),
                                              _mm256_and_si256(x, low)));
      const __m256i sy =
          _mm256_add_epi8(_mm256_shuffle_epi8(_mm256_load_si256((const __m256i*)t.hi[m + 2]),
                                              _mm256_and_si256(_mm256_srli_epi16(y, 4), low)),
                          _mm256_shuffle_epi8(_mm256_load_si256((const __m256i*)t.lo[m + 2]),
                                              _mm256_and_si256(y, low)));
      const __m256i s = _mm256_add_epi8(sx, sy);
      acc_a = _mm256_add_epi16(acc_a, _mm256_unpacklo_epi8(s, zero));
      acc_b = _mm256_add_epi16(acc_b, _mm256_unpackhi_epi8(s, zero));
    }
    const __m256i off = _mm256_set1_epi32(t.offset);
    const __m128i a =
        _mm_add_epi16(_mm256_castsi256_si128(acc_a), _mm256_extracti128_si256(acc_a, 1));
    const __m128i b =
        _mm_add_epi16(_mm256_castsi256_si128(acc_b), _mm256_extracti128_si256(acc_b, 1));
    *d0 = _mm256_add_epi32(_mm256_cvtepu16_epi32(a), off);
    *d1 = _mm256_add_epi32(_mm256_cvtepu16_epi32(b), off);
  }

  // 8 float16 values to float32.
  static HP_INLINE void half8(const uint16_t* h, float* out) {
    _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)h)));
  }

  // Centre scores (centres.h) for M queries x B blocks. A group's 64 bytes widen to 16-bit in
  // four quarters (4 centres x 4 levels each); pmaddwd with the query's 4 levels (repeated)
  // leaves two int32 a centre (levels 0-1, 2-3), added once at the end. The sums are exact.
  static constexpr int kCentreQueries = 2, kCentreBlocksAlone = 2;  // 8 accumulators either way
  template <int M, int B>
  static HP_INLINE void centre_tile(const uint8_t* blk, int64_t block_bytes, int groups,
                                    const int8_t* const* q, int32_t* out) {
    __m256i acc[M][B][4];
    for (int m = 0; m < M; ++m)
      for (int b = 0; b < B; ++b)
        for (int p = 0; p < 4; ++p) acc[m][b][p] = _mm256_setzero_si256();
    for (int g = 0; g < groups; ++g) {
      __m256i qv[M];
      for (int m = 0; m < M; ++m) {  // the 4 levels, widened to int16, in every quarter
        int32_t l;
        std::memcpy(&l, q[m] + g * kCentreGroup, sizeof(l));
        qv[m] = _mm256_cvtepi8_epi16(_mm_set1_epi32(l));
      }
      for (int b = 0; b < B; ++b) {
        const uint8_t* row = blk + b * block_bytes + g * kCentreBlock * kCentreGroup;
        for (int p = 0; p < 4; ++p) {
          const __m256i c = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(row + 16 * p)));
          for (int m = 0; m < M; ++m)
            acc[m][b][p] = _mm256_add_epi32(acc[m][b][p], _mm256_madd_epi16(c, qv[m]));
        }
      }
    }
    for (int m = 0; m < M; ++m)
      for (int b = 0; b < B; ++b) {
        alignas(32) int32_t pairs[4][8];
        for (int p = 0; p < 4; ++p) _mm256_store_si256((__m256i*)pairs[p], acc[m][b][p]);
        int32_t* o = out + (m * B + b) * kCentreBlock;
        for (int c = 0; c < kCentreBlock; ++c)
          o[c] = pairs[c / 4][2 * (c % 4)] + pairs[c / 4][2 * (c % 4) + 1];
      }
  }

  // 4 rows of 8 uint8 pivot distances per instruction: a bit per row inside the band.
  struct Band8x4 {
    alignas(32) __m256i lo;
    alignas(32) __m256i hi;
    HP_INLINE Band8x4(const int32_t* l, const int32_t* h) {
      alignas(32) uint8_t bl[32], bh[32];
      for (int j = 0; j < 32; ++j) {
        bl[j] = static_cast<uint8_t>(l[j % 8] < 0 ? 0 : l[j % 8] > 255 ? 255 : l[j % 8]);
        bh[j] = static_cast<uint8_t>(h[j % 8] < 0 ? 0 : h[j % 8] > 255 ? 255 : h[j % 8]);
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
  static constexpr bool kBand8x4 = true;
};

// W = 1 and 2 (64- and 128-bit codes): whole registers of codes, no per-code reduction.
template <>
struct Avx2::Hamming8<1> {
  static constexpr bool kEnabled = true;
  alignas(32) __m256i qv;
  HP_INLINE explicit Hamming8(const uint8_t* q) : qv(_mm256_set1_epi64x(load_u64(q))) {}
  HP_INLINE V dist(const uint8_t* c) const {
    const __m256i a = popcount_epi64(_mm256_xor_si256(_mm256_loadu_si256((const __m256i*)c), qv));
    const __m256i b =
        popcount_epi64(_mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(c + 32)), qv));
    const __m256i m = _mm256_or_si256(a, _mm256_slli_epi64(b, 32));  // d0 d4 d1 d5 d2 d6 d3 d7
    return _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
  }
};

template <>
struct Avx2::Hamming8<2> {
  static constexpr bool kEnabled = true;
  alignas(32) __m256i qv;
  HP_INLINE explicit Hamming8(const uint8_t* q)
      : qv(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)q))) {}
  HP_INLINE __m256i pair(__m256i c) const {  // (d, d, d', d') as u64 for 2 codes
    const __m256i p = popcount_epi64(_mm256_xor_si256(c, qv));
    return _mm256_add_epi64(p, _mm256_shuffle_epi32(p, 0x4E));
  }
  HP_INLINE V dist(const uint8_t* c) const {
    auto load = [c](int o) { return _mm256_loadu_si256((const __m256i*)(c + o)); };
    const __m256i w0 = _mm256_blend_epi32(pair(load(0)), pair(load(32)), 0xCC);   // d0 d2 d1 d3
    const __m256i w1 = _mm256_blend_epi32(pair(load(64)), pair(load(96)), 0xCC);  // d4 d6 d5 d7
    const __m256i m = _mm256_or_si256(w0, _mm256_slli_epi64(w1, 32));  // d0 d4 d2 d6 d1 d5 d3 d7
    return _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7));
  }
};

}  // namespace
}  // namespace hashpivot
