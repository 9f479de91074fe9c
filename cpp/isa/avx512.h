// AVX-512 arithmetic (F, BW, VL, VPOPCNTDQ and VNNI): a vector popcount of 8 words per instruction.
// What AVX-512 does not change (the float keys, float16 loads, the pivot band) comes from Avx2.
// Included only inside the `#pragma GCC target("avx512f,...")` region of isa/avx512.cpp, in an
// anonymous namespace.
#pragma once
#include <immintrin.h>

#include "avx2.h"

namespace hashpivot {
namespace {

// Vector members are alignas(32/64): their types were declared at the baseline ISA, where GCC
// aligns them to 16 bytes, yet AVX code loads them with aligned moves (a crash in a vector).

struct Avx512 : Avx2 {
  static constexpr Isa kIsa = Isa::kAvx512;
  using V = __m256i;
  static constexpr int kFloatLanes = 16;
  static constexpr int kProjectRows = 4;  // 4 x 4 sums: 32 zmm registers
  static constexpr int kProjectVecs = 4;

  // The extra bits' re-estimate (stages.h): sum over a row's bit planes (nbytes each, lowest
  // first) of the set bits' entries of zw, the query's z in the order of each 16-bit word's bits
  // (lane i: bit i), one copy a plane, scaled by its weight: a masked add a word.
  static constexpr bool kMaskedPlanes = true;
  static HP_INLINE float masked_planes(const float* zw, const uint8_t* bits, int planes,
                                       int nbytes) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    const int words = nbytes / 2;  // a multiple of 4: codes are whole 64-bit words
    for (int p = 0; p < planes; ++p) {
      const float* z = zw + static_cast<int64_t>(p) * words * 16;
      const uint8_t* b = bits + static_cast<int64_t>(p) * nbytes;
      for (int w = 0; w < words; w += 2) {
        uint16_t m0, m1;
        std::memcpy(&m0, b + 2 * w, 2);
        std::memcpy(&m1, b + 2 * w + 2, 2);
        acc0 = _mm512_mask_add_ps(acc0, m0, acc0, _mm512_loadu_ps(z + 16 * w));
        acc1 = _mm512_mask_add_ps(acc1, m1, acc1, _mm512_loadu_ps(z + 16 * w + 16));
      }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  }

  // lt_mask is Avx2's movemask: with the compare-into-mask form, GCC 12 builds reported lanes
  // past the 8 rows of a group (AddressSanitizer caught the read).

  // A code of W <= 8 words in one register (the missing words zero).
  template <int W>
  static HP_INLINE __m512i load_code(const uint8_t* c) {
    return _mm512_maskz_loadu_epi64(static_cast<__mmask8>((1u << W) - 1), c);
  }

  template <int W>
  struct Hamming8 {  // W = 3..8: one register a code, reduced
    static constexpr bool kEnabled = W >= 3 && W <= 8;
    alignas(64) __m512i qv;
    HP_INLINE explicit Hamming8(const uint8_t* q) {
      if constexpr (kEnabled) qv = load_code<W>(q);
    }
    HP_INLINE V dist(const uint8_t* c) const {
      alignas(32) int32_t d[8];
      for (int r = 0; r < 8; ++r)
        d[r] = static_cast<int32_t>(_mm512_reduce_add_epi64(
            _mm512_popcnt_epi64(_mm512_xor_si512(load_code<W>(c + r * 8 * W), qv))));
      return _mm256_load_si256((const __m256i*)d);
    }
  };

  // 8 u64 lanes: 8 popcount(b) - sum_p 2^p popcount(b & V_p), one lane per code word.
  struct AsymPlanes {
    alignas(64) __m512i v[kAsymPlanes];
    HP_INLINE __m512i lanes(__m512i b) const {
      __m512i s = _mm512_slli_epi64(_mm512_popcnt_epi64(b), 3);
      for (int p = 0; p < kAsymPlanes; ++p)
        s = _mm512_sub_epi64(s,
                             _mm512_slli_epi64(_mm512_popcnt_epi64(_mm512_and_si512(b, v[p])), p));
      return s;
    }
  };

  template <int W>
  struct Asym8 {  // W = 3..8: one register a code, reduced
    static constexpr bool kEnabled = W >= 3 && W <= 8;
    AsymPlanes planes;
    int32_t bias;
    HP_INLINE explicit Asym8(const AsymQuery& a) : bias(asym_bias(a.n_bits)) {
      if constexpr (kEnabled)
        for (int p = 0; p < kAsymPlanes; ++p)
          planes.v[p] = load_code<W>((const uint8_t*)a.planes[p]);
    }
    HP_INLINE V dist(const uint8_t* c) const {
      alignas(32) int32_t d[8];
      for (int r = 0; r < 8; ++r)
        d[r] = bias + static_cast<int32_t>(
                          _mm512_reduce_add_epi64(planes.lanes(load_code<W>(c + r * 8 * W))));
      return _mm256_load_si256((const __m256i*)d);
    }
  };

