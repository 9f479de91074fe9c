// Scalar arithmetic for CPUs without AVX2: one code at a time, the popcount either the POPCNT
// instruction (Popcnt) or a portable bit-twiddling count (Portable, for x86-64 CPUs without
// POPCNT). Included inside each level's target region (isa/portable.cpp, isa/popcnt.cpp), in an
// anonymous namespace.
#pragma once
#include "../asymmetric.h"
#include "../centres.h"
#include "../codes.h"
#include "../cpu.h"
#include "../half.h"

namespace hashpivot {
namespace {

template <Isa I, class P>
struct Scalar {
  static constexpr Isa kIsa = I;
  using Pop = P;
  using V = int;                         // no vectors: the engine takes the one-code-at-a-time path
  static constexpr int kFloatLanes = 4;  // SSE2, the x86-64 baseline
  static constexpr int kProjectRows = 2;
  static constexpr int kProjectVecs = 4;
  static constexpr bool kMaskedPlanes = false;  // the re-estimate reads byte tables (stages.h)

  template <int W>
  struct Hamming8 {
    static constexpr bool kEnabled = false;
    HP_INLINE explicit Hamming8(const uint8_t*) {}
  };
  template <int W>
  struct Asym8 {
    static constexpr bool kEnabled = false;
    HP_INLINE explicit Asym8(const AsymQuery&) {}
  };

  static HP_INLINE void half8(const uint16_t* h, float* out) {
    for (int j = 0; j < 8; ++j) out[j] = half_to_float(h[j]);
  }
  static constexpr bool kBand8x4 = false;
  static constexpr bool kFastScan = false;  // blocked ivf codes: nibble lookups, a row at a time

  // Centre scores (centres.h): one query and one block at a time.
  static constexpr int kCentreQueries = 1, kCentreBlocksAlone = 1;
  template <int M, int B>
  static HP_INLINE void centre_tile(const uint8_t* blk, int64_t block_bytes, int groups,
                                    const int8_t* const* q, int32_t* out) {
    for (int m = 0; m < M; ++m)
      for (int b = 0; b < B; ++b)
        centre_dots_scalar(blk + b * block_bytes, groups, q[m], out + (m * B + b) * kCentreBlock);
  }
};

using Portable = Scalar<Isa::kPortable, PopcountSwar>;
using Popcnt = Scalar<Isa::kPopcnt, PopcountHw>;

}  // namespace
}  // namespace hashpivot
