// IVF centre scores <q, c> (the probe's order, and each row's base score) from integer levels:
// each centre rounded to int8 levels, the query to int16 levels small enough that every sum is
// exact in int32 (any order, so the compiler may vectorise it and every ISA gets the same bits).
// A single query's list choice reads every centre, so their bytes bound its latency: a quarter
// of float32's. At 384 dimensions a score is off by about 3e-4 |q| (the centre's rounding; the
// query's is 250 times finer), far below the residual code's error, which the rerank removes.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "codes.h"

namespace hashpivot {

constexpr int kCentreLevels = 127;      // int8 centres
constexpr int kQueryLevelsMax = 32767;  // int16 queries

// The largest query level L with L * kCentreLevels * dim < 2^31 (no int32 sum can overflow).
inline int query_levels(int dim) {
  const double bound = 2147483647.0 / (static_cast<double>(kCentreLevels) * std::max(dim, 1));
  return std::max(1, std::min(kQueryLevelsMax, static_cast<int>(bound)));
}

// v (dim floats) to levels: out[d] = rint(v[d] / max|v| * levels); returns the step, max|v| /
// levels (0 for a zero vector), so that v ~ step * out.
template <class T>
inline float quantize_levels(const float* v, int dim, int levels, T* out) {
  float big = 0;
  for (int d = 0; d < dim; ++d) big = std::max(big, std::fabs(v[d]));
  if (!(big > 0) || !std::isfinite(big)) {
    std::fill(out, out + dim, T{0});
    return 0.0f;
  }
  const float scale = static_cast<float>(levels) / big;
  for (int d = 0; d < dim; ++d) {
    const float l = std::rint(v[d] * scale);
    out[d] = static_cast<T>(std::clamp(l, -static_cast<float>(levels), static_cast<float>(levels)));
  }
  return big / static_cast<float>(levels);
}

// Exact integer dot product of query levels and a centre's (within query_levels(dim) and
// kCentreLevels).
HP_INLINE int32_t dot_levels(const int16_t* q, const int8_t* c, int dim) {
  int32_t s = 0;
  for (int d = 0; d < dim; ++d) s += static_cast<int32_t>(q[d]) * static_cast<int32_t>(c[d]);
  return s;
}

// Four queries' dot products with one centre c in one pass (each load of c serves four
// multiply-adds; one at a time, a query's dot was a chain of dependent adds).
HP_INLINE void dot_levels4(const int16_t* q, int dim, const int8_t* c, int32_t* out) {
  const int16_t *q0 = q, *q1 = q + dim, *q2 = q + 2 * dim, *q3 = q + 3 * dim;
  int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (int d = 0; d < dim; ++d) {
    const int32_t v = c[d];
    s0 += static_cast<int32_t>(q0[d]) * v;
    s1 += static_cast<int32_t>(q1[d]) * v;
    s2 += static_cast<int32_t>(q2[d]) * v;
    s3 += static_cast<int32_t>(q3[d]) * v;
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

}  // namespace hashpivot
