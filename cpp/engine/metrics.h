// What the first stage ranks rows by (a metric gives a key, smaller is better) and which rows it
// may take (a filter before the key, a pivot band after it). Generic over the ISA's arithmetic
// A (isa/*.h); compiled once per ISA inside that ISA's target region, in an anonymous namespace.
#pragma once
#include "prelude.h"

namespace hashpivot {
namespace {

// Integer keys of 8 rows in the ISA's vector: a bit per key below thr, and writing them out.
template <class A>
struct Int32GroupKeys {
  template <class VK>
  static HP_INLINE uint32_t lt(VK d, int32_t thr) {
    return A::lt_mask(d, thr);
  }
  template <class VK>
  static HP_INLINE void store(VK d, int32_t* out) {
    A::store(d, out);
  }
};

// Hamming distance to the query code.
template <class A, int W>
struct HammingMetric : Int32GroupKeys<A> {
  using Key = int32_t;
  static constexpr bool kIsHamming = true, kIsList = false;
  using G = typename A::template Hamming8<W>;
  static constexpr bool kGroup = G::kEnabled;
  QueryWords<W> qw;
  G g;
  HP_INLINE HammingMetric(const uint8_t* q, int nbytes) : qw(q, nbytes / 8), g(q) {}
  HP_INLINE Key one(const uint8_t* c, int64_t) const { return hamming<typename A::Pop, W>(qw, c); }
  // keys of 8 consecutive rows as a vector; lt: a bit per key < thr; store: write them out
  HP_INLINE auto group(const uint8_t* c, int64_t) const { return g.dist(c); }
};

// The quantized asymmetric distance (asymmetric.h).
template <class A, int W>
struct AsymMetric : Int32GroupKeys<A> {
  using Key = int32_t;
  static constexpr bool kIsHamming = false, kIsList = false;
  using G = typename A::template Asym8<W>;
  static constexpr bool kGroup = G::kEnabled;
  const AsymQuery* a;
  int words;
  int32_t bias;
  G g;
  HP_INLINE explicit AsymMetric(const AsymQuery& q)
      : a(&q), words(W > 0 ? W : q.words), bias(asym_bias(q.n_bits)), g(q) {}
  HP_INLINE Key one(const uint8_t* c, int64_t) const {
    using Pop = typename A::Pop;
    int32_t s = bias;
    for (int w = 0; w < words; ++w) {
      const uint64_t b = load_u64(c + 8 * w);
      s += 8 * Pop::count(b);
      for (int p = 0; p < kAsymPlanes; ++p) s -= Pop::count(b & a->planes[p][w]) << p;
    }
    return s;
  }
  HP_INLINE auto group(const uint8_t* c, int64_t) const { return g.dist(c); }
};

// IVF rows: key = -(<q, c> + bias + factor * <z, 2b - 1>), with <z, 2b - 1> from the quantized
// distance d as step * (22 n - sum_v - 2 d): key = (c0 - bias) + factor * (c1 + c2 * d),
// c0 = -<q, c> per list.
template <class A, int W>
struct ListMetric {
  using Key = float;
  static constexpr bool kIsHamming = false, kIsList = true;
  static constexpr bool kGroup = AsymMetric<A, W>::kGroup;
  AsymMetric<A, W> asym;
  const float* factors;
  const float* biases;
  float c0 = 0, c1, c2;
  HP_INLINE ListMetric(const AsymQuery& q, const float* f, const float* b)
      : asym(q), factors(f), biases(b), c1(-asym_score_offset(q)), c2(2 * q.step) {}
  HP_INLINE void set_list(float centre_score) { c0 = -centre_score; }
  HP_INLINE Key one(const uint8_t* c, int64_t row) const {
    const int32_t d = blocked ? nibble_distance(*luts, block_of(row), row % kScanBlock)
                              : asym.one(c, row);  // the same integer either way
    return (c0 - biases[row]) + factors[row] * (c1 + c2 * static_cast<float>(d));
  }
  HP_INLINE auto group(const uint8_t* c, int64_t row) const {
    return A::affine(asym.g.dist(c), factors + row, biases + row, c0, c1, c2);
  }
  // With the snapshot's blocked codes and the query's nibble tables (fast scan): the keys of
  // the block starting at row g0 into out, a bit per key below thr.
  const uint8_t* blocked = nullptr;
  const NibbleLuts* luts = nullptr;
  int64_t rows = 0;  // the per-row arrays end here; the last block's may not be read past it
  HP_INLINE const uint8_t* block_of(int64_t row) const {
    return blocked + row / kScanBlock * kScanBlock * luts->nbytes;
  }
  HP_INLINE uint32_t block_keys(int64_t g0, Key thr, Key* out) const {
    if constexpr (A::kFastScan) {
      typename A::V d0, d1;
      A::block16(*luts, blocked + g0 * luts->nbytes, &d0, &d1);
      const float *f = factors + g0, *b = biases + g0;
      alignas(32) float fl[kScanBlock], bl[kScanBlock];
      if (g0 + kScanBlock > rows) {
        for (int j = 0; j < kScanBlock; ++j) {
          fl[j] = g0 + j < rows ? f[j] : 0.0f;
          bl[j] = g0 + j < rows ? b[j] : 0.0f;
        }
        f = fl;
        b = bl;
      }
      const auto k0 = A::affine(d0, f, b, c0, c1, c2), k1 = A::affine(d1, f + 8, b + 8, c0, c1, c2);
      A::store_ps(k0, out);
      A::store_ps(k1, out + 8);
      return A::lt_mask_ps(k0, thr) | A::lt_mask_ps(k1, thr) << 8;
    } else {
      uint32_t mask = 0;
      for (int j = 0; j < kScanBlock && g0 + j < rows; ++j) {
        out[j] = one(nullptr, g0 + j);
        mask |= static_cast<uint32_t>(out[j] < thr) << j;
      }
      return mask;
    }
  }
  template <class VK>
  static HP_INLINE uint32_t lt(VK k, Key thr) {
    return A::lt_mask_ps(k, thr);
  }
  template <class VK>
  static HP_INLINE void store(VK k, Key* out) {
    A::store_ps(k, out);
  }
};

// The width a metric is compiled for: W where the ISA has a group kernel for that width, else
// the width-generic 0 (a compile-time width alone would only unroll a loop of words).
template <class A, int W>
constexpr int kHammingWidth = A::template Hamming8<W>::kEnabled ? W : 0;
template <class A, int W>  // and 64-bit codes: one word, where the generic loop is all overhead
constexpr int kAsymWidth = (A::template Asym8<W>::kEnabled || W == 1) ? W : 0;
template <class A, int W>
using HammingOf = HammingMetric<A, kHammingWidth<A, W>>;

// ---- which rows may enter ----
struct NoFilter {
  static constexpr bool kActive = false;
  HP_INLINE uint32_t pre8(int64_t) const { return 0xFF; }
  HP_INLINE bool allows(int64_t) const { return true; }
};

// A bitmap over rows, checked for 8 rows at once before their keys are computed.
struct AllowedBits {
  static constexpr bool kActive = true;
  const uint64_t* w;
  HP_INLINE uint32_t pre8(int64_t row) const {  // bit j: row + j allowed
    if ((row & 7) == 0)  // a whole byte of the little-endian bitmap (a scan from an aligned row)
      return reinterpret_cast<const uint8_t*>(w)[row >> 3];
    const int64_t word = row >> 6;
    const int off = static_cast<int>(row & 63);
    uint64_t bits = w[word] >> off;
    if (off > 56) bits |= w[word + 1] << (64 - off);  // the bitmap has a spare word
    return static_cast<uint32_t>(bits & 0xFF);
  }
  HP_INLINE bool allows(int64_t row) const { return (w[row >> 6] >> (row & 63)) & 1; }
};

// The filter of a search, or none (w null): one type for both, so that the first stage is
// not instantiated twice; scan.h picks the loop without the null test once per call.
struct BitFilter {
  static constexpr bool kActive = true;
  const uint64_t* w = nullptr;
  HP_INLINE uint32_t pre8(int64_t row) const { return w ? AllowedBits{w}.pre8(row) : 0xFF; }
  HP_INLINE bool allows(int64_t row) const { return !w || AllowedBits{w}.allows(row); }
};

struct NoBand {
  static constexpr bool kActive = false;
  HP_INLINE bool pass(int64_t) const { return true; }
};

// |d(q, p_i) - d(x, p_i)| <= t for every pivot, checked only for rows whose key beats the
// threshold (measured: a check per row costs as much as the SIMD distance it would save).
template <class T>
struct BandCheck {
  static constexpr bool kActive = true;
  const T* table;
  int P;
  const int32_t* lo;
  const int32_t* hi;
  HP_INLINE bool pass(int64_t row) const {
    const T* r = table + row * P;
    bool ok = true;
    for (int p = 0; p < P; ++p) ok &= (r[p] >= lo[p]) & (r[p] <= hi[p]);
    return ok;
  }
};

// The pivot band of a search, or none (table null): checked at run time, and only for rows whose
// key beat the threshold, so it costs nothing to the rows it does not see.
struct PivotBand {
  static constexpr bool kActive = true;
  const void* table = nullptr;
  bool wide = false;  // uint16 distances (n_bits > 255), else uint8
  int P = 0;
  const int32_t* lo = nullptr;
  const int32_t* hi = nullptr;
  HP_INLINE bool pass(int64_t row) const {
    if (!table) return true;
    return wide ? BandCheck<uint16_t>{static_cast<const uint16_t*>(table), P, lo, hi}.pass(row)
                : BandCheck<uint8_t>{static_cast<const uint8_t*>(table), P, lo, hi}.pass(row);
  }
};

// Calls on_pass(row) for each row of [begin, end) inside the band, in row order.
template <class A, class T, class F>
HP_INLINE void band_rows(const BandCheck<T>& band, int64_t begin, int64_t end, F&& on_pass) {
  int64_t i = begin;
  if constexpr (A::kBand8x4 && sizeof(T) == 1) {
    if (band.P == 8) {
      const typename A::Band8x4 b8(band.lo, band.hi);
      for (; i + 4 <= end; i += 4) {
        unsigned m = b8.pass(reinterpret_cast<const uint8_t*>(band.table) + i * 8);
        while (m) {
          on_pass(i + __builtin_ctz(m));
          m &= m - 1;
        }
      }
    }
  }
  for (; i < end; ++i)
    if (band.pass(i)) on_pass(i);
}

}  // namespace
}  // namespace hashpivot
