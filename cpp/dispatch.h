// The engine's entry points, compiled once per instruction set (isa/*.cpp); a call picks the
// table of the ISA in use once, at its entry, and everything below runs that ISA's code.
#pragma once
#include <cstdint>
#include <vector>

#include "cpu.h"
#include "snapshot.h"
#include "topk.h"

namespace hashpivot {

struct EngineOps {
  Isa isa;
  void (*search)(const SnapshotView&, const Plan&, const Queries&, const RowFilter&, Results&);
  std::vector<std::vector<Scored<int32_t>>> (*range_search)(const uint8_t* queries, int64_t nq,
                                                            const CodeView& codes, int radius,
                                                            int threads);
  void (*distances)(const uint8_t* queries, int64_t nq, const CodeView& codes, int threads,
                    int32_t* out);
  std::vector<int64_t> (*band_filter_rows)(const PivotTable& pivots, int64_t n, const int32_t* lo,
                                           const int32_t* hi, int64_t begin, int64_t end,
                                           int threads);
  void (*encode)(const Transform& t, const float* x, int64_t n, float* z, uint8_t* codes,
                 int threads);
  void (*asym_rescore)(const float* z, int64_t nq, const CodeView& codes, const int64_t* cand,
                       int64_t M, int k, int threads, float* S, int64_t* R);
};

extern const EngineOps kPortableOps, kPopcntOps, kAvx2Ops, kAvx512Ops;

const EngineOps& engine();  // the table in use
void set_isa(Isa isa);      // for tests and benchmarks; throws if the CPU lacks it

// The entry points of one ISA's engine (used inside that ISA's translation unit).
#define HP_ENGINE_OPS(A)                                                                    \
  EngineOps {                                                                               \
    A::kIsa, &search<A>, &range_search<A>, &distances<A>, &band_filter_rows<A>, &encode<A>, \
        &asym_rescore<A>                                                                    \
  }

}  // namespace hashpivot
