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
  HP_INLINE float score(const uint8_t* code) const {
    float s = 0;
    for (int m = 0; m < nbytes; ++m) s += t[m * 256 + code[m]];
    return s;
  }
};

}  // namespace hashpivot