  // Centre scores: 4 sums in flight, of 4 queries or of one query's 4 blocks.
  static constexpr int kCentreQueries = 4, kCentreBlocksAlone = 4;
  template <int M, int B>
  static HP_INLINE void centre_tile(const uint8_t* blk, int64_t block_bytes, int groups,
                                    const int8_t* const* q, int32_t* out);

  // Fast scan as Avx2::block16, four byte positions a register (nbytes is a multiple of 8:
  // codes are whole words): half the lookups, adds and loads a block.
  static HP_INLINE void block16(const NibbleLuts& t, const uint8_t* blk, V* d0, V* d1) {
    const __m512i low = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
    __m512i acc_a = zero, acc_b = zero;  // 16-bit sums of codes 0..7 (a) and 8..15 (b), per lane
    for (int m = 0; m < t.nbytes; m += 8) {
      const __m512i x = _mm512_loadu_si512(blk + m * kScanBlock);
      const __m512i y = _mm512_loadu_si512(blk + (m + 4) * kScanBlock);
      const __m512i sx = _mm512_add_epi8(
          _mm512_shuffle_epi8(_mm512_load_si512(t.hi[m]),
                              _mm512_and_si512(_mm512_srli_epi16(x, 4), low)),
          _mm512_shuffle_epi8(_mm512_load_si512(t.lo[m]), _mm512_and_si512(x, low)));
      const __m512i sy = _mm512_add_epi8(
          _mm512_shuffle_epi8(_mm512_load_si512(t.hi[m + 4]),
                              _mm512_and_si512(_mm512_srli_epi16(y, 4), low)),
          _mm512_shuffle_epi8(_mm512_load_si512(t.lo[m + 4]), _mm512_and_si512(y, low)));
      const __m512i s = _mm512_add_epi8(sx, sy);
      acc_a = _mm512_add_epi16(acc_a, _mm512_unpacklo_epi8(s, zero));
      acc_b = _mm512_add_epi16(acc_b, _mm512_unpackhi_epi8(s, zero));
    }
    const __m256i off = _mm256_set1_epi32(t.offset);
    *d0 = _mm256_add_epi32(_mm256_cvtepu16_epi32(fold_lanes(acc_a)), off);
    *d1 = _mm256_add_epi32(_mm256_cvtepu16_epi32(fold_lanes(acc_b)), off);
  }
  // The four 128-bit lanes' 16-bit sums added.
  static HP_INLINE __m128i fold_lanes(__m512i v) {
    const __m256i h = _mm256_add_epi16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    return _mm_add_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  }
};

// Lane sums folded by permutes: pairs() adds neighbouring lanes of two registers (the W = 2
// kernels' 8 codes), codes() does it twice (W = 4: two codes a register). An 8-lane reduction
// a code, as the generic W = 3..8 path does, cost 3x.
struct LaneFold {
  alignas(64) __m512i even;
  alignas(64) __m512i odd;
  HP_INLINE LaneFold()  // a written constructor: an implicit one is compiled without the ISA
      : even(_mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14)),
        odd(_mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15)) {}
  HP_INLINE __m512i pairs(__m512i a, __m512i b) const {  // lane i: a|b lanes 2i + 2i+1
    return _mm512_add_epi64(_mm512_permutex2var_epi64(a, even, b),
                            _mm512_permutex2var_epi64(a, odd, b));
  }
  HP_INLINE __m512i codes(__m512i s0, __m512i s1, __m512i s2, __m512i s3) const {
    return pairs(pairs(s0, s1), pairs(s2, s3));  // lane r: the 4 words of code r summed
  }
};

