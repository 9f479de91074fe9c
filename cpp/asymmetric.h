// Asymmetric scoring: the query stays a float projection z (n_bits values) and a code scores
// <z, 2b - 1>, its +-1 bits weighted by the query. Two forms:
// * for a scan, z is quantized to 16 levels, v_j = round(z_j / step) + 8, kept as four bit
//   planes shaped like a code, so a code costs 5 popcounts a word (isa/*.h);
// * for re-scoring a candidate list, exact float tables: one 256-entry table per code byte.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "codes.h"

namespace hashpivot {

constexpr int kAsymPlanes = 4;          // 16 levels
constexpr float kAsymHalfRange = 7.5f;  // |z| max maps to level 15.5 - 8
constexpr int kAsymCentre = 8;          // v_j = round(z_j / step) + 8 in [0, 15]

struct AsymQuery {
  uint64_t planes[kAsymPlanes][kMaxWords];  // plane p, bit j = bit p of v_j, in the codes' order
  int words;
  int n_bits;
  float step;     // z_j ~ step * (v_j - 8)
  int32_t sum_v;  // sum of v_j
};

// Levels first (a loop the compiler vectorises: rint, not a libm lround call a value), then
// the planes without branches: this ran once a query and was a tenth of a short ivf query.
inline AsymQuery make_asym_query(const float* z, int n_bits) {
  AsymQuery a{};
  a.words = n_bits / 64;
  a.n_bits = n_bits;
  float zmax = 0;
  for (int j = 0; j < n_bits; ++j) zmax = std::max(zmax, std::fabs(z[j]));
  a.step = zmax > 0 ? zmax / kAsymHalfRange : 1.0f;
  int32_t v[kMaxWords * 64];
  for (int j = 0; j < n_bits; ++j)  // rint: ties to even, the same on every ISA
    v[j] = std::clamp(static_cast<int32_t>(std::rint(z[j] / a.step)) + kAsymCentre, 0, 15);
  for (int j = 0; j < n_bits; ++j) {
    a.sum_v += v[j];
    for (int p = 0; p < kAsymPlanes; ++p)
      a.planes[p][j / 64] |= static_cast<uint64_t>((v[j] >> p) & 1) << word_bit(j);
  }
  return a;
}

// The quantized distance of a code b (bits b_j in {0, 1}), smaller = better:
//   dist = 7 n + 8 popcount(b) - sum_j v_j b_j, in [0, 15 n],
// and <z, 2b - 1> ~ step * (22 n - sum_v - 2 dist). The bias 7 n keeps it non-negative.
inline int32_t asym_bias(int n_bits) { return 7 * n_bits; }
inline int32_t asym_max_distance(int n_bits) { return 15 * n_bits; }
inline float asym_score_offset(const AsymQuery& a) {  // step * (22 n - sum_v)
  return a.step * static_cast<float>(22 * a.n_bits - a.sum_v);
}

// The 16 scores of a nibble whose bit i weighs w[3 - i]: s[v] = sum_i (bit i of v ? +1 : -1) w.
inline void nibble_scores(const float* w, float* s) {
  s[0] = -(w[0] + w[1] + w[2] + w[3]);
  for (int v = 1; v < 16; ++v) s[v] = s[v & (v - 1)] + 2 * w[3 - __builtin_ctz(v)];
}

// ---- fast scan: ivf codes in blocks of rows, byte-major, scored by nibble lookups ----
// Block g holds rows kScanBlock g .. + kScanBlock - 1 as byte 0 of each row, then byte 1, ...:
// one 16-byte lane is one byte position of 16 codes, so a table lookup (pshufb) with that
// position's nibble table scores 16 codes at once (faiss' fast-scan, ScaNN's LUT16).
constexpr int kScanBlock = 16;
// A nibble's table entry is the sum over its set bits of (8 - v_j), in [-28, 32]; stored lifted
// by 28 so that it is unsigned (0..60) and four entries still add up within a byte.
constexpr int kNibbleLift = 28;

// The same integer as the bit-plane kernels: dist = 7 n + sum_j (8 - v_j) b_j
//   = offset + sum over bytes m of hi[m][high nibble] + lo[m][low nibble].
struct NibbleLuts {
  alignas(64) uint8_t hi[kMaxWords * 8][16];  // byte m's high nibble: code bits 8m .. 8m + 3
  alignas(64) uint8_t lo[kMaxWords * 8][16];  // its low nibble: code bits 8m + 4 .. 8m + 7
  int nbytes = 0;
  int32_t offset = 0;
};

inline void make_nibble_luts(const AsymQuery& a, NibbleLuts* t) {
  t->nbytes = a.n_bits / 8;
  t->offset = asym_bias(a.n_bits) - kNibbleLift * 2 * t->nbytes;
  int32_t w[kMaxWords * 64];  // 8 - v_j, in code order
  for (int j = 0; j < a.n_bits; ++j) {
    int32_t v = 0;
    for (int p = 0; p < kAsymPlanes; ++p)
      v |= static_cast<int32_t>((a.planes[p][j / 64] >> word_bit(j)) & 1) << p;
    w[j] = kAsymCentre - v;
  }
  for (int m = 0; m < t->nbytes; ++m) {  // nibble bit i is byte bit i (low) or 4 + i (high)
    int32_t h[16], l[16];
    h[0] = l[0] = kNibbleLift;
    for (int x = 1; x < 16; ++x) {  // x less its lowest set bit i, plus bit i's weight
      const int i = __builtin_ctz(static_cast<unsigned>(x));
      h[x] = h[x & (x - 1)] + w[8 * m + 3 - i];
      l[x] = l[x & (x - 1)] + w[8 * m + 7 - i];
    }
    for (int x = 0; x < 16; ++x) {
      t->hi[m][x] = static_cast<uint8_t>(h[x]);
      t->lo[m][x] = static_cast<uint8_t>(l[x]);
    }
  }
}

// Row r (0 .. kScanBlock - 1) of a block, one lookup pair a byte: the reference the ISA
// kernels must equal (tests/cpp), and the path where a CPU has none.
inline int32_t nibble_distance(const NibbleLuts& t, const uint8_t* block, int r) {
  int32_t s = t.offset;
  for (int m = 0; m < t.nbytes; ++m) {
    const uint8_t b = block[m * kScanBlock + r];
    s += t.hi[m][b >> 4] + t.lo[m][b & 15];
  }
  return s;
}

// Codes (n, nbytes) to blocks (ceil(n / kScanBlock) * kScanBlock rows, zero past n).
inline void block_codes(const uint8_t* codes, int64_t n, int nbytes, uint8_t* out) {
  for (int64_t r = 0; r < n; ++r)
    for (int m = 0; m < nbytes; ++m)
      out[((r / kScanBlock) * nbytes + m) * kScanBlock + r % kScanBlock] = codes[r * nbytes + m];
}

// Exact <z, 2b - 1> from one 256-entry table per code byte: table[m][v] is the score of byte
// value v at byte m (bit 7 of the byte is code bit 8 m). Built per query (it was a tenth of a
// short ivf query), so each byte's table is its high nibble's 16 scores plus its low nibble's:
// 256 independent adds the compiler vectorises, not a chain of 255 dependent ones.
struct AsymTables {
  std::vector<float> t;
  int nbytes = 0;
  void build(const float* z, int n_bits) {
    nbytes = n_bits / 8;
    t.resize(static_cast<size_t>(nbytes) * 256);
    for (int m = 0; m < nbytes; ++m) {
      float hi[16], lo[16];
      nibble_scores(z + 8 * m, hi);
      nibble_scores(z + 8 * m + 4, lo);
      float* tm = t.data() + m * 256;
      for (int h = 0; h < 16; ++h)
        for (int l = 0; l < 16; ++l) tm[h * 16 + l] = hi[h] + lo[l];
    }
  }
  // byte m of the code at code[m * stride] (stride kScanBlock: a row of a block)
  // four independent sums (a lookup a byte: one chain would wait on every add), then combined
  HP_INLINE float score(const uint8_t* code, int stride = 1) const {
    const float* tt = t.data();
    float s[4] = {0, 0, 0, 0};
    int m = 0;
    for (; m + 4 <= nbytes; m += 4)
      for (int u = 0; u < 4; ++u) s[u] += tt[(m + u) * 256 + code[(m + u) * stride]];
    for (; m < nbytes; ++m) s[0] += tt[m * 256 + code[m * stride]];
    return (s[0] + s[1]) + (s[2] + s[3]);
  }
};

}  // namespace hashpivot
