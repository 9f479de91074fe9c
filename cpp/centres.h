// IVF centre scores <q, c> (the probe's order, and each row's base score) from int8 levels: each
// centre and the query rounded to 127 levels of their largest entry, so that every sum is exact
// in int32 (any order: every ISA gets the same bits). A single query's list choice reads every
// centre, so their bytes bound its latency: a quarter of float32's. At 384 dimensions a score is
// off by about 4e-4 |q| |c|, far below the residual code's error, which the rerank removes.
//
// Layout: blocks of kCentreBlock centres, each block dimension groups of kCentreGroup bytes per
// centre (block, group, centre, byte), stored as level + 128 (unsigned): one 64-byte row is
// 16 centres x 4 dimensions, what one AVX-512 VNNI instruction (u8 x s8, 4 products summed into
// each of 16 int32 lanes) multiplies by the query's 4 levels of that group, broadcast. The
// offset comes back out as 128 * (the sum of the query's levels).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "codes.h"

namespace hashpivot {

constexpr int kCentreLevels = 127;  // int8 levels
constexpr int kCentreOffset = 128;  // stored level + 128: the unsigned operand of u8 x s8
constexpr int kCentreBlock = 16;    // centres a block (one 512-bit row of int32 sums)
constexpr int kCentreGroup = 4;     // dimensions a group (the products an int32 lane sums)
// Every sum fits int32 up to kMaxDim: 255 * 127 * 65536 < 2^31.
static_assert(int64_t{255} * kCentreLevels * kMaxDim < (int64_t{1} << 31), "int32 centre sums");

inline int centre_groups(int dim) { return (dim + kCentreGroup - 1) / kCentreGroup; }
inline int64_t centre_blocks(int64_t C) { return (C + kCentreBlock - 1) / kCentreBlock; }
// Bytes of one block: groups x 16 centres x 4 levels.
inline int64_t centre_block_bytes(int dim) {
  return int64_t{centre_groups(dim)} * kCentreBlock * kCentreGroup;
}

// v (dim floats) to levels: out[d] = rint(v[d] / max|v| * 127); returns the step, max|v| / 127
// (0 for a zero vector), so that v ~ step * out.
inline float quantize_levels(const float* v, int dim, int8_t* out) {
  float big = 0;
  for (int d = 0; d < dim; ++d) big = std::max(big, std::fabs(v[d]));
  if (!(big > 0) || !std::isfinite(big)) {
    for (int d = 0; d < dim; ++d) out[d] = 0;
    return 0.0f;
  }
  const float scale = static_cast<float>(kCentreLevels) / big;
  const float top = static_cast<float>(kCentreLevels);
  for (int d = 0; d < dim; ++d)
    out[d] = static_cast<int8_t>(std::clamp(std::rint(v[d] * scale), -top, top));
  return big / static_cast<float>(kCentreLevels);
}

// C centres of dim floats to the blocked layout (centre_blocks(C) * centre_block_bytes(dim)
// bytes; padding is level 0) and their steps (C floats).
inline void block_centres(const float* centres, int64_t C, int dim, uint8_t* blocks, float* steps) {
  const int64_t block_bytes = centre_block_bytes(dim);
  std::fill(blocks, blocks + centre_blocks(C) * block_bytes, static_cast<uint8_t>(kCentreOffset));
  std::vector<int8_t> levels(dim);
  for (int64_t g = 0; g < C; ++g) {
    steps[g] = quantize_levels(centres + g * dim, dim, levels.data());
    uint8_t* b = blocks + g / kCentreBlock * block_bytes + g % kCentreBlock * kCentreGroup;
    for (int d = 0; d < dim; ++d)
      b[int64_t{d / kCentreGroup} * kCentreBlock * kCentreGroup + d % kCentreGroup] =
          static_cast<uint8_t>(levels[d] + kCentreOffset);
  }
}

// The query's side: its levels padded with zeros to whole groups; its step and level sum.
struct CentreQuery {
  std::vector<int8_t> levels;
  float step = 0;
  int32_t sum = 0;
  void set(const float* v, int dim) {
    levels.assign(static_cast<size_t>(centre_groups(dim)) * kCentreGroup, 0);
    step = quantize_levels(v, dim, levels.data());
    sum = 0;
    for (int d = 0; d < dim; ++d) sum += levels[d];
  }
};

// One block's 16 sums of (stored level) x (query level), one at a time: what every ISA's
// centre_tile computes (the Scalar ISAs' kernel, and tests/cpp's reference).
inline void centre_dots_scalar(const uint8_t* block, int groups, const int8_t* q, int32_t* out) {
  for (int c = 0; c < kCentreBlock; ++c) {
    int32_t s = 0;
    for (int g = 0; g < groups; ++g)
      for (int j = 0; j < kCentreGroup; ++j)
        s += static_cast<int32_t>(block[(g * kCentreBlock + c) * kCentreGroup + j]) *
             q[g * kCentreGroup + j];
    out[c] = s;
  }
}

}  // namespace hashpivot