// A code of W = 2 or 4 words repeated to fill a register (4 or 2 copies): lanes 2i, 2i + 1 (W = 2)
// or 4i .. 4i + 3 (W = 4) then line up with the words of the codes loaded beside them.
template <int W>
HP_INLINE __m512i repeat_code(const void* p) {
  static_assert(W == 2 || W == 4, "a code of 2 or 4 words");
  if constexpr (W == 2)
    return _mm512_broadcast_i32x4(_mm_loadu_si128(static_cast<const __m128i*>(p)));
  else
    return _mm512_broadcast_i64x4(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
}

// What the W = 2 and 4 asymmetric kernels share: the query's bit planes repeated, the bias, the
// fold of their lane sums.
template <int W>
struct RepeatedAsym {
  static constexpr bool kEnabled = true;
  Avx512::AsymPlanes planes;
  alignas(64) __m512i biasv;
  LaneFold fold;
  HP_INLINE explicit RepeatedAsym(const AsymQuery& a)
      : biasv(_mm512_set1_epi64(asym_bias(a.n_bits))) {
    for (int p = 0; p < kAsymPlanes; ++p) planes.v[p] = repeat_code<W>(a.planes[p]);
  }
};

// Centre scores (centres.h) for M queries x B blocks: one VNNI instruction multiplies a group's
// 64 bytes (16 centres x 4 levels, unsigned) by the query's 4 levels (signed, broadcast) and adds
// the 4 products into each centre's int32 lane. M x B independent sums hide its latency.
template <int M, int B>
HP_INLINE void Avx512::centre_tile(const uint8_t* blk, int64_t block_bytes, int groups,
                                   const int8_t* const* q, int32_t* out) {
  __m512i acc[M][B];
  for (int m = 0; m < M; ++m)
    for (int b = 0; b < B; ++b) acc[m][b] = _mm512_setzero_si512();
  for (int g = 0; g < groups; ++g) {
    __m512i c[B];
    for (int b = 0; b < B; ++b)
      c[b] = _mm512_loadu_si512(blk + b * block_bytes + g * kCentreBlock * kCentreGroup);
    for (int m = 0; m < M; ++m) {
      int32_t l;
      std::memcpy(&l, q[m] + g * kCentreGroup, sizeof(l));
      const __m512i qv = _mm512_set1_epi32(l);
      for (int b = 0; b < B; ++b) acc[m][b] = _mm512_dpbusd_epi32(acc[m][b], c[b], qv);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int b = 0; b < B; ++b) _mm512_storeu_si512(out + (m * B + b) * kCentreBlock, acc[m][b]);
}

// W = 1 and 2: 8 codes in one or two registers, lanes combined by permutes.
template <>
struct Avx512::Hamming8<1> {
  static constexpr bool kEnabled = true;
  alignas(64) __m512i qv;
  HP_INLINE explicit Hamming8(const uint8_t* q) : qv(_mm512_set1_epi64((long long)load_u64(q))) {}
  HP_INLINE V dist(const uint8_t* c) const {
    return _mm512_cvtepi64_epi32(_mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c), qv)));
  }
};

template <>
struct Avx512::Hamming8<2> {
  static constexpr bool kEnabled = true;
  alignas(64) __m512i qv;
  LaneFold fold;
  HP_INLINE explicit Hamming8(const uint8_t* q) : qv(repeat_code<2>(q)) {}
  HP_INLINE V dist(const uint8_t* c) const {
    const __m512i p0 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c), qv));
    const __m512i p1 = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c + 64), qv));
    return _mm512_cvtepi64_epi32(fold.pairs(p0, p1));
  }
};

template <>
struct Avx512::Asym8<1> {
  static constexpr bool kEnabled = true;
  AsymPlanes planes;
  alignas(64) __m512i biasv;
  HP_INLINE explicit Asym8(const AsymQuery& a) : biasv(_mm512_set1_epi64(asym_bias(a.n_bits))) {
    for (int p = 0; p < kAsymPlanes; ++p)
      planes.v[p] = _mm512_set1_epi64((long long)a.planes[p][0]);
  }
  HP_INLINE V dist(const uint8_t* c) const {
    return _mm512_cvtepi64_epi32(_mm512_add_epi64(planes.lanes(_mm512_loadu_si512(c)), biasv));
  }
};

template <>
struct Avx512::Asym8<2> : RepeatedAsym<2> {
  HP_INLINE explicit Asym8(const AsymQuery& a) : RepeatedAsym<2>(a) {}
  HP_INLINE V dist(const uint8_t* c) const {
    const __m512i s0 = planes.lanes(_mm512_loadu_si512(c));
    const __m512i s1 = planes.lanes(_mm512_loadu_si512(c + 64));
    return _mm512_cvtepi64_epi32(_mm512_add_epi64(fold.pairs(s0, s1), biasv));
  }
};

template <>
struct Avx512::Hamming8<4> {
  static constexpr bool kEnabled = true;
  alignas(64) __m512i qv;
  LaneFold fold;
  HP_INLINE explicit Hamming8(const uint8_t* q) : qv(repeat_code<4>(q)) {}
  HP_INLINE __m512i pop(const uint8_t* c) const {
    return _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(c), qv));
  }
  HP_INLINE V dist(const uint8_t* c) const {
    return _mm512_cvtepi64_epi32(fold.codes(pop(c), pop(c + 64), pop(c + 128), pop(c + 192)));
  }
};

template <>
struct Avx512::Asym8<4> : RepeatedAsym<4> {
  HP_INLINE explicit Asym8(const AsymQuery& a) : RepeatedAsym<4>(a) {}
  HP_INLINE __m512i lanes(const uint8_t* c) const { return planes.lanes(_mm512_loadu_si512(c)); }
  HP_INLINE V dist(const uint8_t* c) const {
    const __m512i s = fold.codes(lanes(c), lanes(c + 64), lanes(c + 128), lanes(c + 192));
    return _mm512_cvtepi64_epi32(_mm512_add_epi64(s, biasv));
  }
};

}  // namespace
}  // namespace hashpivot
